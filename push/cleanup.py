"""Delete the push table's rows that are over: streaming state past its window, sweep markers of chains
that ended without deleting their marker. Run by the subscription timer (app/push_subscriptions.py,
every 30 minutes), bounded per run.

* Stream state (push/state.py, PartitionKey ``stream-<rule slug>``): each value carries ``expires_at``
  (the newest copy's time + the rule's window, detections/streaming/*). A row is deleted only when
  ``expires_at + GRACE`` has passed: never a row still in its window, and a copy that arrives late (a
  notification at the 3-minute tail, a ``missed`` resync, a repaired subscription's delta) still finds
  the state it belongs with for a day after the window closed.
* Sweep markers (push/sweep.py, PartitionKey ``sweep-<rule slug>``): a chain deletes its marker when it
  ends, but a chain whose sweep message was lost leaves it behind (the next flag replaces it). A marker
  is deleted when both ``HotUntil`` and ``NextDue`` are more than GRACE past: no chain runs on it (a
  running chain's NextDue is at most SWEEP_EVERY ahead) and a flag would already treat it as dead.
* Kept poison messages (push/poison.py, PartitionKey ``poisoned``): deleted GRACE after ``KeepUntil``.
* A row whose value or times do not read (not written by this code) is left alone and counted: nothing
  says it is over.

Every delete is conditional on the ETag read (If-Match), so a row a worker rewrote meanwhile stays
(https://learn.microsoft.com/rest/api/storageservices/delete-entity1: 412 on a mismatch). The query asks
the service only for rows untouched for GRACE (the ``Timestamp`` system property,
https://learn.microsoft.com/rest/api/storageservices/querying-tables-and-entities), since a row written
since then cannot be over, and only the properties needed. Bounds per run: ``MAX_DELETES`` deletions and
``MAX_SCANNED`` rows read; what is left is deleted by the next runs (48 a day).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError

from push import poison, state, sweep
from push.resync import parse_time

log = logging.getLogger(__name__)

GRACE = timedelta(hours=24)
MAX_DELETES = 500           # per run: 24,000 a day at the timer's 30 minutes
MAX_SCANNED = 5_000         # rows read per run (5 query pages of 1,000)


@dataclass
class CleanupSummary:
    stream_deleted: int = 0
    sweep_deleted: int = 0
    poison_deleted: int = 0
    kept: int = 0               # read, still in (or near) its window
    unreadable: int = 0         # no readable expiry: left alone
    scanned: int = 0
    lost_race: int = 0          # rewritten (or deleted) by a worker between the read and the delete
    capped: bool = False        # a bound was reached: the next run goes on

    @property
    def deleted(self) -> int:
        return self.stream_deleted + self.sweep_deleted + self.poison_deleted

    def line(self) -> str:
        return (f"{self.stream_deleted} stream state, {self.sweep_deleted} sweep marker and "
                f"{self.poison_deleted} kept poison row(s) deleted, "
                f"{self.kept} kept, {self.unreadable} unreadable, {self.scanned} read"
                + (" (bound reached: the next run goes on)" if self.capped else ""))


def _stream_over(entity: Any, cutoff: datetime) -> bool | None:
    raw = entity.get(state.VALUE_PROPERTY)
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except (ValueError, RecursionError):
        return None
    expires = parse_time(value.get("expires_at")) if isinstance(value, dict) else None
    return None if expires is None else expires < cutoff


def _marker_over(entity: Any, cutoff: datetime) -> bool | None:
    until, due = parse_time(entity.get("HotUntil")), parse_time(entity.get("NextDue"))
    if until is None or due is None:
        return None
    return max(until, due) < cutoff


def _kept_over(entity: Any, cutoff: datetime) -> bool | None:
    until = parse_time(entity.get("KeepUntil"))
    return None if until is None else until < cutoff


_KINDS = (
    (state.PARTITION_PREFIX, [state.VALUE_PROPERTY], _stream_over, "stream_deleted"),
    (sweep.PARTITION_PREFIX, ["HotUntil", "NextDue"], _marker_over, "sweep_deleted"),
    (poison.PARTITION, ["KeepUntil"], _kept_over, "poison_deleted"),
)


def _after(prefix: str) -> str:
    """The smallest string above every string starting with ``prefix`` (its last character + 1)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


async def clean_expired(table: Any, now: datetime, *, max_deletes: int = MAX_DELETES,
                        max_scanned: int = MAX_SCANNED) -> CleanupSummary:
    """Delete the rows that are over (module doc) from ``table`` (async TableClient on the push table)."""
    out = CleanupSummary()
    cutoff = now - GRACE
    for prefix, props, over, counter in _KINDS:
        # A prefix range for stream-<slug> / sweep-<slug>; the one ``poisoned`` partition matches exactly.
        where = ("PartitionKey ge @lo and PartitionKey lt @hi" if prefix.endswith("-")
                 else "PartitionKey eq @lo")
        entities = table.query_entities(
            f"{where} and Timestamp lt @cutoff",
            parameters={"lo": prefix, "hi": _after(prefix), "cutoff": cutoff},
            select=["PartitionKey", "RowKey", *props], results_per_page=1000)
        async for entity in entities:
            if out.scanned >= max_scanned or out.deleted >= max_deletes:
                out.capped = True
                return out
            out.scanned += 1
            verdict = over(entity, cutoff)
            if verdict is None:
                out.unreadable += 1
                continue
            if not verdict:
                out.kept += 1
                continue
            try:
                await table.delete_entity(entity["PartitionKey"], entity["RowKey"],
                                          etag=entity.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
            except (ResourceModifiedError, ResourceNotFoundError):
                out.lost_race += 1
                continue
            except HttpResponseError as exc:      # one row that will not go: the next run tries again
                log.warning("push cleanup: %s/%s not deleted (HTTP %s)", entity["PartitionKey"],
                            entity["RowKey"], exc.status_code)
                continue
            setattr(out, counter, getattr(out, counter) + 1)
    return out
