"""Lifecycle notifications of the subscriptions (``lifecycle`` queue items, push/contract.py).

What Graph asks (https://learn.microsoft.com/graph/change-notifications-lifecycle-events):
* ``reauthorizationRequired``: call ``POST /subscriptions/{id}/reauthorize``, or renew it with a PATCH
  (which reauthorizes too); otherwise delivery eventually pauses. We renew when the subscription is due
  for renewal anyway, else reauthorize. A 404 means Graph no longer has it: recreate and resync.
* ``subscriptionRemoved``: Graph removed the subscription; create a new one, then sync what changed
  meanwhile with a delta query.
* ``missed``: some notifications were not delivered; resync with a delta query.
The queue item names only a subscription id; it is acted on only when our table knows that id (a forged
or stale id is ignored and logged: it can make us do nothing but a table read). A mailbox that is no
longer protected gets its subscription removed instead of recreated.

``handle_lifecycle`` raises ``LifecycleFailed`` when Graph or storage fails, with ``transient`` telling the
caller whether a retry (queue redelivery) may help; the timer repairs the rest within 30 minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from push.contract import LIFECYCLE_EVENTS, SCHEMA
from push.graphjson import reason, status_of
from push.resync import ResyncResult, parse_time
from push.subscriptions import SUBSCRIPTION_ID, StoreConflict, SubscriptionManager

log = logging.getLogger(__name__)

FIELDS = frozenset({"schema", "kind", "subscription_id", "lifecycle_event", "tenant_id", "received_at"})


class LifecycleError(ValueError):
    """A lifecycle queue item that does not follow push-notification/1; the message names the field."""


class LifecycleFailed(Exception):
    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class LifecycleOutcome:
    event: str
    subscription_id: str
    action: str          # reauthorized | renewed | recreated | resynced | removed | ignored
    detail: str = ""
    queued: int = 0      # message items queued by a resync
    complete: bool = True   # False: the resync stopped at its bound (the timer continues it)


def parse_lifecycle(item: Any) -> tuple[str, str]:
    """(subscription id, lifecycle event) of a ``lifecycle`` item; LifecycleError names the bad field."""
    if not isinstance(item, Mapping):
        raise LifecycleError("message: expected a JSON object")
    unknown = set(item) - FIELDS
    if unknown:
        raise LifecycleError(f"{sorted(unknown)[0]}: unknown field")
    if item.get("schema") != SCHEMA:
        raise LifecycleError(f"schema: expected {SCHEMA!r}")
    if item.get("kind") != "lifecycle":
        raise LifecycleError("kind: expected 'lifecycle'")
    sid = item.get("subscription_id")
    if not isinstance(sid, str) or not SUBSCRIPTION_ID.match(sid):
        raise LifecycleError("subscription_id: not a subscription id")
    event = item.get("lifecycle_event")
    if event not in LIFECYCLE_EVENTS:
        raise LifecycleError(f"lifecycle_event: expected one of {', '.join(LIFECYCLE_EVENTS)}")
    return sid, str(event)


async def handle_lifecycle(manager: SubscriptionManager, item: Any, *,
                           protected: Collection[str] | None = None) -> LifecycleOutcome:
    """Act on one lifecycle item (module doc). ``protected``: the protected mailboxes now (None: do not
    check); a subscription of a mailbox outside it is removed rather than recreated."""
    sid, event = parse_lifecycle(item)
    sub = await manager.store.by_id(sid)
    if sub is None:
        log.warning("push lifecycle %s for unknown subscription %s: ignored (forged, or already replaced)",
                    event, sid)
        return LifecycleOutcome(event, sid, "ignored", "unknown subscription")
    entry = await manager.store.entry(sub)
    name = f"{sub.mailbox}/{sub.folder}"
    try:
        if entry is None:   # replaced between the two reads: the new subscription is not this event's
            return LifecycleOutcome(event, sid, "ignored", "subscription replaced meanwhile")
        if protected is not None and sub.mailbox not in protected:
            await manager.remove(entry)
            return LifecycleOutcome(event, sid, "removed", f"{name} is no longer protected")
        if event == "missed":
            return _resynced(event, sid, "resynced", name, await manager.resync(entry))
        if event == "subscriptionRemoved":
            _, result = await manager.recreate(entry)
            return _resynced(event, sid, "recreated", name, result)
        # reauthorizationRequired
        expires = parse_time(sub.expires_at)
        try:
            if expires is None or expires - manager.clock() <= manager.renew_within:
                await manager.renew(entry)
                return LifecycleOutcome(event, sid, "renewed", name)
            await manager.reauthorize(sub)
            return LifecycleOutcome(event, sid, "reauthorized", name)
        except Exception as exc:
            if status_of(exc) != 404:
                raise
        _, result = await manager.recreate(entry)
        return _resynced(event, sid, "recreated", name, result)
    except StoreConflict as exc:
        # Another writer (the timer, a concurrent event) replaced the row first: nothing left to do here.
        return LifecycleOutcome(event, sid, "ignored", str(exc))
    except Exception as exc:
        status = status_of(exc)
        transient = status is None or status in (408, 429) or status >= 500
        raise LifecycleFailed(f"{event} for {name}: {reason(exc)}", transient=transient) from exc


def _resynced(event: str, sid: str, action: str, name: str, result: ResyncResult | None) -> LifecycleOutcome:
    if result is None:
        # The subscription is in place; the resync is owed and recorded (ResyncPending): the timer runs it.
        return LifecycleOutcome(event, sid, action, f"{name}: delta resync failed, owed to the timer",
                                complete=False)
    return LifecycleOutcome(event, sid, action, name, queued=len(result.items), complete=result.complete)
