"""A hunting backend answering EmailEvents from a fake's state, for verification (remediation/verify.py).

Verification asks one question of advanced hunting: the ``LatestDeliveryLocation`` of each submitted
(NetworkMessageId, recipient). Tests and the chaos harness answer it from where their fake Defender left
each email (``location_rows``), and the local KQL engine runs the real verification query over those rows,
so the query text is exercised too. Used by tests/remediation/test_resubmit.py and devtools/bench/chaos.py.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from datetime import datetime, timedelta
from typing import Any

from detections.backends.local import LocalBackend

JUNK, INBOX = "Junk folder", "Inbox/folder"   # documented LatestDeliveryLocation values (verify.py)


def location_rows(emails: Iterable[tuple[str, str]], junk: Container[tuple[str, str]],
                  timestamp: datetime) -> list[dict[str, str]]:
    """One EmailEvents row per (NetworkMessageId, recipient): in Junk when ``junk`` holds it, else Inbox."""
    return [{"Timestamp": timestamp.isoformat(), "NetworkMessageId": n, "RecipientEmailAddress": r,
             "LatestDeliveryLocation": JUNK if (n, r) in junk else INBOX} for n, r in emails]


class EmailEvents:
    """A hunting backend (``run(query, timespan=...)``) over ``rows()`` as EmailEvents, at time ``now()``."""

    name = "local"

    def __init__(self, rows: Callable[[], list[dict[str, str]]], now: Callable[[], datetime]) -> None:
        self.rows, self.now = rows, now

    async def run(self, query: str, *, timespan: timedelta, shape: str = "defender") -> Any:
        backend = LocalBackend.from_rows({"EmailEvents": self.rows()}, self.now(), source="EmailEvents")
        return await backend.run(query, timespan=timespan)
