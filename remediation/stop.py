"""The emergency stop: one switch in the ledger's table that holds every action until it is cleared.

The switch is one row in the ``~markers`` partition (never a request: ``Ledger.list`` skips that
partition), so flipping it needs only the storage data role the CLI and the app already have, and no
redeploy (RESPONDER_DRY_RUN needs ``azd provision``). It records who flipped it, when and why.

While it is on, the rails turn every would-be execution into ``held`` with hold_reason
``emergency_stop`` (remediation/rails.py); approving a held request is refused (stop means stop). Held
requests stay held when it is cleared: a person approves them one by one (listed by
``ledger --hold-reason emergency_stop``), because the usual reason to pull the switch is a misfiring rule,
and re-queueing its requests on clear would replay the misfire.

Each worker reads the row at most once per ``ttl`` (10 s): a message costs at most one extra point
read, and a flip reaches every instance within ``ttl``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from remediation.ledger import MARKERS, Ledger

STOP_KEY = "emergency-stop"
HOLD_REASON = "emergency_stop"
CACHE_SECONDS = 10.0
MAX_TEXT = 500


@dataclass(frozen=True)
class StopState:
    on: bool = False
    by: str = ""
    at: str = ""
    reason: str = ""
    claimed_by: str = ""
    by_id: str = ""      # the signed-in person's object id (the page), else empty
    by_from: str = ""    # the client address the page saw (audit only), else empty

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("claimed_by", "by_id", "by_from"):
            if not out[key]:
                out.pop(key)
        return out

    def describe(self) -> str:
        """One line for cards and errors."""
        if not self.on:
            return "emergency stop is off"
        why = f": {self.reason}" if self.reason else ""
        return f"EMERGENCY STOP is on (set by {self.by or 'unknown'} at {self.at or '?'}{why})"


def read_stop(ledger: Ledger) -> StopState:
    """The switch as stored (one point read); no row means off."""
    try:
        row = ledger.table.get_entity(MARKERS, STOP_KEY)
    except ResourceNotFoundError:
        return StopState()
    return StopState(on=row.get("on") is True, by=str(row.get("by") or ""), at=str(row.get("at") or ""),
                     reason=str(row.get("reason") or ""), claimed_by=str(row.get("claimed_by") or ""),
                     by_id=str(row.get("by_id") or ""), by_from=str(row.get("by_from") or ""))


def set_stop(ledger: Ledger, on: bool, by: str, reason: str = "", *,
             claimed_by: str | None = None, by_id: str = "", by_from: str = "") -> StopState:
    """Turn the stop on or off (an upsert: the last writer wins, which is what a switch means).
    ``by_id`` / ``by_from``: the signed-in person's object id and address (the page), for the audit."""
    if not isinstance(on, bool):
        raise ValueError("on must be true or false")
    by = (by or "").strip()
    if not by:
        raise ValueError("by: who flips the switch must be named")
    reason = (reason or "").strip()
    if on and not reason:
        raise ValueError("reason: say why the stop is turned on (it is shown on every card)")
    if len(reason) > MAX_TEXT or len(by) > 200:
        raise ValueError(f"reason: at most {MAX_TEXT} characters; by: at most 200")
    state = StopState(on=on, by=by, at=ledger.iso_now(), reason=reason, claimed_by=(claimed_by or "").strip(),
                      by_id=(by_id or "").strip()[:100], by_from=(by_from or "").strip()[:100])
    ledger.table.upsert_entity({"PartitionKey": MARKERS, "RowKey": STOP_KEY, "key": STOP_KEY, "on": on,
                                "by": state.by, "at": state.at, "reason": state.reason,
                                "claimed_by": state.claimed_by, "by_id": state.by_id,
                                "by_from": state.by_from}, mode=UpdateMode.REPLACE)
    return state


class StopSwitch:
    """The switch as one worker instance sees it: read at most once per ``ttl`` seconds."""

    def __init__(self, ledger: Ledger, *, ttl: float = CACHE_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ledger, self.ttl, self.monotonic = ledger, ttl, monotonic
        self._state: StopState | None = None
        self._read_at = 0.0

    def current(self) -> StopState:
        now = self.monotonic()
        if self._state is None or now - self._read_at >= self.ttl:
            self._state = read_stop(self.ledger)
            self._read_at = now
        return self._state

    def fresh(self) -> StopState:
        """Read the row now (a person's decision should not act on a 10-second-old switch)."""
        self._state, self._read_at = read_stop(self.ledger), self.monotonic()
        return self._state

    def forget(self) -> None:
        """Read the row again next time (after this process flipped it)."""
        self._state = None
