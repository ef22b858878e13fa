"""Delta resync of one subscribed folder: the messages created while notifications did not arrive.

Graph's delta query over a mail folder (https://learn.microsoft.com/graph/api/message-delta,
https://learn.microsoft.com/graph/delta-query-messages): ``GET /users/{id}/mailFolders/{folder}/messages/
delta`` with the query options given once, in the first request of the first round (``changeType=created``,
``$select``, ``$filter=receivedDateTime ge ...``: the only ``$filter`` message delta supports); Graph
encodes them into the ``@odata.nextLink`` (more pages of this round) and the ``@odata.deltaLink`` (round
complete: keep it, start the next round from it). Each ``value`` item is a message (``id`` always
returned); an item with ``@removed`` is not a new message (the docs warn that delta may return such
entries even with ``changeType=created``) and is skipped.

* A new subscription's *baseline*: no stored link yet, so the first round is filtered to messages
  received in the last ``BASELINE_LOOKBACK`` (not the whole folder: a shared mailbox may hold years of
  mail); its deltaLink marks "now", so a later resync returns exactly what arrived after the subscription
  was made. If the service refuses the filter (400), the round runs unfiltered (more pages, same items).
* A stored link the service no longer knows (410 Gone, or a sync-state error: "synchronization reset"):
  a new round over the last ``max_age``, so nothing the rules could still act on is skipped.
* A *resync* (``missed``, a recreated subscription, an interrupted resync): one round from the stored
  link, every created message turned into a ``message`` queue item (push/contract.py), processed by the
  push worker like a change notification.

Bounded per call: at most ``max_pages`` pages of ``PAGE_SIZE`` (``Prefer: odata.maxpagesize``) and
``max_items`` items. When the bound is reached first, the round is not complete: the result carries the
``@odata.nextLink`` to resume from (stored as the folder's link) and ``complete=False``; the caller marks
the subscription for another resync (the timer continues it within 30 minutes). Messages received longer
ago than ``max_age`` are not queued: the rules' windows are far shorter, and the scheduled path has had
them for a long time; they only cost message reads.

Links are state we stored (Table storage, hostile) or that Graph answered: a link is followed only when it
is under the Graph client's own base URL, so a forged row cannot send the app's token anywhere else.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kiota_abstractions.api_error import APIError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.request_information import RequestInformation
from msgraph.generated.users.item.mail_folders.item.messages.delta.delta_request_builder import (
    DeltaRequestBuilder,
)

from push.contract import SCHEMA, Subscription
from push.graphjson import GraphResponseError, reason, send_json

log = logging.getLogger(__name__)

PAGE_SIZE = 50                  # Prefer: odata.maxpagesize (a preference: Graph may send fewer)
MAX_PAGES = 10                  # pages per call
MAX_ITEMS = 500                 # queue items per call
BASELINE_LOOKBACK = timedelta(minutes=15)
MAX_AGE = timedelta(hours=24)
SELECT = ["id", "receivedDateTime"]
# Graph message ids are base64 (Exchange REST ids); bounded so a hostile answer cannot bloat the queue.
MESSAGE_ID = re.compile(r"^[A-Za-z0-9+/=_-]{1,512}$")
MAX_LINK = 8192


class ResyncError(Exception):
    """A delta link that cannot be followed (not under the Graph base URL), or an answer Graph never gives."""


@dataclass(frozen=True)
class ResyncResult:
    items: list[dict[str, Any]]        # ``message`` queue items, in the order Graph returned them
    link: str                          # the deltaLink (complete) or the nextLink to resume from
    complete: bool                     # False: the bound was reached; resume from ``link``
    pages: int
    skipped: dict[str, int] = field(default_factory=dict)   # reason -> count (removed, too_old, bad_id)


def message_item(sub: Subscription, message_id: str, now: datetime) -> dict[str, Any]:
    """A ``message`` queue item (push/contract.py) for one message found by a resync."""
    return {"schema": SCHEMA, "kind": "message", "subscription_id": sub.subscription_id,
            "user_id": sub.user_id, "message_id": message_id, "received_at": iso(now)}


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: Any) -> datetime | None:
    """A Graph DateTimeOffset (``2026-12-02T04:30:00Z``, up to 7 fractional digits) as aware UTC; None
    when it is not one."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value.strip())
    if m is None:
        return None
    try:
        ts = datetime.fromisoformat(m.group(1) + (f".{m.group(2)[:6]:0<6}" if m.group(2) else "")
                                    + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    except ValueError:
        return None
    return ts.astimezone(UTC)


def link_allowed(link: str, base_url: str) -> bool:
    """A delta/next link we may send the app's token to: under the client's Graph base URL."""
    base = base_url.rstrip("/").lower() + "/"
    return 0 < len(link) <= MAX_LINK and link.lower().startswith(base) and not any(
        c.isspace() or ord(c) < 32 for c in link)


async def delta_round(graph: Any, sub: Subscription, *, now: datetime, max_pages: int = MAX_PAGES,
                      max_items: int = MAX_ITEMS, max_age: timedelta = MAX_AGE, page_size: int = PAGE_SIZE,
                      baseline_since: datetime | None = None) -> ResyncResult:
    """Follow one round of the folder's delta query from ``sub.delta_link`` (or a baseline round when it
    is empty, from ``baseline_since``, default ``now - BASELINE_LOOKBACK``). See the module doc."""
    if min(max_pages, max_items, page_size) < 1:
        raise ValueError("max_pages, max_items and page_size must be at least 1")
    adapter = graph.request_adapter
    base = adapter.base_url
    oldest = now - max_age

    def baseline(since: datetime, filtered: bool) -> RequestInformation:
        q = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
            change_type="created", select=SELECT,
            filter=f"receivedDateTime ge {iso(since)}" if filtered else None)
        return (graph.users.by_user_id(sub.user_id).mail_folders.by_mail_folder_id(sub.folder).messages
                .delta.to_get_request_information(RequestConfiguration(query_parameters=q)))

    since: datetime | None = None          # set while the round is a baseline (no stored link)
    filtered = False
    if sub.delta_link:
        if not link_allowed(sub.delta_link, base):
            raise ResyncError(f"stored delta link of {sub.mailbox}/{sub.folder} is not under the Graph base "
                              "URL; refusing to follow it")
        info = _raw(adapter, sub.delta_link)
    else:
        since = (baseline_since or now - BASELINE_LOOKBACK).replace(microsecond=0)
        oldest, filtered = max(oldest, since), True
        info = baseline(since, True)
    items: list[dict[str, Any]] = []
    skipped: dict[str, int] = {}
    pages = 0
    while True:
        info.headers.try_add("Prefer", f"odata.maxpagesize={page_size}")
        try:
            page = await send_json(adapter, info)
        except APIError as exc:
            if pages:
                raise
            if since is None and _sync_reset(exc):
                # "Synchronization reset" (https://learn.microsoft.com/graph/delta-query-overview
                # #synchronization-reset): the service no longer has this token's state (Outlook keeps a
                # bounded cache of them) and the client must start again. A new round over what arrived
                # within max_age: everything the rules could still act on, nothing older.
                log.warning("delta of %s/%s: the stored delta link expired (%s); starting again over the "
                            "last %s", sub.mailbox, sub.folder, reason(exc), max_age)
                since = oldest.replace(microsecond=0)
                info, filtered = baseline(since, True), True
                continue
            if not (filtered and exc.response_status_code == 400):
                raise
            # The docs list receivedDateTime ge as the one $filter message delta supports ("limited
            # support"); a service that refuses it still does the unfiltered round, only in more pages.
            # Messages older than ``since`` are then skipped (too_old), so the outcome is the same.
            log.info("delta of %s/%s refused the receivedDateTime filter (%s); the round runs without it",
                     sub.mailbox, sub.folder, reason(exc))
            info, filtered = baseline(since or oldest, False), False
            continue
        pages += 1
        if page is None or not isinstance(page.get("value"), list):
            raise GraphResponseError(f"delta of {sub.mailbox}/{sub.folder} answered no `value` list")
        for entry in page["value"]:
            why = _skip(entry, oldest)
            if why:
                skipped[why] = skipped.get(why, 0) + 1
            else:
                items.append(message_item(sub, entry["id"], now))
        next_link, delta_link = page.get("@odata.nextLink"), page.get("@odata.deltaLink")
        if isinstance(delta_link, str) and delta_link:
            if not link_allowed(delta_link, base):
                raise ResyncError(f"delta of {sub.mailbox}/{sub.folder} answered a deltaLink outside the "
                                  "Graph base URL")
            return ResyncResult(items, delta_link, True, pages, skipped)
        if not (isinstance(next_link, str) and link_allowed(next_link, base)):
            raise GraphResponseError(f"delta of {sub.mailbox}/{sub.folder} answered neither a usable "
                                     "@odata.nextLink nor an @odata.deltaLink")
        if pages >= max_pages or len(items) >= max_items:
            return ResyncResult(items, next_link, False, pages, skipped)
        info = _raw(adapter, next_link)


def _sync_reset(exc: APIError) -> bool:
    """Graph's answer to a delta token it no longer has: 410 Gone, or 400 with a sync-state error code
    (``syncStateNotFound``, ``SyncStateInvalid``, ``ErrorInvalidSyncStateData``)."""
    code = str(getattr(getattr(exc, "error", None), "code", "") or "")
    status = exc.response_status_code
    return status == 410 or (status == 400 and "syncstate" in code.lower())


def _raw(adapter: Any, url: str) -> RequestInformation:
    # A link as Graph gave it, with its encoded query options; sent through the same adapter (auth, retries).
    return DeltaRequestBuilder(adapter, url).to_get_request_information()


def _skip(entry: Any, oldest: datetime) -> str | None:
    if not isinstance(entry, dict):
        return "bad_item"
    if "@removed" in entry:
        return "removed"
    msg_id = entry.get("id")
    if not isinstance(msg_id, str) or not MESSAGE_ID.match(msg_id):
        return "bad_id"
    received = parse_time(entry.get("receivedDateTime"))
    if received is not None and received < oldest:
        return "too_old"
    return None
