"""Outlook's per-mailbox concurrency limit, held across every worker instance.

Outlook lets an app have at most 4 requests in flight per mailbox, then answers 429
``ApplicationThrottled`` "Application is over its MailboxConcurrency limit." with a Retry-After
(https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits). The limit is per app and
mailbox across all its callers, while the queue trigger runs one request per message on up to 40
instances: a campaign of 50 copies in one shared mailbox would otherwise be up to 40 x 4 requests at
once, nearly all of them 429s. An in-process semaphore cannot see the other instances, so each request
to a mailbox first takes one of its ``SLOTS`` leases in a table (Azure Table storage, the ledger's
account):

* one partition per mailbox (a hash of its id: no table key escaping, nothing hostile in keys), one row
  per slot ``slot0..slot3``; a row that exists and has not expired is held.
* take a slot: read the partition (one query), then create a missing row (409 when another instance
  was faster) or replace an expired one with its ETag (``If-Match``: 412 when another instance was
  faster). Either way exactly one instance wins a slot; the losers try the next slot.
* all held: wait with jittered exponential backoff (``MIN_WAIT``..``MAX_WAIT``) and try again, for at
  most ``max_wait`` seconds, then give up with ``SlotsBusy`` (a transient failure: the worker retries
  later, the queue redelivers).
* release in ``finally``: delete the row with its ETag, so a lease that expired and was taken over is
  never deleted by its former holder. A crashed instance's lease expires after ``ttl`` seconds.

``ttl`` must outlast one Graph request (the SDK's timeout and its retries of that request); if a request
ever outlives it, at worst one more request runs in that mailbox and Outlook answers it 429 (retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode

log = logging.getLogger(__name__)

SLOTS = 4            # Outlook: 4 concurrent requests per app per mailbox
TTL = 120.0          # seconds a lease lives without release (a crashed instance's slot comes back then)
MIN_WAIT, MAX_WAIT = 0.05, 1.0


class SlotsBusy(TimeoutError):
    """Every slot of the mailbox stayed held for ``max_wait`` seconds (transient: try again later)."""


@dataclass(frozen=True)
class Lease:
    partition: str
    row: str
    etag: str


def partition_key(mailbox: str) -> str:
    return "mbx-" + hashlib.sha256(mailbox.strip().lower().encode("utf-8")).hexdigest()[:40]


class MailboxSlots:
    """At most ``slots`` leases per mailbox at a time, over every process sharing ``table``.

    ``table``: an ``azure.data.tables.aio.TableClient`` (the table must exist: ``ensure_table``).
    """

    def __init__(self, table: Any, *, slots: int = SLOTS, ttl: float = TTL, max_wait: float = 300.0,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.table, self.slots, self.ttl, self.max_wait = table, slots, ttl, max_wait
        self.clock, self.sleep = clock, sleep
        self.waits = 0          # times a caller found every slot held (for measurements)

    async def ensure_table(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            await self.table.create_table()

    @contextlib.asynccontextmanager
    async def hold(self, mailbox: str) -> AsyncIterator[Lease]:
        lease = await self.acquire(mailbox)
        try:
            yield lease
        finally:
            await self.release(lease)

    async def acquire(self, mailbox: str) -> Lease:
        pk = partition_key(mailbox)
        token = uuid.uuid4().hex
        deadline = self.clock() + self.max_wait
        attempt = 0
        while True:
            lease = await self._try(pk, token)
            if lease is not None:
                return lease
            self.waits += 1
            if self.clock() >= deadline:
                raise SlotsBusy(f"all {self.slots} request slots of the mailbox stayed busy for "
                                f"{self.max_wait:g}s (other instances are working on it)")
            delay = min(MAX_WAIT, MIN_WAIT * 2 ** min(attempt, 10))
            await self.sleep(delay * (0.5 + random.random() / 2))   # jitter: waiters do not retry in step
            attempt += 1

    async def _try(self, pk: str, token: str) -> Lease | None:
        now = self.clock()
        held = {e["RowKey"]: e async for e in self.table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": pk})}
        rows = [f"slot{i}" for i in range(self.slots)]
        random.shuffle(rows)   # spread instances over the rows, fewer collisions on the same one
        for row in rows:
            entity = {"PartitionKey": pk, "RowKey": row, "Holder": token, "Expires": now + self.ttl}
            current = held.get(row)
            try:
                if current is None:
                    meta = await self.table.create_entity(entity)
                elif float(current.get("Expires") or 0) <= now:
                    # Expired (its holder crashed or overran the TTL): take it over, but only if nobody
                    # else did since we read it.
                    meta = await self.table.update_entity(
                        entity, mode=UpdateMode.REPLACE, etag=current.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified)
                else:
                    continue
            except (ResourceExistsError, ResourceModifiedError):
                continue
            except HttpResponseError as exc:
                if exc.status_code in (409, 412):
                    continue
                raise
            return Lease(pk, row, meta["etag"])
        return None

    async def release(self, lease: Lease) -> None:
        try:
            await self.table.delete_entity(lease.partition, lease.row, etag=lease.etag,
                                           match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            pass   # expired and taken over (or already gone): not ours to delete any more
        except HttpResponseError as exc:
            if exc.status_code not in (404, 412):
                # The lease then expires after ttl; the request itself already finished.
                log.warning("mailbox slot %s/%s not released: %s", lease.partition, lease.row, exc)
