"""The fake Graph and Exchange with random faults on every call, and a count of what it applied.

``ChaosFake`` is devtools.fakegraph.FakeGraph plus:

* ``chaos(rate, kinds, seed)``: each request is answered with a fault with probability ``rate``, the
  kind drawn from ``kinds`` (``FAULT_KINDS``). ``429``, ``500``, ``503``, ``timeout`` and ``reset`` are
  answered *before* the service does anything; their ``-after`` forms (``500-after`` ...) carry the
  request out first and then fail (the reply is lost or replaced by the error). A 429 is never processed
  by the service ("Throttled requests are not processed", https://learn.microsoft.com/graph/throttling),
  so it has no ``-after`` form. ``timeout`` holds the reply past the client's timeout; ``reset`` closes
  the connection with a TCP RST (SO_LINGER 0) instead of answering. ``chaos(0)`` turns faults off.
* ``applied``: every change the service made, counted per target (``applications()``), read from the
  route's own answer before any injected fault replaces it: so an action applied under a 503 or a reset
  still counts. This is the ground truth the judge compares the ledger with.
* ``email_events(emails)``: where Defender left each (NetworkMessageId, recipient): an accepted
  ``analyzedEmails/remediate`` moves the email to Junk (``on_remediate``), so verification
  (devtools/emailevents.py) sees what the service did.
"""

from __future__ import annotations

import random
import re
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from devtools.emailevents import location_rows
from devtools.fakegraph import FakeGraph, Fault, _Handler, _Reply, _Server

BEFORE = ("429", "500", "503", "timeout", "reset")
AFTER = ("500-after", "503-after", "timeout-after", "reset-after")
FAULT_KINDS = BEFORE + AFTER
_STATUS = {"429": 429, "500": 500, "503": 503, "timeout": 504, "reset": 500}


class _Reset(Exception):
    """Internal: close the connection with an RST instead of answering."""


@dataclass(frozen=True)
class Applied:
    kind: str       # move | remediate | disable_user | enable_user | revoke | confirm | connector
    target: str     # what it was applied to (see ``ChaosFake._record``)


class _ChaosHandler(_Handler):
    def _serve(self) -> None:
        try:
            super()._serve()
        except _Reset:
            # SO_LINGER with a zero timeout makes close() send an RST: the client sees ECONNRESET.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve


class ChaosFake(FakeGraph):
    def __init__(self, *, client_timeout: float = 2.0, **kw: Any) -> None:
        self.defender_junk: set[tuple[str, str]] = set()   # (NetworkMessageId, recipient lower case)
        kw.setdefault("on_remediate", self._remediated)
        super().__init__(**kw)
        self.client_timeout = client_timeout
        self._rate, self._kinds, self._rng = 0.0, FAULT_KINDS, random.Random(0)
        self._chosen = threading.local()
        self.applied: list[Applied] = []
        self.faults_by_kind: Counter[str] = Counter()

    def chaos(self, rate: float, kinds: tuple[str, ...] = FAULT_KINDS, seed: int = 0) -> None:
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; choose from {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._rate, self._kinds, self._rng = rate, tuple(kinds), random.Random(seed)

    def _remediated(self, _action: str, emails: list[dict[str, str]]) -> None:
        with self._lock:
            self.defender_junk |= {(e["networkMessageId"], e["recipientEmailAddress"].lower())
                                   for e in emails}

    def email_events(self, emails: list[tuple[str, str]], timestamp: datetime) -> list[dict[str, str]]:
        """EmailEvents rows for ``emails`` (NetworkMessageId, recipient) as Defender left them."""
        with self._lock:
            junk = {(n, r) for n, r in self.defender_junk}
        return location_rows([(n, r.lower()) for n, r in emails], junk, timestamp)

    def applications(self) -> Counter[Applied]:
        with self._lock:
            return Counter(self.applied)

    def start(self) -> ChaosFake:
        handler = type("_ChaosHandler", (_ChaosHandler,), {"fake": self})
        self._server = _Server((self._host, self._port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="chaosfake", daemon=True)
        self._thread.start()
        return self

    # --- faults -------------------------------------------------------------------------------------

    def _pick_fault(self, method: str, path: str, body: bytes = b"") -> tuple[Fault | None, float]:
        self._chosen.kind = None
        with self._lock:
            kind = self._rng.choice(self._kinds) if self._rate and self._rng.random() < self._rate else None
            if kind:
                self.faults_by_kind[kind] += 1
        if kind is None:
            return super()._pick_fault(method, path, body)
        self._chosen.kind = kind
        base = kind.removesuffix("-after")
        latency = self.client_timeout + 0.5 if base == "timeout" else 0.0
        fault = Fault(method, _ANY, _STATUS[base], None, retry_after=1.0 if base == "429" else None,
                      message=f"injected {kind}", latency=latency, applied=kind.endswith("-after"))
        return fault, latency

    def _handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Reply:
        reply = super()._handle(method, raw_path, headers, body)
        if (getattr(self._chosen, "kind", None) or "").startswith("reset"):
            raise _Reset()
        return reply

    # --- ground truth -----------------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str], body: Any, raw: bytes) -> _Reply:
        before = self._identify(method, path, body)
        reply = super()._route(method, path, query, body, raw)
        if before is not None and 200 <= reply.status < 300:
            with self._lock:
                self.applied.extend(before)
        return reply

    def _identify(self, method: str, path: str, body: Any) -> list[Applied] | None:
        """What this request would change, named by target, or None for a read."""
        if method == "GET":
            return None
        if m := re.match(r"^/v1\.0/users/([^/]+)/messages/([^/]+)/(microsoft\.graph\.)?move$", path):
            user = self.users.get(m.group(1))
            msg = self.mailboxes.get(user.id, m.group(2)) if user else None
            dest = str((body or {}).get("destinationId") or (body or {}).get("DestinationId") or "")
            if msg is None or user is None:
                return None
            return [Applied("move", f"{user.user_principal_name.lower()}|{msg.internet_message_id}|{dest}")]
        if "analyzedEmails" in path and isinstance(body, dict):
            emails = [e for e in body.get("analyzedEmails") or [] if isinstance(e, dict)]
            return [Applied("remediate", f"{e.get('networkMessageId')}|"
                                         f"{str(e.get('recipientEmailAddress')).lower()}") for e in emails]
        if m := re.match(r"^/v1\.0/users/([^/]+)/(microsoft\.graph\.)?revokeSignInSessions$", path):
            user = self.users.get(m.group(1))
            return [Applied("revoke", user.id)] if user else None
        if method == "PATCH" and (m := re.match(r"^/v1\.0/users/([^/]+)$", path)) and isinstance(body, dict):
            user = self.users.get(m.group(1))
            if user is None or "accountEnabled" not in body:
                return None
            return [Applied("disable_user" if body["accountEnabled"] is False else "enable_user", user.id)]
        if "confirmCompromised" in path and isinstance(body, dict):
            return [Applied("confirm", str(i)) for i in body.get("userIds") or []]
        if path.endswith("/InvokeCommand") and isinstance(body, dict):
            cmd = body.get("CmdletInput") or {}
            params = cmd.get("Parameters") or {}
            if str(cmd.get("CmdletName", "")).startswith("Set-") and params.get("Enabled") is False:
                return [Applied("connector", str(params.get("Identity", "")).lower())]
        return None


_ANY = re.compile(".*")
