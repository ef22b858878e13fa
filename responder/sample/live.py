"""The sample tenant as a live service: hunting queries over its tables, and remediations applied to them.

The demo's fake Graph answers ``runHuntingQuery`` from here (real KQL on the local engine) and calls
:meth:`LiveTables.remediate` when the worker submits a Defender remediation, so the next hunting
query sees the new ``LatestDeliveryLocation``: exactly how a real tenant's EmailEvents show that an
Action-center remediation was applied (there, minutes later; here, at once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from detections.backends.base import QueryResult
from detections.backends.local import LocalBackend

# Defender remediation action (Graph's enum) -> where the message ends up (EmailEvents' wording).
LOCATION_AFTER = {
    "moveToJunk": "Junk folder",
    "moveToInbox": "Inbox/folder",
    "softDelete": "Deleted items",
    "moveToDeletedItems": "Deleted items",
    "hardDelete": "Deleted items",
}
LATEST_ACTION = {"Junk folder": "Moved to junk folder", "Inbox/folder": "Moved to inbox",
                 "Deleted items": "Moved to deleted items"}


class LiveTables:
    name = "local"

    def __init__(self, tables_dir: Path, now: datetime):
        self.backend = LocalBackend(tables_dir, now)
        self.moves: list[tuple[str, str, str]] = []  # (network_message_id, recipient, location), in order

    async def run(self, query: str, *, timespan: timedelta) -> QueryResult:
        return await self.backend.run(query, timespan=timespan)

    def remediate(self, action: str, emails: Iterable[Mapping[str, Any]]) -> int:
        """Apply a Defender remediation to ``emails`` ({networkMessageId, recipientEmailAddress});
        returns how many EmailEvents rows changed. Unknown actions change nothing."""
        location = LOCATION_AFTER.get(action)
        if location is None:
            return 0
        changed = 0
        for email in emails:
            nmid = str(email.get("networkMessageId") or email.get("network_message_id") or "")
            rcpt = str(email.get("recipientEmailAddress") or email.get("recipient") or "")
            changed += self.move(nmid, rcpt, location)
        return changed

    def move(self, network_message_id: str, recipient: str, location: str) -> int:
        con = self.backend.con
        before = con.execute(
            'SELECT count(*) FROM "EmailEvents" WHERE "NetworkMessageId" = ? '
            'AND lower("RecipientEmailAddress") = lower(?) AND "LatestDeliveryLocation" IS DISTINCT FROM ?',
            [network_message_id, recipient, location]).fetchone()
        con.execute(
            'UPDATE "EmailEvents" SET "LatestDeliveryLocation" = ?, "LatestDeliveryAction" = ? '
            'WHERE "NetworkMessageId" = ? AND lower("RecipientEmailAddress") = lower(?)',
            [location, LATEST_ACTION.get(location, "Moved"), network_message_id, recipient])
        n = int(before[0]) if before else 0
        if n:
            self.moves.append((network_message_id, recipient, location))
        return n
