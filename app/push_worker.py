"""The ``push_worker`` queue function: one push-notification/1 message (push/worker.py), wired to the app.

What a finding becomes is exactly what a scan's findings become (app/runs.py): ``register_run`` records
each new request ``received`` in the ledger (the ledger keeps the first request of an id, so a copy the
push path found first keeps ``"source": "push"`` when a scan finds it again) and the new ones go on
RESPONDER_REQUESTS_QUEUE through the function's output binding; the remediation worker then acts and
sends the run's outcome card. No "found and queued" card first: the outcome card follows within seconds.

Wiring: the app's Graph client (managed identity; anonymous against the loopback fake), kept per event
loop like app/runtime.py's; per invocation, the push table (RESPONDER_PUSH_TABLE) holding the subscription
rows (push/subscriptions.py) and the streaming state (push/state.py), and, for lifecycle items, the
subscription manager (push/lifecycle.py), whose delta resync queues ``message`` items on the push queue
itself (it must have queued them before it stores the new delta link, so an output binding written after
the function returns would not do).

Failures: an invalid message is logged (never its body) and dropped; a transient Graph, storage or
lifecycle failure is raised, so the host retries the message and moves it to ``<queue>-poison`` after
maxDequeueCount (host.json), where ``on_push_poison`` logs and counts it. A notification lost that way
costs time, not coverage: the scheduled rules still find the message from the hunting tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func

from app import runs, telemetry
from app.runtime import Runtime, app_credential
from detections.scan import RuleRun
from push.graphread import GraphTransient, MessageReader
from push.notification import Notification, NotificationInvalid
from push.state import TableState
from push.worker import PushResult, PushRun, PushWorker

log = logging.getLogger(__name__)


@dataclass
class PushServices:
    """What the push worker uses for one invocation."""

    reader: MessageReader
    table: Any                                  # azure.data.tables.aio.TableClient on the push table
    subscriptions: Any                          # push.contract.SubscriptionLookup
    manager: Any = None                         # push.subscriptions.SubscriptionManager (lifecycle items)
    states: dict[str, TableState] = field(default_factory=dict)

    def state_for(self, slug: str) -> TableState:
        if slug not in self.states:
            self.states[slug] = TableState(self.table, slug)
        return self.states[slug]


@dataclass
class _Shared:
    """Per event loop: the Graph client (httpx, with the Inbox-id cache) and the storage credential."""

    reader: MessageReader
    graph: Any
    credential: Any = None
    table_ready: bool = False


# event loop -> id(runtime) -> shared clients (the Runtime is a plain dataclass: not hashable, so not a key).
_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _Shared]] = (
    weakref.WeakKeyDictionary())
# Tests (and a deployment that wires its own store) pass one of these: rt -> async context of PushServices.
ServicesFactory = Callable[[Runtime], AbstractAsyncContextManager[PushServices]]


def _shared_for(rt: Runtime) -> _Shared:
    per_runtime = _shared.setdefault(asyncio.get_running_loop(), {})
    if id(rt) not in per_runtime:
        from core.graph import is_loopback, make_graph_client

        credential = None if is_loopback(rt.settings.graph_base_url) else app_credential(rt.settings)
        graph = make_graph_client(base_url=rt.settings.graph_base_url, credential=credential,
                                  max_retries=rt.graph_retries)
        storage_credential = None
        if not rt.config.storage.connection_string:
            from azure.identity.aio import ManagedIdentityCredential

            storage_credential = ManagedIdentityCredential(client_id=rt.config.storage.client_id or None)
        per_runtime[id(rt)] = _Shared(MessageReader(graph), graph, storage_credential)
    return per_runtime[id(rt)]


@contextlib.asynccontextmanager
async def services(rt: Runtime) -> AsyncIterator[PushServices]:
    """The push services for one invocation. The storage clients (aiohttp sessions) are opened and closed
    with it; the Graph client and the credential are kept for the event loop, like app/runtime.py's."""
    from azure.data.tables.aio import TableClient
    from azure.storage.queue import TextBase64EncodePolicy
    from azure.storage.queue.aio import QueueClient

    from push.subscriptions import SubscriptionManager, SubscriptionStore

    push, st, shared = rt.config.push, rt.config.storage, _shared_for(rt)
    assert push is not None
    encode = TextBase64EncodePolicy()   # the queue trigger reads base64 (host.json messageEncoding)
    if st.connection_string:
        table = TableClient.from_connection_string(st.connection_string, push.table)
        queue = QueueClient.from_connection_string(st.connection_string, push.queue,
                                                   message_encode_policy=encode)
    else:
        table = TableClient(endpoint=st.table_endpoint, table_name=push.table, credential=shared.credential)
        queue = QueueClient(st.queue_endpoint, push.queue, message_encode_policy=encode,
                            credential=shared.credential)

    async def enqueue(items: list[dict[str, Any]]) -> None:
        # The resync's message items, sent before it stores the new delta link (push/subscriptions.py).
        for item in items:
            await queue.send_message(json.dumps(item, separators=(",", ":")))

    async with table, queue:
        store = SubscriptionStore(table)
        if not shared.table_ready:
            await store.ensure_table()   # one table for the subscription rows and the stream state
            shared.table_ready = True
        manager = SubscriptionManager(shared.graph, store, push, enqueue, clock=rt.clock)
        yield PushServices(reader=shared.reader, table=table, subscriptions=store, manager=manager)


def _lifecycle(rt: Runtime, svc: PushServices) -> Callable[[Notification], Any]:
    async def handle(n: Notification) -> None:
        from push.lifecycle import LifecycleFailed, handle_lifecycle
        from push.subscriptions import protected_mailboxes

        item = {"schema": "push-notification/1", "kind": "lifecycle", "subscription_id": n.subscription_id,
                "lifecycle_event": n.lifecycle_event, "tenant_id": n.tenant_id,
                "received_at": n.received_at.isoformat().replace("+00:00", "Z")}
        try:
            protected = protected_mailboxes(rt.config.catalog, rt.config.tenant)
            outcome = await handle_lifecycle(svc.manager, item, protected=protected)
        except LifecycleFailed as exc:
            if exc.transient:
                raise
            log.error("push lifecycle %s: %s; the subscription timer repairs it within 30 minutes",
                      n.describe(), exc)
            return
        log.info("push lifecycle %s: %s %s", n.describe(), outcome.action, outcome.detail)
    return handle


def _emit(rt: Runtime, messages: list[str]) -> Callable[[PushRun], Any]:
    async def emit(run: PushRun) -> None:
        now = rt.clock()
        rule_run = RuleRun(rule=run.rule, params={}, query="", rows=run.rows, requests=run.requests,
                           partial=False, error=None, run_id=run.run_id, problems=list(run.problems))
        queued = runs.register_run(rt.ledger(), rule_run, now)
        messages.extend(queued.messages)
        telemetry.scan_run(rule_run, queued, "push", started=now, finished=rt.clock(), trigger="push")
        log.info("push: rule %s run %s (%s): %d request(s), %d new, %d requeued, %d already settled, "
                 "%d in flight", run.rule.slug, run.run_id, run.fact.mailbox, len(run.requests),
                 len(queued.new), len(queued.requeued), queued.settled, queued.in_flight)
    return emit


# Outcomes someone should look at, as telemetry error classes (docs/telemetry.schema.json).
_ERROR_CLASS = {"invalid": "invalid", "forged": "invalid", "poison": "poison", "graph_refused": "permission"}


def _record(result: PushResult | None, outcome: str, *, delivery: int, mailbox: str | None = None,
            queued: int = 0) -> None:
    n = result.notification if result is not None else None
    rec = telemetry.record("push", state=outcome, trigger=n.kind if n else None, mailbox=mailbox,
                           counts={"requests": len(result.requests) if result else 0, "queued": queued,
                                   "delivery": delivery},
                           error_class=_ERROR_CLASS.get(outcome))
    telemetry.emit(rec, logging.WARNING if rec["error_class"] else logging.INFO)


def _delivery(msg: func.QueueMessage) -> int:
    return int(msg.dequeue_count or 1)


async def on_push_message(rt: Runtime, msg: func.QueueMessage, msgs: func.Out[Any], *,
                          factory: ServicesFactory | None = None) -> dict[str, Any]:
    """One push-notification/1 message (module doc); returns a summary (tests and logs)."""
    push = rt.config.push
    if push is None or not push.enabled:
        # Queued before the push path was turned off: nothing of it runs now (the scheduled path covers it).
        log.info("push message %s ignored: the push path is off (RESPONDER_PUSH)", msg.id)
        msgs.set([])
        return {"outcome": "push_off"}
    async with (factory or services)(rt) as svc:
        return await _process(rt, svc, msg, msgs)


async def _process(rt: Runtime, svc: PushServices, msg: func.QueueMessage,
                   msgs: func.Out[Any]) -> dict[str, Any]:
    messages: list[str] = []
    worker = PushWorker(graph=svc.reader, subscriptions=svc.subscriptions, state_for=svc.state_for,
                        catalog=rt.config.catalog, streaming=_streaming(), tenant=rt.config.tenant,
                        emit=_emit(rt, messages), on_lifecycle=_lifecycle(rt, svc) if svc.manager else None,
                        dry_run=rt.settings.dry_run, tenant_id=rt.settings.tenant_id or "", clock=rt.clock)
    try:
        result = await worker.process(msg.get_body())
    except NotificationInvalid as exc:
        log.error("push message %s is not a valid push-notification/1 (%s): dropped", msg.id, exc)
        _record(None, "invalid", delivery=_delivery(msg))
        msgs.set([])
        return {"outcome": "invalid", "error": str(exc)}
    except GraphTransient as exc:
        log.warning("push message %s (delivery %d) will be retried: %s", msg.id, _delivery(msg), exc)
        raise
    msgs.set(messages)
    mailbox = next((run.fact.mailbox for run in result.runs), None)
    _record(result, result.outcome, delivery=_delivery(msg), mailbox=mailbox, queued=len(messages))
    return {"outcome": result.outcome, "detail": result.detail,
            "requests": [r["id"] for r in result.requests], "queued": len(messages)}


async def on_push_poison(rt: Runtime, msg: func.QueueMessage) -> dict[str, Any]:
    """A push message the host gave up on after maxDequeueCount: logged (ids only) and counted. Nothing
    else: the scheduled path still finds the message, minutes later."""
    from push.notification import parse_notification

    try:
        n: Notification | None = parse_notification(msg.get_body())
    except NotificationInvalid:
        n = None
    log.error("push message %s given up after %d deliveries%s; the scheduled rules still cover it", msg.id,
              _delivery(msg), f" ({n.describe()})" if n else "")
    _record(PushResult(n, "poison") if n else None, "poison", delivery=_delivery(msg))
    return {"outcome": "poison", "notification": n.describe() if n else None}


def _streaming() -> dict[str, Any]:
    from detections.streaming.registry import STREAMING

    return dict(STREAMING)
