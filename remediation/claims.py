"""Claims and leases: how two deliveries of one request never both act on it.

Before acting, the worker takes an ETag-guarded *claim* on the request's ledger row (``Ledger.claim``,
with a lease). If the process dies between the action and the ledger write, the claim stays but the
outcome is never written. On the queue path the claim's owner is derived from the message body, so the
same message redelivered (dequeue count > 1) takes its own claim back at once and acts again; any other
delivery waits until the lease expires. Acting again is safe because every action is idempotent at the
service: the mailbox strategy re-reads the message's folder first ("already in Junk" is ``skipped``), and
Defender remediation, session revocation, account disable, confirm-compromised and connector disable all
converge on the same end state. The cost is a second Action-center entry at worst.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from remediation.ledger import IllegalTransition, Ledger, LedgerConflict, Record
from remediation.outcome import Outcome


@dataclass
class Claimed:
    """A validated request and its ledger row, claimed by us."""

    request: dict[str, Any]
    record: Record


def claim(ledger: Ledger, rec: Record, owner: str, *, lease: timedelta, take_over: bool) -> Record | None:
    """The row claimed by ``owner``, or None when someone else holds it (or changed it first)."""
    try:
        if take_over and rec.claim_token == owner:
            # Our own message redelivered after a crash: the live claim is ours; take it back.
            rec = replace(rec, claim_until=None)
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
