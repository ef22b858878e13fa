"""The push path end to end with real parts (issue 15, "Done means"): Azurite, and the fake Graph sending real
notifications over HTTP to the HTTP function.

push_subscriptions timer -> msgraph-sdk -> fake Graph POST /subscriptions -> the fake's validation handshake
over HTTP to ``api/push/notifications`` (served on a loopback port, devtools/pushserver.py) -> a campaign
lands in three protected mailboxes -> the fake delivers its change notifications over HTTP to the same
function -> queue output (base64, as the host writes it) on the Azurite push queue -> push_worker (reads
each message through msgraph-sdk, runs the streaming rules with their state in Azurite tables) -> requests
(``source: push``) on the Azurite requests queue -> worker -> the copies in Junk -> ledger and Teams card
(at a loopback webhook) say the push path found them. No hunting query runs at all.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient

from core.settings import PushSettings
from devtools.fakegraph import FakeGraph
from devtools.pushserver import PushServer, azurite_sink
from devtools.webhook_sink import WebhookSink
from notifications.teams import TeamsWebhookNotifier
from tests.functions.conftest import PROTECTED, RULE, Env, Out

TENANT = "00000000-0000-0000-0000-00000000abcd"     # RESPONDER_TENANT_ID in tests/functions/conftest.py
SENDER = "eve.smith@gmail.com"
CLIENT_STATE = "integration-client-state-" + "q" * 24
# Graph's documented maximum notification latency (devtools/pushlatency.py): every notification is in.
MAX_LATENCY_S = 180


@dataclasses.dataclass
class PushApp:
    env: Env
    fake: FakeGraph
    server: PushServer
    sink: WebhookSink
    push_queue: QueueClient
    requests_queue: QueueClient

    def sync_clock(self) -> None:
        """The app runs on the fake's simulated clock (subscription expiry, the rules' windows)."""
        self.env.clock.now = self.fake.push.now()


@pytest.fixture
def app(make_env: Any, storage_conn: str, unique_name: str) -> Iterator[PushApp]:
    with FakeGraph(tenant_id=TENANT) as fake, WebhookSink() as sink:
        fake.push.configure(manual=True)
        for box in PROTECTED:
            fake.users.add(box)
        env = make_env(graph_base_url=fake.base_url, email_strategy="mailbox",
                       notifier=TeamsWebhookNotifier(sink.url, retries=0), backend=NoHunting())
        push_queue = unique_name + "pq"
        with PushServer(env.rt, on_queue=azurite_sink(storage_conn, push_queue)) as server:
            # Built directly: from the app settings the URL must be https, which the loopback server is not.
            push = PushSettings(enabled=True, notification_url=server.url, client_state=CLIENT_STATE,
                                queue=push_queue, table=unique_name + "push")
            env.rt.config = dataclasses.replace(env.rt.config, push=push)
            requests_queue = QueueClient.from_connection_string(storage_conn, env.rt.settings.requests_queue)
            requests_queue.create_queue()
            a = PushApp(env, fake, server, sink, QueueClient.from_connection_string(storage_conn, push_queue),
                        requests_queue)
            a.sync_clock()
            yield a


class NoHunting:
    """The query backend: the push path must never need it."""

    name = "none"

    async def run(self, query: str, **_: Any) -> Any:
        raise AssertionError("the push path ran a hunting query")


def host_deliver(app: PushApp, queue: QueueClient, function: str) -> list[list[str]]:
    """The queue trigger: receive, base64-decode, call the function, delete on success; what each call put in
    its output binding (push_worker's requests) is written to the requests queue, as the host does."""
    outputs: list[list[str]] = []
    while True:
        batch = list(queue.receive_messages(messages_per_page=8, visibility_timeout=60, max_messages=8))
        if not batch:
            return outputs
        for qm in batch:
            msg = QueueMessage(id=qm.id, body=base64.b64decode(qm.content), dequeue_count=qm.dequeue_count,
                               pop_receipt=qm.pop_receipt)
            if function == "push_worker":
                out, poison = Out(), Out()
                app.env.call(function, msg, out, poison)
                outputs.append(list(out.value or []))
                for body in out.value or []:
                    app.requests_queue.send_message(base64.b64encode(body.encode("utf-8")).decode("ascii"))
                assert poison.value is None, "a valid notification went to the poison queue"
            else:
                app.env.call(function, msg)
            queue.delete_message(qm)


def test_a_campaign_is_junked_through_the_push_path_and_the_ledger_and_card_say_so(app: PushApp) -> None:
    fake, env = app.fake, app.env
    # 1. The subscription timer subscribes each protected mailbox; Graph validates the URL over HTTP first.
    env.call("push_subscriptions", TimerRequest(past_due=False))
    assert len(fake.push.subscriptions) == 2 * len(PROTECTED)          # inbox and sentitems each
    assert {s.notification_url for s in fake.push.subscriptions} == {app.server.url}
    assert {(s.client_state, s.lifecycle_url) for s in fake.push.subscriptions} == {
        (CLIENT_STATE, app.server.url)}
    assert fake.push.validations and all(v.ok for v in fake.push.validations)
    assert {kind for kind, _ in app.server.requests} == {"handshake"}
    assert host_deliver(app, app.push_queue, "push_worker") == []      # empty mailboxes: no baseline

    # 2. The campaign: one consumer sender mails the three shared mailboxes; a partner mails one of them.
    nmids = [f"5c1e2f3a-0b4d-4e6f-8a9b-0c1d2e3f4a5{i}" for i in range(3)]
    copies = [fake.push.deliver_inbound(box, sender=SENDER, subject="Quick question", network_message_id=nmid)
              for box, nmid in zip(PROTECTED, nmids, strict=True)]
    partner = fake.push.deliver_inbound(PROTECTED[0], sender="orders@fabrikam.com", subject="Order 7")
    fake.push.advance(MAX_LATENCY_S)
    app.sync_clock()
    assert fake.push.stats["delivered"] == 4
    assert [status for kind, status in app.server.requests if kind == "notifications"] == [202] * 4

    # 3. The push worker reads each message and runs the streaming rules: the third copy completes the
    # evidence, and the rule's requests cover all three copies.
    outputs = host_deliver(app, app.push_queue, "push_worker")
    requests = [json.loads(body) for out in outputs for body in out]
    assert sorted(r["target"]["network_message_id"] for r in requests) == nmids
    assert {(r["source"], r["rule"], r["action"]) for r in requests} == {("push", RULE, "move_to_junk")}

    # 4. The remediation worker: every copy in Junk through the real SDK, the partner's mail untouched.
    assert host_deliver(app, app.requests_queue, "worker") == []
    for box, msg in zip(PROTECTED, copies, strict=True):
        assert fake.mailboxes.folder_of(box, msg.internet_message_id) == "junkemail"
    assert fake.mailboxes.folder_of(PROTECTED[0], partner.internet_message_id) == "inbox"

    # 5. The ledger keeps the push path's requests; the outcome card says the push path found them.
    rows = env.rt.ledger().list(rule=RULE)
    assert sorted(r.target["network_message_id"] for r in rows) == nmids
    assert {(r.state, r.request["source"]) for r in rows} == {("confirmed", "push")}
    (card,) = app.sink.wait_for(1)
    assert card.problems == []
    assert "found by the push path" in json.dumps(card.card)


def test_dropped_notifications_are_caught_by_the_missed_resync_and_the_campaign_is_still_junked(
        app: PushApp) -> None:
    """Graph drops every change notification and says so with ``missed`` lifecycle notifications (to the same
    URL): the push worker resynchronises the folders with a delta query and the campaign is junked anyway."""
    fake, env = app.fake, app.env
    env.call("push_subscriptions", TimerRequest(past_due=False))
    host_deliver(app, app.push_queue, "push_worker")
    fake.push.configure(drop_rate=1.0, seed=7)
    nmids = [f"6d2f3a4b-1c5e-4f70-9bac-1d2e3f4a5b6{i}" for i in range(3)]
    copies = [fake.push.deliver_inbound(box, sender=SENDER, subject="Quick question", network_message_id=nmid)
              for box, nmid in zip(PROTECTED, nmids, strict=True)]
    fake.push.advance(MAX_LATENCY_S)
    app.sync_clock()
    assert (fake.push.stats["delivered"], fake.push.stats["dropped"]) == (0, 3)
    assert fake.push.stats["missed"] == 3                    # one missed notification per inbox subscription

    # missed -> delta resync queues the messages on the push queue -> the worker runs on them as on changes
    outputs = host_deliver(app, app.push_queue, "push_worker")
    requests = [json.loads(body) for out in outputs for body in out]
    assert sorted(r["target"]["network_message_id"] for r in requests) == nmids
    assert {r["source"] for r in requests} == {"push"}
    host_deliver(app, app.requests_queue, "worker")
    for box, msg in zip(PROTECTED, copies, strict=True):
        assert fake.mailboxes.folder_of(box, msg.internet_message_id) == "junkemail"


def test_the_reply_chain_link_mail_is_junked_as_it_arrives_in_a_mailbox_that_replied(app: PushApp) -> None:
    """consumer-reply-chain-file-link's push form: the sentitems subscription shows the mailbox's reply, so
    the customer's next mail with a file-share link is junked on arrival; the earlier mail is left alone."""
    fake, env, box = app.fake, app.env, PROTECTED[0]
    env.call("push_subscriptions", TimerRequest(past_due=False))
    host_deliver(app, app.push_queue, "push_worker")

    def settle(seconds: float) -> list[dict[str, Any]]:
        fake.push.advance(seconds)
        app.sync_clock()
        return [json.loads(b) for out in host_deliver(app, app.push_queue, "push_worker") for b in out]

    first = fake.push.deliver_inbound(box, sender="eve@gmail.com", subject="Question",
                                      network_message_id="7e3a4b5c-2d6f-4a81-8cbd-2e3f4a5b6c70")
    assert settle(600) == []
    fake.push.add_sent(box, to=["eve@gmail.com"], subject="RE: Question", reply_to=first)  # a person answers
    assert settle(600) == []
    link = fake.push.deliver_inbound(box, sender="eve@gmail.com", subject="RE: Question",
                                     network_message_id="7e3a4b5c-2d6f-4a81-8cbd-2e3f4a5b6c71",
                                     links=("https://www.dropbox.com/s/abc/invoice.pdf?dl=0",))
    requests = settle(MAX_LATENCY_S)
    junk = [r for r in requests if r["action"] == "move_to_junk"]
    assert [(r["rule"], r["target"]["network_message_id"], r["source"]) for r in junk] == [
        ("consumer-reply-chain-file-link", "7e3a4b5c-2d6f-4a81-8cbd-2e3f4a5b6c71", "push")]
    host_deliver(app, app.requests_queue, "worker")
    assert fake.mailboxes.folder_of(box, link.internet_message_id) == "junkemail"
    assert fake.mailboxes.folder_of(box, first.internet_message_id) == "inbox"
    row = env.rt.ledger().read("consumer-reply-chain-file-link", junk[0]["id"])
    assert (row.state, row.request["source"]) == ("confirmed", "push")


def test_a_notification_for_a_subscription_that_is_not_ours_moves_nothing(app: PushApp) -> None:
    """Even with the clientState (a leaked secret), a POST can only point at a message: the push worker checks
    the subscription against its own table, so an unknown subscription id reads nothing and queues nothing."""
    fake, env = app.fake, app.env
    env.call("push_subscriptions", TimerRequest(past_due=False))
    host_deliver(app, app.push_queue, "push_worker")
    copies = [fake.mailboxes.add(box, f"<planted-{i}@gmail.com>", "inbox") for i, box in enumerate(PROTECTED)]
    forged = {"value": [{
        "subscriptionId": f"0badc0de-0000-4000-8000-00000000000{i}", "clientState": CLIENT_STATE,
        "subscriptionExpirationDateTime": "2026-12-09T00:00:00.0000000Z", "changeType": "created",
        "resource": f"Users/{fake.users.get(box).id}/Messages/{mid}", "tenantId": TENANT}
        for i, (box, mid) in enumerate(zip(PROTECTED, copies, strict=True))]}
    resp = httpx.post(app.server.url, json=forged, timeout=10)
    assert resp.status_code == 202                        # the endpoint cannot know; it only checks the shape
    fake.clear_calls()
    assert host_deliver(app, app.push_queue, "push_worker") == [[], [], []]
    assert [c for c in fake.calls if "/messages/" in c.path.lower()] == []     # no message was read
    for i, box in enumerate(PROTECTED):
        assert fake.mailboxes.folder_of(box, f"<planted-{i}@gmail.com>") == "inbox"
    assert env.rt.ledger().list() == []
