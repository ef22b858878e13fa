"""Held requests expire: a request waiting for a person longer than RESPONDER_HELD_EXPIRY can no longer run.

An approval days after detection acts on evidence gathered then: the mail may have been read and
answered, the account's owner may have changed jobs. So a ``held`` row older than the setting (default
7 days) moves to ``expired`` (a final state; see remediation/ledger.py TRANSITIONS) with when and why,
and approving it is refused.

Two paths, so correctness never depends on a timer: ``Decisions.approve`` checks (and expires) the row
it was asked to approve before anything runs; and ``sweep``, called from the verify and digest timers,
expires every overdue row at most once an hour and returns them for one card listing them all.
How long a row has been held is measured from ``at_held`` (the moment it was held), else ``created_at``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from remediation.ledger import IllegalTransition, Ledger, LedgerConflict, Record

log = logging.getLogger(__name__)

# The sweep reads every held row (a filter on a non-key column: a table scan), so it runs at most once
# per hour whatever the timer's schedule; approve checks its own row exactly, so nothing runs late.
SWEEP_EVERY = "%Y%m%d%H"


def held_since(rec: Record) -> datetime | None:
    text = rec.state_times.get("held") or rec.created_at
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def is_overdue(rec: Record, now: datetime, ttl: timedelta) -> bool:
    """A held row older than ``ttl``. A row without any time is treated as overdue: it cannot be shown
    to be fresh, and approving something of unknown age is what expiry exists to prevent."""
    if rec.state != "held":
        return False
    since = held_since(rec)
    return since is None or now - since >= ttl


def iso_duration(ttl: timedelta) -> str:
    """``timedelta(days=7)`` -> ``P7D``; for messages, in the setting's own notation."""
    days, rest = ttl.days, ttl.seconds
    hours, minutes = rest // 3600, rest % 3600 // 60
    time = f"{hours}H" * bool(hours) + f"{minutes}M" * bool(minutes)
    return "P" + f"{days}D" * bool(days) + (f"T{time}" if time else "") if days or time else "PT0M"


def expire(ledger: Ledger, rec: Record, now: datetime, ttl: timedelta) -> Record:
    """Move one overdue held row to ``expired``, not yet announced. Raises LedgerConflict or
    IllegalTransition when someone approved or rejected it meanwhile (then their decision stands)."""
    since = held_since(rec)
    held = (since.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if since
            else "an unknown time")
    return ledger.transition(
        rec, "expired", expiry_announced=False,
        detail=(f"held since {held} and not approved or rejected within {iso_duration(ttl)} "
                f"(RESPONDER_HELD_EXPIRY): expired, nothing was done"))


def sweep(ledger: Ledger, now: datetime, ttl: timedelta) -> list[Record] | None:
    """Expire every overdue held row; return every expired row not yet announced (expired by this
    sweep, by an approve that came too late, or by a sweep whose card did not go out), for one card.
    At most once per hour (a ledger marker): ``None`` when this hour's sweep has run already."""
    if not ledger.claim_once(f"held-expiry:{now.astimezone(UTC).strftime(SWEEP_EVERY)}"):
        return None
    for rec in ledger.list(state="held"):
        if is_overdue(rec, now, ttl):
            try:
                expire(ledger, rec, now, ttl)
            except (LedgerConflict, IllegalTransition):
                log.info("request %s changed while expiring it; left as it is now", rec.request_id)
    return ledger.where("state eq @s and expiry_announced eq false", {"s": "expired"})


def mark_announced(ledger: Ledger, recs: list[Record]) -> int:
    """After the card went out: these rows are announced (a row changed meanwhile is skipped: at worst
    it is listed once more next hour)."""
    done = 0
    for rec in recs:
        try:
            ledger.update(rec, expiry_announced=True)
            done += 1
        except LedgerConflict:
            log.info("request %s changed before it was marked announced", rec.request_id)
    return done
