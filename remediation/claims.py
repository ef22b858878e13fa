"""Claims and leases: how two deliveries of one request never both act on it.

Before acting, the worker takes an ETag-guarded *claim* on the request's ledger row (``Ledger.claim``,
with a lease). Every delivery has its own claim owner (a random id per delivery, never derived from
the message), and a claim is taken only when the row has none or its lease has expired: a live claim
is never taken over, not even by a redelivery of the same message. A delivery that finds a live claim
neither acts nor settles the row; it reports the request "being executed by another delivery"
(``extra["in_flight"]``) and, on the queue path, hands the message back so a later delivery finds the
request settled, or the claim expired if its holder died.

A claim lasts as long as the work: a delivery's time under a claim is bounded well inside the lease
(remediation/deadline.py), so a lease can only expire under a delivery that died or hung past it.
If the holder died between the action and the ledger write, the row keeps its write-ahead intent
(``intent_at``, remediation/intent.py); the delivery that takes the expired claim over passes the request
to the action as a prior attempt, and the action checks the service's state before acting again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from remediation.intent import describe
from remediation.ledger import IllegalTransition, Ledger, LedgerConflict, Record
from remediation.outcome import Outcome


@dataclass
class Claimed:
    """A validated request and its ledger row, claimed by us."""

    request: dict[str, Any]
    record: Record


def new_owner(kind: str = "dlv") -> str:
    """A claim owner for one delivery (queue message, batch, person's decision)."""
    return f"{kind}-{uuid.uuid4().hex}"


def claim(ledger: Ledger, rec: Record, owner: str, *, lease: timedelta) -> Record | None:
    """The row claimed by ``owner``, or None when a live claim is someone else's (or the row changed
    first). An expired claim is taken over; a live one never."""
    try:
        return ledger.claim(rec, lease=lease, owner=owner)
    except LedgerConflict:
        return None


def reopen(ledger: Ledger, rec: Record, req: dict[str, Any]) -> Record:
    """A dry-run row back to ``received`` for ``req``; whoever loses the race gets the fresh row."""
    try:
        return ledger.reopen(rec, req)
    except (LedgerConflict, IllegalTransition):
        return ledger.read(rec.rule, rec.request_id) or rec


def duplicate(rec: Record) -> Outcome:
    """The recorded outcome of a request that was already handled, marked as such."""
    outcome = rec.outcome()
    outcome.extra["duplicate"] = True
    return outcome


def in_flight(rec: Record) -> Outcome:
    """A request another delivery holds a live claim on: left alone, counted by the CLI."""
    outcome = rec.outcome()
    outcome.detail = "being executed by another delivery"
    outcome.extra["in_flight"] = True
    return outcome


def storage_failure(req: dict[str, Any], exc: BaseException, rec: Record | None = None) -> Outcome:
    """A request whose ledger read or write failed: what the ledger last said (or ``received``), marked."""
    if rec is not None:
        outcome = rec.outcome()
    else:
        outcome = Outcome(request_id=str(req.get("id", "")), rule=str(req.get("rule", "")),
                          action=str(req.get("action", "")), target=dict(req.get("target") or {}),
                          mode=str(req.get("mode", "")), state="received")
    outcome.detail = f"not recorded: storage error {describe(exc)}"
    outcome.extra["storage_error"] = describe(exc)
    return outcome
