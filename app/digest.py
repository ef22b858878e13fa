"""The daily digest: what the ledger recorded in the last 24 hours, per rule and state, in one card.

Sent even when nothing happened: a quiet "0 everywhere" card each morning is also the sign that the
app is alive and its webhook works. At most once per UTC day (a ledger marker), so a timer that fires
twice (restart, past-due catch-up) does not repeat it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from app.runs import send
from detections.catalog import Rule
from notifications.cards import digest_card
from notifications.reports import DigestReport
from remediation.ledger import INVALID, MARKERS, Ledger

PERIOD = timedelta(days=1)


def _iso(moment: datetime) -> str:
    # The ledger's own timestamp format, so the string comparison in the filter is a time comparison.
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build(ledger: Ledger, catalog: Mapping[str, Rule], *, now: datetime,
          tenant_id: str | None) -> DigestReport:
    since = now - PERIOD
    rows = ledger.table.query_entities("PartitionKey ne @m and updated_at ge @since",
                                       parameters={"m": MARKERS, "since": _iso(since)},
                                       select=["PartitionKey", "state"])
    pairs = [(str(e["PartitionKey"]), str(e.get("state") or "received")) for e in rows]
    held = ledger.list(state="held")
    oldest = min((datetime.fromisoformat(r.created_at.replace("Z", "+00:00")) for r in held if r.created_at),
                 default=None)
    names = {slug: r.name for slug, r in catalog.items()}
    names[INVALID] = "Invalid queue messages"
    return DigestReport.from_states(pairs, period_start=since, period_end=now, rule_names=names,
                                    severities={slug: r.severity for slug, r in catalog.items()},
                                    oldest_held=oldest, tenant_id=tenant_id)


async def send_digest(ledger: Ledger, notifier: Any, catalog: Mapping[str, Rule], *, now: datetime,
                      tenant_id: str | None) -> bool:
    """Send today's digest unless it went out already; True when this call sent it."""
    key = f"digest:{now.astimezone(UTC):%Y%m%d}"
    if not ledger.claim_once(key):
        return False
    report = build(ledger, catalog, now=now, tenant_id=tenant_id)
    if not await send(notifier, lambda: digest_card(report), "digest"):
        ledger.forget_once(key)
        return False
    return True
