"""The held-request expiry sweep on the app's timers, and its one card per sweep (remediation/expiry.py).

Called from the verify timer (every 5 minutes by default) and the digest timer (daily), so it runs while
either is on; the sweep itself runs at most once an hour. Approving checks expiry on its own row, so a
late approval is refused even with both timers off; the timers are what announce it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from app import telemetry
from app.runs import send
from notifications.cards import failure_card
from notifications.entities import action_label, describe_target
from notifications.reports import FailureReport
from remediation import expiry
from remediation.ledger import Ledger, Record

log = logging.getLogger(__name__)


def report(expired: list[Record], *, now: datetime, ttl: timedelta, tenant_id: str | None) -> FailureReport:
    """One card listing every request that expired: which, what it would have done, since when held."""
    n = len(expired)
    details = {}
    for rec in expired:
        since = expiry.held_since(rec)
        what = f"{action_label(rec.action)}: {describe_target(rec.request or {'target': rec.target})}"
        details[rec.request_id] = (f"{rec.rule} · {what} · held since "
                                   f"{since:%Y-%m-%d %H:%M} UTC" if since else f"{rec.rule} · {what}")
    return FailureReport(
        kind="other", summary=f"{n} held request{'s' * (n != 1)} expired without a decision",
        reason=(f"Held for approval longer than {expiry.iso_duration(ttl)} (RESPONDER_HELD_EXPIRY) without "
                "being approved or rejected: recorded as expired in the ledger. Approving them is refused "
                "from now on."),
        next_step=("Nothing was done for these requests. If a finding still matters, act on it in the "
                   "portal; the ledger keeps them (python -m responder ledger --state expired)."),
        occurred_at=now, details=details, tenant_id=tenant_id)


async def sweep_and_announce(ledger: Ledger, notifier: Any, *, now: datetime, ttl: timedelta,
                             tenant_id: str | None) -> int:
    """Expire overdue held requests and send one card for every expired one not yet announced.
    Returns how many were announced. A card that does not go out leaves them unannounced: the next
    hour's sweep lists them again."""
    pending = expiry.sweep(ledger, now, ttl)
    telemetry.outcomes(None, [r.outcome() for r in pending or []], now=now)
    if not pending:
        return 0
    card = report(pending, now=now, ttl=ttl, tenant_id=tenant_id)
    if not await send(notifier, lambda: failure_card(card), "held expiry"):
        return 0
    expiry.mark_announced(ledger, pending)
    log.info("held expiry: %d request(s) expired and announced", len(pending))
    return len(pending)
