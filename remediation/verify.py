"""Confirming Defender email submissions from EmailEvents.

``analyzedEmails/remediate`` is asynchronous and has no status API, so a submitted request is
confirmed by looking at where the message is now: one hunting query over EmailEvents for all the
submitted NetworkMessageIds, reading ``LatestDeliveryLocation`` per recipient. The ids come from
mail (attacker-influenced), so they reach the query only as KQL string literals (detections.params).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from detections.params import kql_string

# Where each action leaves a message (LatestDeliveryLocation values, compared case-insensitively;
# "Inbox/folder" is how Defender names the inbox or a user folder).
EXPECTED_LOCATION = {
    "move_to_junk": ("junk folder",),
    "soft_delete": ("deleted items",),
    "move_to_deleted_items": ("deleted items",),
    "move_to_inbox": ("inbox/folder", "inbox"),
}
# Ids per query: keeps the query text small enough for the hunting API (about 40 bytes per id).
MAX_IDS_PER_QUERY = 500


def verification_query(network_message_ids: Iterable[str]) -> str:
    """Latest location of each (message, recipient) among ``network_message_ids``."""
    ids = sorted({i for i in network_message_ids if i})
    if not ids:
        raise ValueError("no NetworkMessageIds to verify")
    literals = ", ".join(kql_string(i) for i in ids)
    return (
        "EmailEvents\n"
        f"| where NetworkMessageId in ({literals})\n"
        "| summarize arg_max(Timestamp, LatestDeliveryLocation) by NetworkMessageId, RecipientEmailAddress\n"
        "| project NetworkMessageId, RecipientEmailAddress, LatestDeliveryLocation"
    )


def locations(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """(NetworkMessageId, recipient), both lower-case -> LatestDeliveryLocation."""
    out: dict[tuple[str, str], str] = {}
    for row in rows:
        key = (str(row.get("NetworkMessageId", "")).lower(),
               str(row.get("RecipientEmailAddress", "")).lower())
        out[key] = str(row.get("LatestDeliveryLocation") or "")
    return out


def classify(action: str, location: str | None, *, submitted_at: datetime, now: datetime,
             grace: timedelta) -> tuple[str | None, str]:
    """(new state or None to keep waiting, detail) for one submitted request.

    A location that matches the action confirms it. Anything else is only ``not_applied`` once
    ``grace`` has passed since submission: Defender applies remediations minutes later, and
    EmailEvents shows the change later still.
    """
    expected = EXPECTED_LOCATION.get(action, ())
    if location and location.strip().lower() in expected:
        return "confirmed", f"EmailEvents shows the message in {location}"
    late = now - submitted_at >= grace
    if location is None:
        if late:
            return "not_applied", f"no EmailEvents row for the message {grace} after submission"
        return None, "not yet visible in EmailEvents"
    if late:
        return "not_applied", f"EmailEvents still shows the message in {location} {grace} after submission"
    return None, f"still in {location}; waiting for Defender to apply the remediation"
