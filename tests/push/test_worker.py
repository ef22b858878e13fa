"""push/worker.py: one push-notification/1 message -> requests, reading the message through the real
msgraph-sdk client from the loopback fake Graph, with a stand-in streaming rule (the real ones are
detections/streaming's; the worker only relies on the Observe signature)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from core.graph import make_graph_client
from core.request import request_id, validate_request
from core.tenant import TenantConfig
from detections.catalog import load_catalog
from detections.streaming import MailFact, MemoryState, StreamState
from detections.streaming.registry import STREAMING
from devtools.fakegraph import FakeGraph
from push.contract import Subscription
from push.graphread import GraphTransient
from push.notification import NotificationInvalid
from push.worker import PushRun, PushWorker
from tests.push.conftest import push_fake

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TENANT_ID = "00000000-0000-0000-0000-00000000abcd"
SUB_ID = "7d1c0a1e-1111-4222-8333-944455556666"
RULE = "consumer-sender-to-shared-mailboxes"
MAILBOX = "support@contoso.com"
NMID = "d051c5e4-93c2-4f22-1379-08dc51643222"


@pytest.fixture
def fake() -> Iterator[FakeGraph]:
    with push_fake() as graph:
        yield graph


def deliver(fake: FakeGraph, mailbox: str = MAILBOX, *, nmid: str | None = NMID,
            sender: str = "eve@gmail.com", folder: str = "inbox",
            links: tuple[str, ...] = ()) -> tuple[str, str]:
    """A consumer mail delivered to ``mailbox`` as the fake Graph renders it (Return-Path, Network-Message-Id
    header, HTML body); without ``nmid``, a message that lacks the header. Returns (user id, message id)."""
    if nmid is None:
        mid = fake.mailboxes.add(mailbox, "<no-nmid@mail.gmail.com>", folder, subject="Question",
                                 sender=("Eve", sender), to=(("", mailbox),), body="<p>hi</p>",
                                 body_type="html", headers=(("Return-Path", f"<{sender}>"),))
        return fake.users.get(mailbox).id, mid
    msg = fake.push.deliver_inbound(mailbox, sender=sender, subject="Question", network_message_id=nmid,
                                    internet_message_id=f"<{nmid}@mail.gmail.com>", folder=folder,
                                    links=links)
    return fake.users.get(mailbox).id, msg.id


class Subs:
    def __init__(self, *subs: Subscription) -> None:
        self.subs = {s.subscription_id: s for s in subs}
        self.asked: list[str] = []

    async def by_id(self, subscription_id: str) -> Subscription | None:
        self.asked.append(subscription_id)
        return self.subs.get(subscription_id)


def sub_for(user_id: str, folder: str = "inbox", mailbox: str = MAILBOX,
            sub_id: str = SUB_ID) -> Subscription:
    return Subscription(subscription_id=sub_id, mailbox=mailbox, user_id=user_id, folder=folder,
                        expires_at="2026-11-27T12:00:00Z")


def change(user_id: str, message_id: str, **over: Any) -> str:
    body = {"schema": "push-notification/1", "kind": "change", "subscription_id": SUB_ID,
            "change_type": "created", "resource": f"Users/{user_id}/Messages/{message_id}",
            "user_id": user_id, "message_id": message_id, "tenant_id": TENANT_ID,
            "received_at": "2026-11-20T11:59:30Z", **over}
    return json.dumps({k: v for k, v in body.items() if v is not None})


class StandIn:
    """A streaming rule: remembers each consumer copy per sender and, once more than one mailbox holds
    one, returns the consumer-sender rule's projection row for this copy."""

    def __init__(self) -> None:
        self.seen: list[MailFact] = []
        self.params: list[Mapping[str, Any]] = []

    async def __call__(self, fact: MailFact, params: Mapping[str, Any], state: StreamState) -> list[dict]:
        self.seen.append(fact)
        self.params.append(params)
        if not fact.sender_mail_from.endswith("@gmail.com"):
            return []
        while True:
            value, version = await state.load("sender:" + fact.sender_mail_from)
            boxes = sorted({*value.get("mailboxes", []), fact.mailbox})
            if await state.save("sender:" + fact.sender_mail_from, {"mailboxes": boxes}, version):
                break
        if len(boxes) < 2:
            return []
        return [{"Timestamp": fact.timestamp, "SenderMailFromAddress": fact.sender_mail_from,
                 "SenderFromAddress": fact.sender_from, "SenderKey": fact.sender_mail_from,
                 "RecipientEmailAddress": fact.mailbox, "RecipientObjectId": fact.recipient_object_id,
                 "Subject": fact.subject, "DistinctMailboxes": len(boxes),
                 "Campaigns": ["sender:" + fact.sender_mail_from], "LatestDeliveryLocation": "Inbox/folder",
                 "LatestDeliveryAction": "Delivered", "NetworkMessageId": fact.network_message_id,
                 "InternetMessageId": fact.internet_message_id, "ReportId": ""}]


class Harness:
    """A PushWorker per ``process`` call (its Graph client belongs to that call's event loop); the rule's
    state and what was emitted live across calls."""

    def __init__(self, fake: FakeGraph, subs: Subs, *, tenant: dict[str, Any] | None = None,
                 dry_run: bool = False, observe: Any = None, lifecycle: Any = None,
                 streaming: Mapping[str, Any] | None = None) -> None:
        self.fake, self.subs, self.dry_run, self.lifecycle = fake, subs, dry_run, lifecycle
        self.emitted: list[PushRun] = []
        self.states: dict[str, MemoryState] = {}
        self.stand_in = observe or StandIn()
        self.streaming = streaming if streaming is not None else {RULE: self.stand_in}
        config = tenant if tenant is not None else {
            "params": {"protected_recipients": [MAILBOX, "sales@contoso.com"]}}
        self.tenant = TenantConfig.from_mapping(config, source="t")

    async def _emit(self, run: PushRun) -> None:
        self.emitted.append(run)

    def process(self, *bodies: str) -> Any:
        async def go() -> list[Any]:
            worker = PushWorker(graph=make_graph_client(base_url=self.fake.base_url, max_retries=0),
                                subscriptions=self.subs,
                                state_for=lambda slug: self.states.setdefault(slug, MemoryState()),
                                catalog=load_catalog(), streaming=self.streaming, tenant=self.tenant,
                                emit=self._emit, on_lifecycle=self.lifecycle, dry_run=self.dry_run,
                                tenant_id=TENANT_ID, clock=lambda: NOW)
            return [await worker.process(b) for b in bodies]
        results = asyncio.run(go())
        return results[0] if len(results) == 1 else results


def make_worker(fake: FakeGraph, subs: Subs, **kw: Any) -> tuple[Harness, list[PushRun], StandIn]:
    h = Harness(fake, subs, **kw)
    return h, h.emitted, h.stand_in


def test_second_mailbox_copy_emits_the_scan_shaped_request_with_source_push(fake: FakeGraph) -> None:
    uid_a, mid_a = deliver(fake, MAILBOX, nmid=NMID)
    uid_b, mid_b = deliver(fake, "sales@contoso.com", nmid="e685b2e4-38d5-4f3e-b0cd-08d6c6fa66c9")
    subs = Subs(sub_for(uid_a), sub_for(uid_b, mailbox="sales@contoso.com",
                                         sub_id="7d1c0a1e-1111-4222-8333-944455550000"))
    worker, emitted, stand_in = make_worker(fake, subs)

    first = worker.process(change(uid_a, mid_a))
    assert first.outcome == "no_match" and emitted == []
    second = worker.process(change(uid_b, mid_b,
                                               subscription_id="7d1c0a1e-1111-4222-8333-944455550000"))
    assert second.outcome == "requests"
    (run,) = emitted
    (req,) = run.requests
    validate_request(json.loads(json.dumps(req)))
    assert req["source"] == "push" and req["rule"] == RULE and req["action"] == "move_to_junk"
    assert req["mode"] == "auto" and req["detected_at"] == "2026-11-20T12:00:00Z"
    assert req["target"] == {"network_message_id": "e685b2e4-38d5-4f3e-b0cd-08d6c6fa66c9",
                             "recipient": "sales@contoso.com", "recipient_object_id": uid_b,
                             "internet_message_id": "<e685b2e4-38d5-4f3e-b0cd-08d6c6fa66c9@mail.gmail.com>"}
    # The same id the scheduled path's request for this copy has (id = rule, action, target).
    same_copy = {"network_message_id": req["target"]["network_message_id"], "recipient": "sales@contoso.com"}
    assert req["id"] == request_id(RULE, "move_to_junk", same_copy)
    assert req["run"] == {"id": run.run_id, "index": 0, "total": 1}
    # The fact the rule saw, read from Graph with $select (headers are returned only on $select).
    fact = stand_in.seen[1]
    assert fact.direction == "Inbound" and fact.in_inbox and fact.sender_mail_from == "eve@gmail.com"
    (get,) = [c for c in fake.calls_to("GET", rf"/messages/{mid_b}$")]
    assert "internetMessageHeaders" in get.query.get("$select", "")
    # The rule got its parameters resolved as the scheduled path resolves them.
    assert stand_in.params[0]["threshold"] == 2 and "gmail.*" in stand_in.params[0]["sender_domains"]


def test_dry_run_and_tenant_mode_set_the_mode_as_a_scan_does(fake: FakeGraph) -> None:
    uid_a, mid_a = deliver(fake)
    uid_b, mid_b = deliver(fake, "sales@contoso.com", nmid="e685b2e4-38d5-4f3e-b0cd-08d6c6fa66c9")
    second = "7d1c0a1e-1111-4222-8333-944455550000"
    cases = ((True, {}, "dry_run"), (False, {RULE: {"mode": "approval"}}, "approval"))
    for dry_run, rules, expected in cases:
        subs = Subs(sub_for(uid_a), sub_for(uid_b, mailbox="sales@contoso.com", sub_id=second))
        tenant = {"params": {"protected_recipients": [MAILBOX, "sales@contoso.com"]}, "rules": rules}
        worker, emitted, _ = make_worker(fake, subs, tenant=tenant, dry_run=dry_run)
        worker.process(change(uid_a, mid_a))
        worker.process(change(uid_b, mid_b, subscription_id=second))
        assert [r["mode"] for run in emitted for r in run.requests] == [expected]


def test_unknown_subscription_or_user_mismatch_is_dropped_without_calling_graph(fake: FakeGraph) -> None:
    uid, mid = deliver(fake)
    other_uid, _ = deliver(fake, "sales@contoso.com")
    worker, emitted, _ = make_worker(fake, Subs(sub_for(uid)))
    fake.clear_calls()
    unknown = worker.process(change(uid, mid, subscription_id="0d1c0a1e-1111-4222-8333-944455556666"))
    mismatch = worker.process(change(other_uid, mid))
    assert (unknown.outcome, mismatch.outcome) == ("forged", "forged")
    assert "no such subscription" in unknown.detail and "another mailbox" in mismatch.detail
    other_tenant = worker.process(change(uid, mid, tenant_id="99999999-0000-0000-0000-00000000abcd"))
    assert other_tenant.outcome == "forged"
    assert fake.calls == [] and emitted == []


def test_a_mailbox_no_rule_protects_is_not_read(fake: FakeGraph) -> None:
    uid, mid = deliver(fake, "info@contoso.com")
    worker, _, stand_in = make_worker(fake, Subs(sub_for(uid, mailbox="info@contoso.com")))
    fake.clear_calls()
    assert worker.process(change(uid, mid)).outcome == "not_protected"
    assert fake.calls == [] and stand_in.seen == []
    # A rule disabled for the tenant protects nothing either.
    uid2, mid2 = deliver(fake)
    tenant = {"params": {"protected_recipients": [MAILBOX]}, "rules": {RULE: {"enabled": False}}}
    worker, _, _ = make_worker(fake, Subs(sub_for(uid2)), tenant=tenant)
    assert worker.process(change(uid2, mid2)).outcome == "not_protected"


def test_a_message_moved_or_deleted_before_it_is_read_is_nothing(fake: FakeGraph) -> None:
    uid, mid = deliver(fake)
    fake.mailboxes.move(uid, mid, "junkemail")          # moved: the old id is gone (404)
    worker, emitted, stand_in = make_worker(fake, Subs(sub_for(uid)))
    result = worker.process(change(uid, mid))
    assert result.outcome == "gone" and emitted == [] and stand_in.seen == []


def test_no_network_message_id_gives_no_fact_and_is_counted(fake: FakeGraph,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    uid, mid = deliver(fake, nmid=None)
    worker, emitted, stand_in = make_worker(fake, Subs(sub_for(uid)))
    result = worker.process(change(uid, mid))
    assert result.outcome == "no_network_message_id" and stand_in.seen == [] and emitted == []
    assert "request id needs it" in caplog.text


@pytest.mark.parametrize("status", [429, 503, 504])
def test_transient_graph_errors_raise_so_the_queue_retries(fake: FakeGraph, status: int) -> None:
    uid, mid = deliver(fake)
    fake.inject("GET", r"/messages/", status, times=None)
    worker, emitted, _ = make_worker(fake, Subs(sub_for(uid)))
    with pytest.raises(GraphTransient, match=f"HTTP {status}"):
        worker.process(change(uid, mid))
    assert emitted == []


@pytest.mark.parametrize("path", [r"/messages/", r"/mailFolders/inbox$"])
def test_graph_refusing_is_an_outcome_not_a_retry(fake: FakeGraph, path: str) -> None:
    uid, mid = deliver(fake)
    fake.inject("GET", path, 403, times=None)
    worker, emitted, _ = make_worker(fake, Subs(sub_for(uid)))
    result = worker.process(change(uid, mid))
    assert result.outcome == "graph_refused" and "HTTP 403" in result.detail and emitted == []


def test_inbox_folder_id_is_read_once_per_mailbox_and_moved_copies_are_not_in_inbox(
        fake: FakeGraph) -> None:
    uid, mid = deliver(fake)
    _, mid2 = deliver(fake, nmid="e685b2e4-38d5-4f3e-b0cd-08d6c6fa66c9")
    moved = fake.mailboxes.move(uid, mid2, "archive")
    worker, _, stand_in = make_worker(fake, Subs(sub_for(uid)))
    worker.process(change(uid, mid), change(uid, moved.id))
    assert [f.in_inbox for f in stand_in.seen] == [True, False]
    assert len(fake.calls_to("GET", r"/mailFolders/inbox$")) == 1


def test_sent_items_subscription_gives_outbound_facts_without_reading_the_inbox(fake: FakeGraph) -> None:
    sent = fake.push.add_sent(MAILBOX, to=["Eve <eve@gmail.com>"], subject="RE: Question")
    uid, mid = fake.users.get(MAILBOX).id, sent.id
    worker, _, stand_in = make_worker(fake, Subs(sub_for(uid, folder="sentitems")))
    assert worker.process(change(uid, mid)).outcome == "no_match"
    (fact,) = stand_in.seen
    assert fact.direction == "Outbound" and fact.recipients == ("eve@gmail.com",)
    assert fact.sender_mail_from == MAILBOX   # no Return-Path on a Sent Items copy: the mailbox sent it
    assert fake.calls_to("GET", r"/mailFolders/") == []


def test_message_kind_from_a_resync_is_processed_like_a_change(fake: FakeGraph) -> None:
    uid, mid = deliver(fake)
    worker, _, stand_in = make_worker(fake, Subs(sub_for(uid)))
    body = json.dumps({"schema": "push-notification/1", "kind": "message", "subscription_id": SUB_ID,
                       "user_id": uid, "message_id": mid, "received_at": "2026-11-20T11:59:30Z"})
    assert worker.process(body).outcome == "no_match"
    assert len(stand_in.seen) == 1


def test_lifecycle_goes_to_its_handler(fake: FakeGraph) -> None:
    got: list[Any] = []

    async def handler(n: Any) -> None:
        got.append(n)

    worker, _, _ = make_worker(fake, Subs(), lifecycle=handler)
    body = json.dumps({"schema": "push-notification/1", "kind": "lifecycle", "subscription_id": SUB_ID,
                       "lifecycle_event": "missed", "tenant_id": TENANT_ID,
                       "received_at": "2026-11-20T12:00:00Z"})
    assert worker.process(body).outcome == "lifecycle"
    assert [(n.lifecycle_event, n.subscription_id) for n in got] == [("missed", SUB_ID)]
    worker, _, _ = make_worker(fake, Subs())
    assert worker.process(body).outcome == "lifecycle_unhandled"


def test_invalid_messages_raise_naming_the_field(fake: FakeGraph) -> None:
    worker, _, _ = make_worker(fake, Subs())
    with pytest.raises(NotificationInvalid, match="kind"):
        worker.process(json.dumps({"schema": "push-notification/1", "kind": "delete"}))
    assert fake.calls == []


# --- with the real streaming rules (detections.streaming.registry) -----------------------------------

BOXES = ["support@contoso.com", "sales@contoso.com", "info@contoso.com"]


def subscribed(fake: FakeGraph, folder: str = "inbox") -> tuple[Subs, dict[str, str]]:
    """One subscription per protected mailbox (ids as GUIDs); returns the lookup and mailbox -> sub id."""
    subs, ids = [], {}
    for i, box in enumerate(BOXES):
        uid = fake.users.add(box).id
        ids[box] = f"7d1c0a1e-1111-4222-8333-{1 if folder == 'inbox' else 2}{i:011d}"
        subs.append(sub_for(uid, folder=folder, mailbox=box, sub_id=ids[box]))
    return Subs(*subs), ids


def test_real_consumer_sender_rule_junks_every_copy_once_the_third_mailbox_is_hit(fake: FakeGraph) -> None:
    subs, ids = subscribed(fake)
    h = Harness(fake, subs, tenant={"params": {"protected_recipients": BOXES}}, streaming=STREAMING)
    bodies = []
    for i, box in enumerate(BOXES):
        uid, mid = deliver(fake, box, nmid=f"d051c5e4-93c2-4f22-1379-08dc5164322{i}",
                           sender="eve.smith@gmail.com")
        bodies.append(change(uid, mid, subscription_id=ids[box]))
    results = h.process(*bodies)
    assert [r.outcome for r in results] == ["no_match", "no_match", "requests"]
    targets = sorted((r["target"]["recipient"], r["target"]["network_message_id"])
                     for run in h.emitted for r in run.requests)
    assert targets == sorted((box, f"d051c5e4-93c2-4f22-1379-08dc5164322{i}") for i, box in enumerate(BOXES))
    assert {r["source"] for run in h.emitted for r in run.requests} == {"push"}
    assert {r["rule"] for run in h.emitted for r in run.requests} == {RULE}


def test_real_reply_chain_rule_junks_the_link_mail_after_a_reply(fake: FakeGraph) -> None:
    inbox, in_ids = subscribed(fake)
    sent, sent_ids = subscribed(fake, "sentitems")
    subs = Subs(*inbox.subs.values(), *sent.subs.values())
    h = Harness(fake, subs, tenant={"params": {"protected_recipients": BOXES}}, streaming=STREAMING)
    uid = fake.users.get(MAILBOX).id
    _, first = deliver(fake, MAILBOX, nmid="a0000000-0000-4000-8000-000000000001")
    fake.push.advance(600)   # a person answers (not within auto_reply_max_delay: that is an auto-reply)
    reply = fake.push.add_sent(MAILBOX, to=["eve@gmail.com"], subject="RE: Question")
    fake.push.advance(600)   # the customer answers ten minutes later, with the link
    _, link = deliver(fake, MAILBOX, nmid="a0000000-0000-4000-8000-000000000002",
                      links=("https://www.dropbox.com/s/abc/invoice.pdf?dl=0",))
    h.process(change(uid, first, subscription_id=in_ids[MAILBOX]),
              change(uid, reply.id, subscription_id=sent_ids[MAILBOX]),
              change(uid, link, subscription_id=in_ids[MAILBOX]))
    junk = [r for run in h.emitted for r in run.requests if r["action"] == "move_to_junk"]
    assert [(r["rule"], r["target"]["network_message_id"], r["source"]) for r in junk] == [
        ("consumer-reply-chain-file-link", "a0000000-0000-4000-8000-000000000002", "push")]
