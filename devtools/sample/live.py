"""The sample tenant as a live service: hunting queries over its tables, and remediations applied to them.

The demo's fake Graph answers ``runHuntingQuery`` from here (real KQL on the local engine) and calls
:meth:`LiveTables.remediate` when the worker submits a Defender remediation, so the next hunting
query sees the new ``LatestDeliveryLocation``: exactly how a real tenant's EmailEvents show that an
Action-center remediation was applied (there, minutes later; here, at once).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from detections.backends.base import BackendError, QueryResult
from detections.backends.local import LocalBackend
from detections.params import parse_timespan
from devtools.sample.bulkload import bulk_load

# Defender remediation action (Graph's enum) -> where the message ends up (EmailEvents' wording).
LOCATION_AFTER = {
    "moveToJunk": "Junk folder",
    "moveToInbox": "Inbox/folder",
    "softDelete": "Deleted items",
    "moveToDeletedItems": "Deleted items",
    "hardDelete": "Deleted items",
}
LATEST_ACTION = {
    "Junk folder": "Moved to junk folder",
    "Inbox/folder": "Moved to inbox",
    "Deleted items": "Moved to deleted items",
}


class LiveTables:
    name = "local"

    def __init__(self, tables_dir: Path, now: datetime):
        self.backend = LocalBackend(None, now)
        self.rows = bulk_load(self.backend, tables_dir)
        self.moves: list[tuple[str, str, str]] = []  # (network_message_id, recipient, location), in order
        self.queries = 0
        # The fake Graph serves each request on its own thread; one DuckDB connection, one at a time.
        self._lock = threading.Lock()

    async def run(self, query: str, *, timespan: timedelta, shape: str = "defender") -> QueryResult:
        with self._lock:
            self.queries += 1
            return await self.backend.run(query, timespan=timespan)

    def hunt(self, query: str, timespan: str | None) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
        """The fake Graph's runHuntingQuery handler: (schema, rows) as the service's JSON carries them.
        An engine error becomes the 400 the service answers for a query it cannot run."""
        from devtools.fakegraph import GraphFault

        span = _iso_duration(timespan) if timespan else timedelta(days=30)
        try:
            result = asyncio.run(self.run(query, timespan=span))
        except BackendError as exc:
            raise GraphFault(400, str(exc), code="BadRequest") from None
        return [{"name": n, "type": t} for n, t in result.columns], result.rows

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
        with self._lock:
            return self._move(network_message_id, recipient, location)

    def close(self) -> None:
        with self._lock:
            self.backend.con.close()

    def people(self) -> list[tuple[str, str]]:
        """(UPN, object id) of every account that signed in: the directory the fake Graph should know."""
        with self._lock:
            return [
                tuple(r)
                for r in self.backend.con.execute(  # type: ignore[misc]
                    'SELECT DISTINCT "AccountUpn", "AccountObjectId" FROM "IdentityLogonEvents" '
                    'WHERE coalesce("AccountUpn", \'\') <> \'\' ORDER BY 1'
                ).fetchall()
            ]

    def connectors(self) -> list[str]:
        """Connector names seen in mail flow or created in the audit log: what Exchange would list."""
        with self._lock:
            mail = self.backend.con.execute(
                # Missing strings are "" (as in Kusto), not NULL: neither is a connector.
                'SELECT DISTINCT "Connectors" FROM "EmailEvents" WHERE coalesce("Connectors", \'\') <> \'\''
            ).fetchall()
            audit = self.backend.con.execute(
                'SELECT DISTINCT "ObjectName" FROM "CloudAppEvents" '
                'WHERE "ActionType" LIKE \'%Connector\' AND coalesce("ObjectName", \'\') <> \'\''
            ).fetchall()
        return sorted({r[0] for r in mail + audit})

    def _move(self, network_message_id: str, recipient: str, location: str) -> int:
        con = self.backend.con
        before = con.execute(
            'SELECT count(*) FROM "EmailEvents" WHERE "NetworkMessageId" = ? '
            'AND lower("RecipientEmailAddress") = lower(?) AND "LatestDeliveryLocation" IS DISTINCT FROM ?',
            [network_message_id, recipient, location],
        ).fetchone()
        con.execute(
            'UPDATE "EmailEvents" SET "LatestDeliveryLocation" = ?, "LatestDeliveryAction" = ? '
            'WHERE "NetworkMessageId" = ? AND lower("RecipientEmailAddress") = lower(?)',
            [location, LATEST_ACTION.get(location, "Moved"), network_message_id, recipient],
        )
        n = int(before[0]) if before else 0
        if n:
            self.moves.append((network_message_id, recipient, location))
        return n


def _iso_duration(text: str) -> timedelta:
    """``PT1H``/``P7D``-style durations (what the defender backend sends as Timespan), or KQL ``1h``."""
    import re

    m = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", text.strip())
    if m is None or not any(m.groups()):
        return parse_timespan(text)
    d, h, mi, s = m.groups()
    return timedelta(days=int(d or 0), hours=int(h or 0), minutes=int(mi or 0), seconds=float(s or 0))
