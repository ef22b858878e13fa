"""The push path's subscription side in the function app (issue 15, docs/push.md).

* ``on_timer`` (function ``push_subscriptions``, every 30 minutes): reconcile the Graph subscriptions with
  the protected mailboxes (push/subscriptions.py): create, renew, repair, remove, continue owed resyncs.
  Mailbox object ids come from ``GET /users/{address}``, or, when the app has no directory permission,
  from the push table and then EmailEvents (the app's query backend).
  One summary line in the log (counts), plus one warning per failure.
* ``on_lifecycle``: what the push worker calls for a ``lifecycle`` queue item (push/lifecycle.py).

RESPONDER_PUSH=off (the default): the timer does nothing and says so once per process; a lifecycle item
is ignored. Resyncs put ``message`` items on RESPONDER_PUSH_QUEUE themselves (base64, as the queue
trigger reads it: host.json ``messageEncoding``), before the folder's delta link moves on, so a failure
to queue never skips a message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceExistsError

from core.settings import ConfigError, PushSettings
from push.lifecycle import LifecycleError, LifecycleFailed, LifecycleOutcome, handle_lifecycle
from push.subscriptions import (
    ReconcileSummary,
    SubscriptionManager,
    SubscriptionStore,
    ids_from_email_events,
    protected_mailboxes,
)

log = logging.getLogger(__name__)

FUNCTION_NAME = "push_subscriptions"
SCHEDULE = "0 */30 * * * *"          # NCRONTAB: every 30 minutes (renewal is due a day before expiry)
SEND_CONCURRENCY = 16

_off_said = False


def push_settings(env: Mapping[str, str] | None = None) -> PushSettings | None:
    """The push settings, or None when they are wrong (logged with the setting's name, never its value)."""
    try:
        return PushSettings.from_env(os.environ if env is None else env)
    except ConfigError as exc:
        log.error("push path: %s; the push path does nothing until it is fixed", exc)
        return None


def _off(what: str) -> None:
    global _off_said
    if not _off_said:
        _off_said = True
        log.info("push path is off (RESPONDER_PUSH=off): %s", what)


async def on_timer(rt: Any, timer: Any = None, *,
                   push: PushSettings | None = None) -> ReconcileSummary | None:
    """Reconcile the subscriptions; the summary (None when the push path is off or misconfigured).
    ``push``: the settings (default: read from the app settings now)."""
    push = push or push_settings()
    if push is None:
        return None
    if not push.enabled:
        _off("the subscription timer does nothing")
        return None
    async def lookup(mailboxes: list[str]) -> dict[str, str]:
        # Object ids Graph would not give (no directory permission): EmailEvents' RecipientObjectId. The
        # backend is only built when needed (reconcile logs a failure here and goes on without the ids).
        return await ids_from_email_events(await rt.backend(), mailboxes)

    async with _services(rt, push) as services:
        summary = await services.manager.reconcile(protected_mailboxes(rt.config.catalog, rt.config.tenant),
                                                   lookup=lookup)
    log.info("push subscriptions: %s", summary.line())
    for what, why in summary.failed:
        log.warning("push subscriptions: %s: %s", what, why)
    return summary


async def on_lifecycle(rt: Any, item: Any, *, push: PushSettings | None = None) -> LifecycleOutcome | None:
    """Act on one ``lifecycle`` queue item. A malformed item or a permanent failure is logged and dropped
    (a retry cannot help; the timer repairs within 30 minutes); a transient failure raises, so the queue
    redelivers the item."""
    push = push or push_settings()
    if push is None or not push.enabled:
        if push is not None:
            _off("lifecycle notifications are ignored")
        return None
    protected = set(protected_mailboxes(rt.config.catalog, rt.config.tenant))
    try:
        async with _services(rt, push) as services:
            outcome = await handle_lifecycle(services.manager, item, protected=protected)
    except LifecycleError as exc:
        log.warning("push lifecycle item refused: %s", exc)
        return None
    except LifecycleFailed as exc:
        if exc.transient:
            raise
        log.error("push lifecycle: %s; the subscription timer repairs it", exc)
        return None
    log.info("push lifecycle %s for %s: %s %s", outcome.event, outcome.subscription_id, outcome.action,
             outcome.detail)
    return outcome


# --- services, per call: the timer runs every 30 minutes and lifecycle items are rare, so the storage
# clients are opened and closed around each call (the Graph client is the app's, kept per event loop).

@dataclass
class _Services:
    manager: SubscriptionManager
    queue: Any


_ensured: set[tuple[str, str, str]] = set()     # (account, table, queue) created by this process


@contextlib.asynccontextmanager
async def _services(rt: Any, push: PushSettings) -> AsyncIterator[_Services]:
    graph = (await rt._loop_services()).graph      # the app's one Graph client for this loop
    table, queue = _storage_clients(rt.config.storage, push)
    async with table, queue:
        store = SubscriptionStore(table)
        key = (repr(rt.config.storage), push.table, push.queue)
        if key not in _ensured:
            await store.ensure_table()
            with contextlib.suppress(ResourceExistsError):
                await queue.create_queue()
            _ensured.add(key)

        async def enqueue(items: list[dict[str, Any]]) -> None:
            sem = asyncio.Semaphore(SEND_CONCURRENCY)

            async def send(item: dict[str, Any]) -> None:
                async with sem:
                    body = json.dumps(item, separators=(",", ":"), sort_keys=True).encode("utf-8")
                    await queue.send_message(base64.b64encode(body).decode("ascii"))

            await asyncio.gather(*(send(i) for i in items))

        yield _Services(SubscriptionManager(graph, store, push, enqueue, clock=rt.clock), queue)


def _storage_clients(storage: Any, push: PushSettings) -> tuple[Any, Any]:
    from azure.data.tables.aio import TableClient
    from azure.storage.queue.aio import QueueClient

    if storage.connection_string:
        return (TableClient.from_connection_string(storage.connection_string, push.table),
                QueueClient.from_connection_string(storage.connection_string, push.queue))
    from azure.identity.aio import ManagedIdentityCredential

    credential = ManagedIdentityCredential(client_id=storage.client_id or None)
    return (TableClient(endpoint=storage.table_endpoint, table_name=push.table, credential=credential),
            QueueClient(account_url=storage.queue_endpoint, queue_name=push.queue, credential=credential))
