"""The demo's push phase (issue 15): a new campaign caught by Graph change notifications, not by a scan.

On Azurite and a fake Graph of its own (with its push side, devtools/fakegraph_push.py) and the sample
tenant's config: the ``push_subscriptions`` timer subscribes every protected mailbox (Inbox and Sent
Items; the fake validates the notification URL over HTTP), a consumer sender mails the shared mailboxes
one after another, the fake delivers each change notification over HTTP after a latency drawn from the
documented distribution (devtools/pushlatency.py) to ``api/push/notifications`` served on a loopback port
(devtools/pushserver.py), and the app's own functions run as the host would run them: the endpoint queues,
``push_worker`` reads each message and runs the streaming rules, ``worker`` moves the copies to Junk.

Time: the fake's clock is simulated and moved in small steps; after each step the queues are drained, so
"in Junk" is measured on the same clock as "arrived". No hunting query runs (the backend refuses). Results
go to ``<output>/push/`` (ledger, cards, timeline) and the summary's ``push`` section, apart from the
scheduled demo's, whose ledger is compared with the sample's truth.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from devtools.loopback import Out

CLIENT_STATE = "demo-push-client-state-" + "0123456789abcdef" * 2   # 32+ characters, as the app requires
CONSUMER_SENDER = "eve.smith@gmail.com"
PARTNER_SENDER = "orders@fabrikam.com"
STEP_S = 5.0                      # simulated seconds per step
MAX_SIMULATED_S = 15 * 60         # the campaign takes a few minutes; stop in any case
COPY_GAP_S = 40.0                 # a copy every 40 s: the campaign completes while notifications arrive
RULE = "consumer-sender-to-shared-mailboxes"


@dataclass
class PushDemo:
    """What the push phase did (the summary's ``push`` section)."""

    skipped: str | None = None
    subscriptions: int = 0
    handshakes_ok: int = 0
    notifications: dict[str, int] = field(default_factory=dict)
    endpoint_answers: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    copies: list[dict[str, Any]] = field(default_factory=list)   # per copy: arrived, notified, in junk
    partner_folder: str | None = None
    hunting_queries: int = 0
    card_says_push: bool = False
    cards: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        if self.skipped:
            return {"skipped": self.skipped}
        junk = [c for c in self.copies if c["in_junk_s"] is not None]
        inbox = [c["in_junk_s"] - c["arrived_s"] for c in junk]
        return {"subscriptions": self.subscriptions, "handshakes_ok": self.handshakes_ok,
                "notifications": self.notifications, "endpoint_answers": self.endpoint_answers,
                "requests": self.requests, "sources": self.sources,
                "copies": len(self.copies), "copies_in_junk": len(junk),
                "inbox_time_s": {"p50": statistics.median(inbox), "max": max(inbox)} if inbox else None,
                "timeline": self.copies, "partner_mail_folder": self.partner_folder,
                "hunting_queries": self.hunting_queries, "card_says_push": self.card_says_push,
                "cards": self.cards}


class _NoHunting:
    """The push path never needs the hunting tables: a query would be a bug (counted, and refused)."""

    name = "none"

    def __init__(self) -> None:
        self.queries = 0

    async def run(self, query: str, **_: Any) -> Any:
        self.queries += 1
        raise RuntimeError("the push phase ran a hunting query")


async def run_push_phase(out: Path, tenant_path: Path, connection_string: str | None, tenant_id: str,
                         step: Callable[[str], None] = lambda _: None) -> PushDemo:
    if connection_string is None:
        return PushDemo(skipped="the push path needs Azurite (its queue and table); run without --no-azurite")
    from app import handlers
    from app.bootstrap import AppConfig, StorageConfig
    from app.runtime import Runtime
    from core.settings import PushSettings, Settings
    from core.tenant import load_tenant_config
    from detections.catalog import load_catalog
    from devtools.demo_queue import AzuriteQueue
    from devtools.fakegraph import FakeGraph
    from devtools.pushserver import PushServer, azurite_sink
    from notifications.teams import FileNotifier
    from push.subscriptions import protected_mailboxes

    folder = out / "push"
    folder.mkdir(parents=True, exist_ok=True)
    result = PushDemo()
    catalog, tenant = load_catalog(), load_tenant_config(tenant_path)
    boxes = protected_mailboxes(catalog, tenant)
    backend = _NoHunting()
    notifier = FileNotifier(folder / "cards")
    with FakeGraph(tenant_id=tenant_id) as fake:
        fake.push.configure(manual=True, seed=15)
        for box in boxes:
            fake.users.add(box)
        settings = Settings.from_env({"RESPONDER_TENANT_ID": tenant_id, "AZURE_CLIENT_ID": "demo",
                                      "RESPONDER_GRAPH_BASE_URL": fake.base_url,
                                      "RESPONDER_EMAIL_STRATEGY": "mailbox", "RESPONDER_BACKEND": "defender",
                                      "RESPONDER_LEDGER_TABLE": "demopushledger",
                                      "RESPONDER_REQUESTS_QUEUE": "demo-push-requests"}, require=False)
        config = AppConfig(settings=settings, tenant=tenant, catalog=catalog, timers=(),
                           storage=StorageConfig(connection_string=connection_string))
        rt = Runtime(config, clock=fake.push.now, backend_factory=lambda *_: backend, notifier=notifier,
                     graph_retries=0)
        requests_q = AzuriteQueue(connection_string, settings.requests_queue)
        push_queue = "demo-push-notifications"
        push_q = AzuriteQueue(connection_string, push_queue)
        with PushServer(rt, on_queue=azurite_sink(connection_string, push_queue)) as server:
            # Built directly: from the app settings the URL must be https; the loopback server is http.
            push = PushSettings(enabled=True, notification_url=server.url, client_state=CLIENT_STATE,
                                queue=push_queue, table="demopushstate")
            rt.config = dataclasses.replace(config, push=push)

            async def drain() -> int:
                """The host's queue triggers: push queue -> push_worker -> requests queue -> worker."""
                handled = 0
                while True:
                    batch = push_q.receive(16) + requests_q.receive(16)
                    if not batch:
                        return handled
                    for d in batch:
                        msg = QueueMessage(id=str(handled), body=d.body.encode("utf-8"),
                                           dequeue_count=d.dequeue_count)
                        if _is_push(d.body):
                            o, poison = Out(), Out()
                            await handlers.on_push_message(rt, msg, o, poison)
                            if poison.value:     # the demo queues only valid notifications
                                raise RuntimeError("demo: a push message went to the poison queue")
                            for body in o.value or []:
                                requests_q.send(body)
                            push_q.delete(d)
                        else:
                            await handlers.on_message(rt, msg)
                            requests_q.delete(d)
                        handled += 1

            step(f"push path: subscribing {len(boxes)} protected mailboxes (Inbox and Sent Items)")
            await handlers.on_push_subscriptions(rt, TimerRequest(past_due=False))
            result.subscriptions = len(fake.push.subscriptions)
            result.handshakes_ok = sum(v.ok for v in fake.push.validations)
            await drain()                      # the baseline (empty mailboxes: nothing)

            step(f"push path: a consumer sender mails {len(boxes)} shared mailboxes, "
                 f"{COPY_GAP_S:.0f} s apart")
            start = fake.push.now()
            plan = [(i * COPY_GAP_S, box) for i, box in enumerate(boxes)]
            copies: list[dict[str, Any]] = []
            partner = None
            elapsed = 0.0
            while elapsed <= MAX_SIMULATED_S:
                while plan and plan[0][0] <= elapsed:
                    _, box = plan.pop(0)
                    msg = fake.push.deliver_inbound(box, sender=CONSUMER_SENDER, subject="Quick question")
                    copies.append({"mailbox": box, "imid": msg.internet_message_id, "id": msg.id,
                                   "arrived_s": elapsed, "notified_s": None, "in_junk_s": None})
                    if partner is None:   # a partner's order to the first mailbox: never touched
                        partner = (box, fake.push.deliver_inbound(box, sender=PARTNER_SENDER,
                                                                  subject="Order 7").internet_message_id)
                fake.push.advance(STEP_S)
                elapsed = (fake.push.now() - start).total_seconds()
                await drain()
                for c in copies:
                    if c["notified_s"] is None:
                        c["notified_s"] = _notified(fake, c["id"], start)
                    junked = fake.mailboxes.folder_of(c["mailbox"], c["imid"]) == "junkemail"
                    if c["in_junk_s"] is None and junked:
                        c["in_junk_s"] = elapsed
                if not plan and all(c["in_junk_s"] is not None for c in copies):
                    break
            step("push path: done; writing its ledger and cards")
            result.notifications = {k: v for k, v in fake.push.stats.items() if v}
            answers: dict[str, int] = {}
            for kind, status in server.requests:
                answers[f"{kind} {status}"] = answers.get(f"{kind} {status}", 0) + 1
            result.endpoint_answers = answers
            result.copies = [{k: v for k, v in c.items() if k not in ("imid", "id")} for c in copies]
            result.partner_folder = fake.mailboxes.folder_of(*partner) if partner else None
        rows = rt.ledger().list()
        result.requests = len(rows)
        for r in rows:
            src = str(r.request.get("source"))
            result.sources[src] = result.sources.get(src, 0) + 1
        (folder / "ledger.json").write_text(json.dumps(
            [{"request_id": r.request_id, "rule": r.rule, "action": r.action, "target": r.target,
              "state": r.state, "source": r.request.get("source")} for r in rows], indent=2) + "\n",
            encoding="utf-8")
        result.cards = [str(p) for p in notifier.paths]
        result.card_says_push = any("found by the push path" in p.read_text(encoding="utf-8")
                                    for p in notifier.paths)
        result.hunting_queries = backend.queries
        # The runtime keeps its per-loop clients for the life of the process (the Functions worker's
        # loop); this loop goes on, so the mailbox strategy's lease table client is closed here.
        services = rt._loops.get(asyncio.get_running_loop())
        if services is not None and services.mailbox_slots is not None:
            await services.mailbox_slots.table.close()
    (folder / "timeline.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return result


def _is_push(body: str) -> bool:
    try:
        return json.loads(body).get("schema") == "push-notification/1"
    except (ValueError, AttributeError):
        return False


def _notified(fake: Any, message_id: str, start: datetime) -> float | None:
    for n in fake.push.notices:
        if n.kind == "change" and n.message_id == message_id and n.delivered_at is not None:
            return (n.delivered_at - start).total_seconds()
    return None
