"""The hot-campaign sweep: once a streaming rule flags a campaign, the protected Inboxes are read by delta
every ``SWEEP_EVERY`` until the campaign goes cold, so a later copy is acted on without waiting for its own
change notification (docs/push.md, "Hot-campaign sweep").

Why: Graph documents change notifications for mail as arriving within 3 minutes at most
(https://learn.microsoft.com/graph/change-notifications-overview#latency); a copy whose notification is at
that tail (or dropped, then found through ``missed``) sits in an Inbox that long even though the campaign
is already known. A sweep is only a delta read: each new Inbox message becomes a ``message`` queue item
(push/resync.py) that the push worker processes like a notification, so the streaming rule in the catalog
still decides what is remediated; a sweep message by itself can never cause a remediation.

One chain per rule and campaign, kept in a marker row of the push table: PartitionKey ``sweep-<rule slug>``,
RowKey the SHA-256 of the campaign key (the rows' ``Campaigns`` value: the normalised sender), holding
``Chain`` (the chain id), ``Seq`` (the sequence number the next sweep message must carry), ``HotUntil``
and ``NextDue``. Every write is conditional on the row's ETag, so two instances never both continue a chain:

* a flag (``Sweeper.flagged``) while a chain runs only moves ``HotUntil`` later; with no marker, or one
  whose sweep is overdue by ``STALL_AFTER`` (its message was lost), it writes a new chain and queues its
  first sweep at once (the sweep at flag time);
* a sweep message (``Sweeper.sweep``) whose chain or sequence number is not the marker's is a duplicate
  delivery or an old chain: it stops without reading anything. Otherwise it queues its successor (seq + 1,
  visible after ``SWEEP_EVERY``) while now < HotUntil, then claims its step by writing Seq + 1 (or
  deletes the marker when the chain ends), then resyncs. The successor is queued before the claim, so a
  crash after the claim cannot end the chain; a successor queued by a delivery that lost the claim finds
  a sequence number already taken and stops.

Hot-until: ``hot_until`` = the last flagged copy's time + the rule's ``correlation_window`` (a copy that
still counts with the flagged burst), the window capped at ``MAX_HOT`` and the result at now + ``MAX_HOT``.
Only rules with a ``correlation_window`` (campaigns spanning mailboxes) sweep; the reply-chain rule
correlates within one mailbox, where a sweep of every Inbox would not find its next link mail sooner.

Cost (docs/push.md): per hot campaign, one delta round per protected Inbox per ``SWEEP_EVERY`` (usually one
page: the link is the folder's own, so a round returns only what arrived since the previous one), plus one
message read for each message that arrived meanwhile (most of them also announced by their notification:
read twice).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from push.contract import SCHEMA
from push.resync import iso, parse_time

log = logging.getLogger(__name__)

SWEEP_EVERY = timedelta(seconds=60)
MAX_HOT = timedelta(hours=1)          # the longest a campaign stays hot after its last flagged copy
STALL_AFTER = 5 * SWEEP_EVERY         # a chain whose sweep is this overdue is dead: a flag starts another
PARTITION_PREFIX = "sweep-"
CONCURRENCY = 4                       # Inboxes resynced at once
MAX_TRIES = 5                         # conditional-write retries against concurrent writers
CAMPAIGN_KEPT_CHARS = 256
MAX_SEQ = 1_000_000
CHAIN = re.compile(r"^[0-9a-f]{32}\Z")
CAMPAIGN = re.compile(r"^[0-9a-f]{64}\Z")

# (queue item, visibility delay) -> None: puts a sweep message on the push queue.
Send = Callable[[dict[str, Any], timedelta], Awaitable[None]]


def hot_window(params: Mapping[str, Any]) -> timedelta | None:
    """How long after its last flagged copy a campaign of this rule stays hot (None: the rule does not
    sweep: it has no correlation_window)."""
    window = params.get("correlation_window")
    if not isinstance(window, timedelta) or window <= timedelta(0):
        return None
    return min(window, MAX_HOT)


def hot_until(last_copy: datetime, window: timedelta, now: datetime) -> datetime:
    """When the sweep chain of a campaign whose latest flagged copy arrived at ``last_copy`` stops."""
    return min(last_copy + min(window, MAX_HOT), now + MAX_HOT)


def campaign_row_key(campaign: str) -> str:
    return hashlib.sha256(campaign.encode("utf-8")).hexdigest()


def partition(rule_slug: str) -> str:
    return PARTITION_PREFIX + rule_slug


def campaigns(rows: Iterable[Mapping[str, Any]]) -> dict[str, datetime]:
    """campaign key -> latest Timestamp among the rows naming it (rows are the rule's own projection)."""
    out: dict[str, datetime] = {}
    for row in rows:
        ts = parse_time(row.get("Timestamp"))
        keys = row.get("Campaigns")
        if ts is None or not isinstance(keys, list):
            continue
        for key in keys:
            if isinstance(key, str) and key:
                out[key] = max(out.get(key, ts), ts)
    return out


def sweep_item(rule_slug: str, campaign: str, chain: str, seq: int, now: datetime,
               tenant_id: str = "") -> dict[str, Any]:
    """A ``sweep`` queue message (push/contract.py)."""
    item: dict[str, Any] = {"schema": SCHEMA, "kind": "sweep", "rule": rule_slug, "campaign": campaign,
                            "chain_id": chain, "seq": seq, "received_at": iso(now)}
    if tenant_id:
        item["tenant_id"] = tenant_id
    return item


@dataclass(frozen=True)
class Marker:
    chain: str
    seq: int
    hot_until: datetime
    next_due: datetime


@dataclass
class SweepResult:
    outcome: str                   # "swept", "no_chain", "superseded", "duplicate", "contended"
    continues: bool = False        # a successor was queued
    mailboxes: int = 0             # Inboxes resynced
    failed: list[str] = field(default_factory=list)   # Inboxes whose resync failed
    items: int = 0                 # message items queued


class Sweeper:
    """``table``: the push table (async TableClient); ``send`` queues a sweep message with a delay;
    ``manager``: push.subscriptions.SubscriptionManager (its store and its ``resync``)."""

    def __init__(self, table: Any, send: Send, manager: Any, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), tenant_id: str = "") -> None:
        self.table, self.send, self.manager, self.clock = table, send, manager, clock
        self.tenant_id = tenant_id

    # --- the marker row ----------------------------------------------------------------------------------

    async def _load(self, rule_slug: str, row_key: str) -> tuple[Marker | None, str | None]:
        """The marker and its ETag; (None, etag) for a row that does not read as one (hostile input: it is
        replaced, never followed), (None, None) for no row."""
        try:
            e = await self.table.get_entity(partition(rule_slug), row_key)
        except ResourceNotFoundError:
            return None, None
        etag = e.metadata.get("etag")
        chain, seq = e.get("Chain"), e.get("Seq")
        until, due = parse_time(e.get("HotUntil")), parse_time(e.get("NextDue"))
        if (not isinstance(chain, str) or not CHAIN.match(chain) or not isinstance(seq, int)
                or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ or until is None or due is None):
            log.warning("push sweep: marker %s/%s is unreadable; treated as no chain", partition(rule_slug),
                        row_key)
            return None, etag
        return Marker(chain, seq, until, due), etag

    async def _write(self, rule_slug: str, row_key: str, fields: dict[str, Any], etag: str | None,
                     mode: UpdateMode = UpdateMode.REPLACE) -> bool:
        entity = {"PartitionKey": partition(rule_slug), "RowKey": row_key, **fields}
        try:
            if etag is None:
                await self.table.create_entity(entity)
            else:
                await self.table.update_entity(entity, mode=mode, etag=etag,
                                               match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return False      # another writer first: read again
        return True

    # --- a flag: start or extend the chain ------------------------------------------------------------------

    async def flagged(self, rule_slug: str, params: Mapping[str, Any],
                      rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
        """The rule returned ``rows``: start (or extend) the sweep of each campaign they name. Returns
        campaign row key -> "started" | "extended" | "running" | "cold" | "contended"."""
        window = hot_window(params)
        if window is None:
            return {}
        now = self.clock()
        out = {}
        for key, last in campaigns(rows).items():
            row_key = campaign_row_key(key)
            until = hot_until(last, window, now)
            out[row_key] = "cold" if until <= now else await self._start_or_extend(
                rule_slug, row_key, key, until, now)
            log.info("push sweep %s/%s: %s (hot until %s)", rule_slug, row_key[:16], out[row_key], iso(until))
        return out

    async def _start_or_extend(self, rule_slug: str, row_key: str, key: str, until: datetime,
                               now: datetime) -> str:
        for _ in range(MAX_TRIES):
            marker, etag = await self._load(rule_slug, row_key)
            if marker is not None and now <= marker.next_due + STALL_AFTER:
                if until <= marker.hot_until:
                    return "running"
                if await self._write(rule_slug, row_key, {"HotUntil": iso(until)}, etag, UpdateMode.MERGE):
                    return "extended"
                continue
            chain = uuid.uuid4().hex
            fields = {"Chain": chain, "Seq": 0, "HotUntil": iso(until), "NextDue": iso(now),
                      "Campaign": key[:CAMPAIGN_KEPT_CHARS], "StartedAt": iso(now)}
            if not await self._write(rule_slug, row_key, fields, etag):
                continue
            # After the marker, so the sweep (visible at once) finds it. If this put fails, the marker
            # names a chain with no message: the next flag after STALL_AFTER starts another.
            await self.send(sweep_item(rule_slug, row_key, chain, 0, now, self.tenant_id), timedelta(0))
            return "started"
        return "contended"

    # --- one sweep message ---------------------------------------------------------------------------------

    async def sweep(self, rule_slug: str, row_key: str, chain: str, seq: int,
                    protected: Iterable[str]) -> SweepResult:
        """One step of a chain (module doc): claim it, queue the next, resync every protected Inbox."""
        queued_next = False
        for _ in range(MAX_TRIES):
            marker, etag = await self._load(rule_slug, row_key)
            if marker is None:
                return SweepResult("no_chain")
            if marker.chain != chain:
                return SweepResult("superseded")
            if marker.seq != seq:
                return SweepResult("duplicate")
            now = self.clock()
            go_on = now < marker.hot_until
            if go_on and not queued_next:
                await self.send(sweep_item(rule_slug, row_key, chain, seq + 1, now, self.tenant_id),
                                SWEEP_EVERY)
                queued_next = True
            if go_on:
                claimed = await self._write(rule_slug, row_key, {"Seq": seq + 1,
                                                                 "NextDue": iso(now + SWEEP_EVERY)},
                                            etag, UpdateMode.MERGE)
            else:
                claimed = await self._delete(rule_slug, row_key, etag)
            if claimed:
                break
        else:
            return SweepResult("contended")
        result = SweepResult("swept", continues=go_on)
        await self._resync_inboxes(protected, result)
        return result

    async def _delete(self, rule_slug: str, row_key: str, etag: str | None) -> bool:
        try:
            await self.table.delete_entity(partition(rule_slug), row_key, etag=etag,
                                           match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    async def _resync_inboxes(self, protected: Iterable[str], result: SweepResult) -> None:
        boxes = {str(p).strip().lower() for p in protected}
        entries = [e for e in (await self.manager.store.scan()).entries.values()
                   if e.sub.folder == "inbox" and e.sub.mailbox.lower() in boxes]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(entry: Any) -> None:
            async with gate:
                try:
                    done = await self.manager.resync(entry)   # logs and marks the row on failure
                except Exception as exc:   # one mailbox never stops the others
                    log.warning("push sweep: resync of %s failed: %s", entry.sub.mailbox, type(exc).__name__)
                    done = None
            if done is None:
                result.failed.append(entry.sub.mailbox)
            else:
                result.mailboxes += 1
                result.items += len(done.items)

        await asyncio.gather(*(one(e) for e in entries))
