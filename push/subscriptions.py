"""Graph subscriptions on the protected mailboxes: their table, and the reconcile that keeps them alive.

One subscription per protected mailbox per folder (``inbox``, and ``sentitems`` for the reply-chain rule),
resource ``users/{user id}/mailFolders('{folder}')/messages``, changeType ``created``, both notification
URLs the app's endpoint, clientState the Key Vault secret (docs/push.md, PUSH.md).

The table (``RESPONDER_PUSH_TABLE``, Azure Table storage) holds, per subscription:
* PartitionKey ``subscription``, RowKey ``{user id}:{folder}``: SubscriptionId, Mailbox, UserId, Folder,
  ExpiresAt, DeltaLink (the folder's delta link, push/resync.py), ResyncPending (a resync was cut short or
  failed: the timer runs it again).
* PartitionKey ``subscription-id``, RowKey ``{subscription id}``: Key (``{user id}:{folder}``), so
  ``by_id`` (push.contract.SubscriptionLookup) is two point reads. The row is written before its index
  row; ``by_id`` answers only when both agree, so a crash between the writes is an unknown id, never a
  wrong mailbox.
Rows are hostile input: every field is checked when read (an unreadable row is reported and replaced by a
new subscription, never followed: its ids and links are not used). Writes are conditional (ETag), so two
writers (the timer and a lifecycle event) never both think they made the mailbox's subscription: the
loser deletes the subscription it made.

Limits (https://learn.microsoft.com/graph/change-notifications-overview#subscription-lifetime and
https://learn.microsoft.com/graph/api/resources/subscription): an Outlook message subscription without
resource data lives at most 10,080 minutes (under 7 days); we ask for that minus ``LIFETIME_MARGIN``
(clock skew) and renew (``PATCH /subscriptions/{id}`` with a new expirationDateTime,
https://learn.microsoft.com/graph/api/subscription-update) once less than ``RENEW_WITHIN`` is left, so
about 48 timer runs may fail before one lapses. Create: ``POST /subscriptions`` (201, Graph validates the
notification URL first: https://learn.microsoft.com/graph/api/subscription-post-subscriptions). Delete:
``DELETE /subscriptions/{id}`` (204; 404 means already gone). A subscription Graph no longer has (404 on
GET or PATCH) is recreated and the folder resynchronised from its stored delta link, which covers the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.subscription import Subscription as GraphSubscription
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

from core.settings import PushSettings
from push.contract import Subscription
from push.graphjson import GUID, GraphResponseError, reason, send_json, status_of
from push.resync import ResyncResult, delta_round, iso, parse_time

log = logging.getLogger(__name__)

PARTITION = "subscription"
INDEX_PARTITION = "subscription-id"
FOLDERS = ("inbox", "sentitems")
# The rules whose protected_recipients are the protected mailboxes (PUSH.md).
MAIL_RULES = ("consumer-sender-to-shared-mailboxes", "consumer-reply-chain-file-link")
MAX_LIFETIME = timedelta(minutes=10_080)     # Outlook message, no resource data (docs above)
LIFETIME_MARGIN = timedelta(minutes=15)
RENEW_WITHIN = timedelta(hours=24)
CONCURRENCY = 4                               # mailboxes worked on at once
# Subscription ids are GUIDs in Graph's answers; accept a conservative superset, nothing that could
# change a URL path or a table key.
SUBSCRIPTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,127}$")
ADDRESS = re.compile(r"^[^@\s\x00-\x1f\"'<>/\\]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
MAX_LINK = 8192
ROW_KEY = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}:(" + "|".join(FOLDERS) + ")$")

Enqueue = Callable[[list[dict[str, Any]]], Awaitable[None]]
# Object ids of mailboxes Graph would not resolve: addresses in, {address: object id} out.
Lookup = Callable[[list[str]], Awaitable[dict[str, str]]]


class RowError(ValueError):
    """A table row that does not read as a subscription; the message names the field."""


class StoreConflict(Exception):
    """Another writer changed the row first (ETag / already exists)."""


@dataclass(frozen=True)
class Entry:
    """A subscription row as read, with what conditional writes need."""

    sub: Subscription
    etag: str
    pending: bool = False          # a resync is owed (cut short, failed, or never done)

    @property
    def key(self) -> str:
        return row_key(self.sub.user_id, self.sub.folder)


@dataclass
class Scan:
    entries: dict[str, Entry] = field(default_factory=dict)
    invalid: dict[str, tuple[str, str]] = field(default_factory=dict)   # row key -> (reason, etag)


def row_key(user_id: str, folder: str) -> str:
    return f"{user_id.lower()}:{folder}"


def resource(user_id: str, folder: str) -> str:
    return f"users/{user_id}/mailFolders('{folder}')/messages"


def normalise_mailbox(address: Any) -> str:
    """A mailbox address, lower case; ValueError when it is not one."""
    if not isinstance(address, str) or not ADDRESS.match(address.strip()):
        raise ValueError(f"not a mailbox address: {str(address)[:80]!r}")
    return address.strip().lower()


def entry_from_row(row: dict[str, Any]) -> Entry:
    """Check every field of a subscription row (RowError names the first bad one)."""
    def text(name: str, limit: int = 256) -> str:
        value = row.get(name)
        if not isinstance(value, str) or len(value) > limit or any(ord(c) < 32 for c in value):
            raise RowError(f"{name}: expected a string of at most {limit} characters")
        return value

    user_id = text("UserId")
    if not GUID.match(user_id):
        raise RowError("UserId: expected an Entra object id (GUID)")
    folder = text("Folder")
    if folder not in FOLDERS:
        raise RowError(f"Folder: expected one of {', '.join(FOLDERS)}")
    if row.get("RowKey") != row_key(user_id, folder):
        raise RowError("RowKey: does not match UserId and Folder")
    sid = text("SubscriptionId")
    if not SUBSCRIPTION_ID.match(sid):
        raise RowError("SubscriptionId: not a subscription id")
    try:
        mailbox = normalise_mailbox(text("Mailbox", 320))
    except ValueError:
        raise RowError("Mailbox: not a mailbox address") from None
    expires = parse_time(text("ExpiresAt", 40))
    if expires is None:
        raise RowError("ExpiresAt: not an ISO 8601 UTC time")
    link = row.get("DeltaLink", "")
    if not isinstance(link, str) or len(link) > MAX_LINK or (link and not link.startswith(("https://",
                                                                                           "http://"))):
        raise RowError("DeltaLink: expected empty or an http(s) URL")
    pending = row.get("ResyncPending", False)
    if not isinstance(pending, bool):
        raise RowError("ResyncPending: expected a boolean")
    etag = row.metadata.get("etag", "") if hasattr(row, "metadata") else ""
    return Entry(Subscription(sid, mailbox, user_id.lower(), folder, iso(expires), link), etag, pending)


class SubscriptionStore:
    """The subscription rows of the push table; implements ``push.contract.SubscriptionLookup``.

    ``table``: an ``azure.data.tables.aio.TableClient`` (``ensure_table`` creates it).
    """

    def __init__(self, table: Any) -> None:
        self.table = table

    async def ensure_table(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            await self.table.create_table()

    async def by_id(self, subscription_id: str) -> Subscription | None:
        """The subscription with this id, or None (unknown, or its rows unreadable: logged)."""
        if not isinstance(subscription_id, str) or not SUBSCRIPTION_ID.match(subscription_id):
            return None
        try:
            index = await self.table.get_entity(INDEX_PARTITION, subscription_id)
            key = index.get("Key")
            if not isinstance(key, str) or not ROW_KEY.match(key):
                raise RowError("Key: expected '{user id}:{folder}'")
            entry = entry_from_row(await self.table.get_entity(PARTITION, key))
        except ResourceNotFoundError:
            return None
        except RowError as exc:
            log.warning("push table: subscription %s has an unreadable row (%s); treated as unknown",
                        subscription_id, exc)
            return None
        return entry.sub if entry.sub.subscription_id == subscription_id else None

    async def get(self, user_id: str, folder: str) -> Entry | None:
        """The row of this mailbox and folder (RowError when it is unreadable)."""
        try:
            return entry_from_row(await self.table.get_entity(PARTITION, row_key(user_id, folder)))
        except ResourceNotFoundError:
            return None

    async def entry(self, sub: Subscription) -> Entry | None:
        """The current row of ``sub``'s mailbox and folder if it still names ``sub``."""
        try:
            found = await self.get(sub.user_id, sub.folder)
        except RowError:
            return None
        return found if found is not None and found.sub.subscription_id == sub.subscription_id else None

    async def scan(self) -> Scan:
        out = Scan()
        async for row in self.table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION}):
            key = str(row.get("RowKey", ""))[:300]
            try:
                e = entry_from_row(row)
            except RowError as exc:
                out.invalid[key] = (str(exc), row.metadata.get("etag", ""))
                continue
            out.entries[e.key] = e
        return out

    async def save(self, sub: Subscription, *, etag: str | None, pending: bool,
                   previous_id: str | None = None) -> Entry:
        """Write ``sub``'s row (create when ``etag`` is None, else replace if unchanged since read) and its
        index row; drop the previous subscription's index row. StoreConflict when another writer won."""
        row = {"PartitionKey": PARTITION, "RowKey": row_key(sub.user_id, sub.folder),
               "SubscriptionId": sub.subscription_id, "Mailbox": sub.mailbox, "UserId": sub.user_id,
               "Folder": sub.folder, "ExpiresAt": sub.expires_at, "DeltaLink": sub.delta_link,
               "ResyncPending": pending}
        try:
            if etag is None:
                meta = await self.table.create_entity(row)
            else:
                meta = await self.table.update_entity(row, mode=UpdateMode.REPLACE, etag=etag,
                                                      match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError) as exc:
            raise StoreConflict(f"{sub.mailbox}/{sub.folder}: the row changed meanwhile") from exc
        except ResourceNotFoundError as exc:   # replaced a row that was deleted meanwhile
            raise StoreConflict(f"{sub.mailbox}/{sub.folder}: the row was deleted meanwhile") from exc
        await self.table.upsert_entity({"PartitionKey": INDEX_PARTITION, "RowKey": sub.subscription_id,
                                        "Key": row["RowKey"]}, mode=UpdateMode.REPLACE)
        if previous_id and previous_id != sub.subscription_id:
            await self._delete_index(previous_id)
        return Entry(sub, meta.get("etag", ""), pending)

    async def set_link(self, sub: Subscription, link: str, *, pending: bool) -> None:
        """Record the folder's delta link (merge: the link belongs to the folder, whichever subscription)."""
        await self._merge(sub, {"DeltaLink": link, "ResyncPending": pending})

    async def set_pending(self, sub: Subscription) -> None:
        await self._merge(sub, {"ResyncPending": True})

    async def _merge(self, sub: Subscription, fields: dict[str, Any]) -> None:
        row = {"PartitionKey": PARTITION, "RowKey": row_key(sub.user_id, sub.folder), **fields}
        with contextlib.suppress(ResourceNotFoundError):   # removed meanwhile: nothing to record
            await self.table.update_entity(row, mode=UpdateMode.MERGE)

    async def delete(self, entry: Entry) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            await self.table.delete_entity(PARTITION, entry.key, etag=entry.etag or None,
                                           match_condition=MatchConditions.IfNotModified if entry.etag
                                           else MatchConditions.Unconditionally)
        await self._delete_index(entry.sub.subscription_id)

    async def _delete_index(self, subscription_id: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            await self.table.delete_entity(INDEX_PARTITION, subscription_id)


@dataclass
class ReconcileSummary:
    """What one reconcile did, for the log and telemetry (``as_dict``). Names are ``mailbox/folder``."""

    created: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)     # Graph no longer had it: recreated + resynced
    removed: list[str] = field(default_factory=list)      # mailbox no longer protected
    resynced: list[str] = field(default_factory=list)     # an owed resync ran
    failed: list[tuple[str, str]] = field(default_factory=list)   # (what, reason)
    invalid_rows: list[tuple[str, str]] = field(default_factory=list)   # (row key, reason)
    unchanged: int = 0
    queued: int = 0                                       # message items queued by resyncs

    def as_dict(self) -> dict[str, Any]:
        return {"created": self.created, "renewed": self.renewed, "repaired": self.repaired,
                "removed": self.removed, "resynced": self.resynced,
                "failed": [{"what": w, "reason": r} for w, r in self.failed],
                "invalid_rows": [{"row": k, "reason": r} for k, r in self.invalid_rows],
                "unchanged": self.unchanged, "queued": self.queued}

    def line(self) -> str:
        counts = {k: (len(v) if isinstance(v, list) else v) for k, v in self.as_dict().items()}
        return json.dumps(counts, sort_keys=True)


def protected_mailboxes(catalog: Any, tenant: Any) -> list[str]:
    """The union of ``protected_recipients`` of the enabled mail rules, resolved like a scan resolves them
    (rule default < tenant config). A rule whose parameters do not resolve contributes nothing (logged)."""
    from detections.params import ParamError, resolve_params

    found: set[str] = set()
    for slug in MAIL_RULES:
        if slug not in catalog or not tenant.for_rule(slug).enabled:
            continue
        try:
            values = resolve_params(catalog[slug], tenant, {})
        except ParamError as exc:
            log.warning("push: rule %s has no usable parameters (%s); its mailboxes get no subscription",
                        slug, exc)
            continue
        for address in values.get("protected_recipients") or []:
            try:
                found.add(normalise_mailbox(address))
            except ValueError as exc:
                log.warning("push: rule %s: %s", slug, exc)
    return sorted(found)


async def ids_from_email_events(backend: Any, mailboxes: list[str]) -> dict[str, str]:
    """The mailboxes' object ids as EmailEvents records them (RecipientObjectId), through the app's own
    query backend (advanced hunting or Sentinel: permissions the app has anyway). Only mailboxes that
    received mail within 30 days are found. Addresses reach KQL only as escaped string literals."""
    from detections.params import kql_string

    if not mailboxes:
        return {}
    listed = ", ".join(kql_string(normalise_mailbox(m)) for m in mailboxes)
    query = ("EmailEvents\n"
             "| where Timestamp > ago(30d)\n"
             f"| where RecipientEmailAddress in~ ({listed})\n"
             "| where isnotempty(RecipientObjectId)\n"
             "| summarize arg_max(Timestamp, RecipientObjectId) by Mailbox = tolower(RecipientEmailAddress)\n"
             "| project Mailbox, RecipientObjectId")
    result = await backend.run(query, timespan=timedelta(days=30))
    out: dict[str, str] = {}
    for row in result.rows:
        mailbox, user_id = row.get("Mailbox"), row.get("RecipientObjectId")
        if isinstance(mailbox, str) and isinstance(user_id, str) and GUID.match(user_id.strip()):
            with contextlib.suppress(ValueError):
                out[normalise_mailbox(mailbox)] = user_id.strip().lower()
    return out


class SubscriptionManager:
    """Creates, renews, repairs and removes the subscriptions, and runs the folders' delta resyncs.

    ``graph``: the msgraph-sdk client (core/graph.py). ``enqueue``: puts ``message`` items on the push
    queue; it is awaited before a delta link is stored, so a failure to queue never skips messages.
    ``verify``: each reconcile also GETs every subscription not due for renewal, so one Graph dropped
    without a lifecycle notification is repaired within a timer period instead of at its renewal.
    """

    def __init__(self, graph: Any, store: SubscriptionStore, settings: PushSettings, enqueue: Enqueue, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 renew_within: timedelta = RENEW_WITHIN, verify: bool = True,
                 resync_bounds: dict[str, int] | None = None) -> None:
        self.graph, self.store, self.settings, self.enqueue = graph, store, settings, enqueue
        self.adapter = graph.request_adapter
        self.clock, self.renew_within, self.verify = clock, renew_within, verify
        # delta_round's max_pages / max_items / page_size (push/resync.py defaults otherwise)
        self.resync_bounds = dict(resync_bounds or {})

    # --- Graph calls ----------------------------------------------------------------------------------

    async def resolve(self, mailbox: str) -> str:
        """The mailbox's Entra object id: ``GET /users/{upn}?$select=id``
        (https://learn.microsoft.com/graph/api/user-get)."""
        q = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=["id"])
        info = self.graph.users.by_user_id(mailbox).to_get_request_information(
            RequestConfiguration(query_parameters=q))
        data = await send_json(self.adapter, info) or {}
        user_id = data.get("id")
        if not isinstance(user_id, str) or not GUID.match(user_id):
            raise GraphResponseError(f"GET /users/{mailbox} answered no object id")
        return user_id.lower()

    def _expiry(self) -> datetime:
        return (self.clock() + MAX_LIFETIME - LIFETIME_MARGIN).replace(microsecond=0)

    def _answered_expiry(self, data: dict[str, Any] | None, asked: datetime) -> str:
        # Graph answers the expiry it set; keep ours when the answer has none (never later than asked).
        answered = parse_time((data or {}).get("expirationDateTime"))
        return iso(answered if answered is not None else asked)

    async def _create_in_graph(self, user_id: str, folder: str) -> tuple[str, str]:
        asked = self._expiry()
        body = GraphSubscription(change_type="created", notification_url=self.settings.notification_url,
                                 lifecycle_notification_url=self.settings.notification_url,
                                 resource=resource(user_id, folder), expiration_date_time=asked,
                                 client_state=self.settings.client_state)
        data = await send_json(self.adapter, self.graph.subscriptions.to_post_request_information(body))
        sid = (data or {}).get("id")
        if not isinstance(sid, str) or not SUBSCRIPTION_ID.match(sid):
            raise GraphResponseError("POST /subscriptions answered no subscription id")
        return sid, self._answered_expiry(data, asked)

    async def _delete_in_graph(self, subscription_id: str) -> None:
        try:
            await send_json(self.adapter, self.graph.subscriptions.by_subscription_id(subscription_id)
                            .to_delete_request_information())
        except Exception as exc:
            if status_of(exc) != 404:     # already gone (expired, removed): nothing to delete
                raise

    async def exists(self, sub: Subscription) -> bool:
        """``GET /subscriptions/{id}``: False on 404 (https://learn.microsoft.com/graph/api/subscription-get)."""
        try:
            await send_json(self.adapter, self.graph.subscriptions.by_subscription_id(sub.subscription_id)
                            .to_get_request_information())
        except Exception as exc:
            if status_of(exc) == 404:
                return False
            raise
        return True

    async def renew(self, entry: Entry) -> Entry:
        """PATCH a new expirationDateTime (also reauthorizes, per the lifecycle docs). APIError 404 when
        Graph no longer has the subscription."""
        asked = self._expiry()
        info = (self.graph.subscriptions.by_subscription_id(entry.sub.subscription_id)
                .to_patch_request_information(GraphSubscription(expiration_date_time=asked)))
        data = await send_json(self.adapter, info)
        sub = replace(entry.sub, expires_at=self._answered_expiry(data, asked))
        try:
            return await self.store.save(sub, etag=entry.etag, pending=entry.pending)
        except StoreConflict:
            return entry       # someone else rewrote the row meanwhile: their state stands

    async def reauthorize(self, sub: Subscription) -> None:
        """``POST /subscriptions/{id}/reauthorize`` (204; https://learn.microsoft.com/graph/api/
        subscription-reauthorize)."""
        await send_json(self.adapter, self.graph.subscriptions.by_subscription_id(sub.subscription_id)
                        .reauthorize.to_post_request_information())

    # --- lifecycle of one mailbox folder -----------------------------------------------------------------

    async def create(self, mailbox: str, user_id: str, folder: str, *, etag: str | None = None,
                     previous: Subscription | None = None) -> tuple[Entry, ResyncResult | None]:
        """A new subscription for the folder (replacing the row read with ``etag``), recorded with the
        previous subscription's delta link when there was one, then the folder resynchronised (from that
        link: the gap; else a baseline). The row is written owing a resync first, so a crash before the
        resync leaves it to the timer."""
        sid, expires = await self._create_in_graph(user_id, folder)
        sub = Subscription(sid, mailbox, user_id, folder, expires, previous.delta_link if previous else "")
        try:
            entry = await self.store.save(sub, etag=etag, pending=True,
                                          previous_id=previous.subscription_id if previous else None)
        except StoreConflict:
            # Another writer made this folder's subscription first: ours would be a duplicate.
            await self._delete_in_graph(sid)
            raise
        return entry, await self.resync(entry)

    async def recreate(self, entry: Entry) -> tuple[Entry, ResyncResult | None]:
        """Graph no longer has ``entry``'s subscription: a new one, and a resync over the gap."""
        return await self.create(entry.sub.mailbox, entry.sub.user_id, entry.sub.folder, etag=entry.etag,
                                 previous=entry.sub)

    async def remove(self, entry: Entry) -> None:
        await self._delete_in_graph(entry.sub.subscription_id)
        await self.store.delete(entry)

    async def resync(self, entry: Entry) -> ResyncResult | None:
        """One bounded delta round for the folder; items queued, then the link stored. None when it failed
        (logged; the row keeps owing a resync, so the timer tries again)."""
        sub = entry.sub
        try:
            result = await delta_round(self.graph, sub, now=self.clock(), **self.resync_bounds)
            if result.items:
                await self.enqueue(result.items)
        except Exception as exc:
            log.warning("push: delta resync of %s/%s failed: %s", sub.mailbox, sub.folder, reason(exc))
            with contextlib.suppress(Exception):
                await self.store.set_pending(sub)
            return None
        await self.store.set_link(sub, result.link, pending=not result.complete)
        if not result.complete:
            log.info("push: delta resync of %s/%s stopped at its bound (%d pages, %d items); continues on "
                     "the next timer run", sub.mailbox, sub.folder, result.pages, len(result.items))
        return result

    # --- the timer's reconcile ------------------------------------------------------------------------------

    async def reconcile(self, mailboxes: Iterable[str], *, lookup: Lookup | None = None) -> ReconcileSummary:
        """Make the table and Graph match the protected mailboxes (module doc). One mailbox's failure is
        recorded in the summary and never stops the others.

        Object ids: ``GET /users/{address}?$select=id`` needs a directory read permission
        (User.ReadBasic.All, https://learn.microsoft.com/graph/api/user-get#permissions). When Graph
        refuses it (403), the id comes from the mailbox's existing rows, else from ``lookup`` (one call
        with every such address; the app's looks them up in EmailEvents' RecipientObjectId:
        ``ids_from_email_events``)."""
        summary = ReconcileSummary()
        wanted: set[str] = set()
        for address in mailboxes:
            try:
                wanted.add(normalise_mailbox(address))
            except ValueError as exc:
                summary.failed.append((str(address)[:80], str(exc)))
        scan = await self.store.scan()
        summary.invalid_rows.extend((k, why) for k, (why, _) in sorted(scan.invalid.items()))
        for k, why in summary.invalid_rows:
            log.warning("push table: row %s is unreadable (%s); a wanted folder's row is replaced", k, why)
        resolved = await self._resolve_all(sorted(wanted), scan, lookup, summary)
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(mailbox: str, user_id: str) -> None:
            async with sem:
                for folder in FOLDERS:
                    try:
                        await self._ensure(mailbox, user_id, folder, scan, summary)
                    except Exception as exc:
                        summary.failed.append((f"{mailbox}/{folder}", reason(exc)))

        await asyncio.gather(*(one(m, uid) for m, uid in sorted(resolved.items())))
        keep = set(resolved.values())
        for entry in scan.entries.values():
            # A mailbox that failed to resolve this run is still protected: keep its subscriptions.
            if entry.sub.user_id in keep or entry.sub.mailbox in wanted:
                continue
            name = f"{entry.sub.mailbox}/{entry.sub.folder}"
            try:
                await self.remove(entry)
                summary.removed.append(name)
            except Exception as exc:
                summary.failed.append((name, f"remove: {reason(exc)}"))
        for name in (summary.created, summary.renewed, summary.repaired, summary.removed, summary.resynced):
            name.sort()
        summary.failed.sort()
        return summary

    async def _resolve_all(self, mailboxes: list[str], scan: Scan, lookup: Lookup | None,
                           summary: ReconcileSummary) -> dict[str, str]:
        resolved: dict[str, str] = {}
        refused: dict[str, str] = {}          # mailbox -> why Graph would not say
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(mailbox: str) -> None:
            async with sem:
                try:
                    resolved[mailbox] = await self.resolve(mailbox)
                except Exception as exc:
                    if status_of(exc) == 403:
                        refused[mailbox] = reason(exc)
                    else:
                        summary.failed.append((mailbox, f"resolve user: {reason(exc)}"))

        await asyncio.gather(*(one(m) for m in mailboxes))
        if not refused:
            return resolved
        known = {e.sub.mailbox: e.sub.user_id for e in scan.entries.values()}
        rest = sorted(m for m in refused if m not in known)
        found: dict[str, str] = {}
        if rest and lookup is not None:
            try:
                found = {normalise_mailbox(k): v.lower() for k, v in (await lookup(rest)).items()
                         if isinstance(v, str) and GUID.match(v)}
            except Exception as exc:
                log.warning("push: looking up the object ids of %d mailbox(es) failed: %s", len(rest),
                            reason(exc))
        for mailbox, why in refused.items():
            user_id = known.get(mailbox) or found.get(mailbox)
            if user_id:
                resolved[mailbox] = user_id
            else:
                summary.failed.append((mailbox, f"resolve user: {why}; no directory read permission "
                                                "(User.ReadBasic.All) and no object id known for it"))
        return resolved

    async def _ensure(self, mailbox: str, user_id: str, folder: str, scan: Scan,
                      summary: ReconcileSummary) -> None:
        name = f"{mailbox}/{folder}"
        key = row_key(user_id, folder)
        entry = scan.entries.get(key)
        if entry is None:
            bad = scan.invalid.get(key)
            _, result = await self.create(mailbox, user_id, folder, etag=bad[1] if bad else None)
            summary.created.append(name)
            self._count(summary, name, result)
            return
        if entry.sub.mailbox != mailbox:   # the same mailbox listed under another address
            entry = replace(entry, sub=replace(entry.sub, mailbox=mailbox))
        expires = parse_time(entry.sub.expires_at)
        due = expires is None or expires - self.clock() <= self.renew_within
        try:
            if due:
                await self.renew(entry)
                summary.renewed.append(name)
            elif self.verify and not await self.exists(entry.sub):
                raise _Gone()
        except Exception as exc:
            if not isinstance(exc, _Gone) and status_of(exc) != 404:
                raise
            _, result = await self.recreate(entry)
            summary.repaired.append(name)
            self._count(summary, name, result)
            return
        if entry.pending:
            result = await self.resync(entry)
            summary.resynced.append(name)
            self._count(summary, name, result)
            return
        if not due:
            summary.unchanged += 1

    @staticmethod
    def _count(summary: ReconcileSummary, name: str, result: ResyncResult | None) -> None:
        if result is None:
            summary.failed.append((name, "delta resync failed (owed; the next run tries again)"))
        else:
            summary.queued += len(result.items)


class _Gone(Exception):
    """GET /subscriptions/{id} answered 404."""
