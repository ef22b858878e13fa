"""Quota guard for on-demand re-scans: at most N accepted in any sliding hour, across all instances.

State is one Table-storage entity holding the times of the scans accepted in the last hour, updated
with an ETag condition: two instances that read the same state cannot both take the last slot (the
loser re-reads and finds it gone). A sliding window rather than clock hours, so a burst at 10:59
and another at 11:00 cannot add up to twice the rate.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

WINDOW = timedelta(hours=1)
_PK, _RK = "scan", "accepted"
_MAX_TRIES = 20


class QuotaBusy(RuntimeError):
    """Too many instances raced for the state; treated like storage being unavailable."""


class ScanQuota:
    def __init__(self, table: TableClient, *, per_hour: int, clock: Callable[[], datetime]) -> None:
        if per_hour < 1:
            raise ValueError("per_hour must be at least 1")
        self.table, self.per_hour, self.clock = table, per_hour, clock

    def ensure_table(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            self.table.create_table()

    def acquire(self) -> float | None:
        """Take a slot: None when accepted, else the seconds until one frees up (for Retry-After)."""
        for _ in range(_MAX_TRIES):
            now = self.clock()
            try:
                entity = self.table.get_entity(_PK, _RK)
            except ResourceNotFoundError:
                entity = None
            times = _load(entity["times"]) if entity else []
            recent = sorted(t for t in times if now - t < WINDOW)
            if len(recent) >= self.per_hour:
                oldest = recent[len(recent) - self.per_hour]
                return max(1.0, math.ceil((oldest + WINDOW - now).total_seconds()))
            row = {"PartitionKey": _PK, "RowKey": _RK,
                   "times": json.dumps([t.isoformat() for t in [*recent, now]])}
            try:
                if entity is None:
                    self.table.create_entity(row)
                else:
                    self.table.update_entity(row, mode=UpdateMode.REPLACE, etag=entity.metadata["etag"],
                                             match_condition=MatchConditions.IfNotModified)
            except (ResourceExistsError, ResourceModifiedError):
                continue   # another instance wrote first: read its state and decide again
            return None
        raise QuotaBusy("the re-scan quota state kept changing under concurrent writers")


def _load(text: str) -> list[datetime]:
    return [datetime.fromisoformat(t) for t in json.loads(text or "[]")]
