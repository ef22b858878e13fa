"""The ``push_worker`` and ``push_poison`` functions called as the host calls them: Azurite (push table,
ledger, requests), the real msgraph-sdk client against the fake Graph (wt/fakepush's rich messages), the
real streaming rules. The push path's requests are recorded and queued exactly as a scan's; the ledger
keeps whichever path's request came first, and the outcome card says so."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from azure.data.tables.aio import TableClient
from azure.functions.queue import QueueMessage

from app import handlers, telemetry
from core.request import request_id
from core.settings import ROOT, PushSettings
from devtools.fakegraph import FakeGraph
from push.contract import Subscription
from push.graphread import GraphTransient
from push.subscriptions import SubscriptionStore
from tests.functions.conftest import PROTECTED, RULE, Env, Out, SpyBackend, inbox_row
from tests.push.conftest import push_fake

TENANT = "00000000-0000-0000-0000-00000000abcd"     # RESPONDER_TENANT_ID in tests/functions/conftest.py
SENDER = "eve.smith@gmail.com"


@pytest.fixture
def fake() -> Iterator[FakeGraph]:
    with push_fake() as graph:
        yield graph


def push_env(make_env: Any, fake: FakeGraph, unique_name: str, storage_conn: str, *, enabled: bool = True,
             backend: Any = None) -> tuple[Env, dict[str, str]]:
    """An app with the push path on, and one inbox subscription row per protected mailbox."""
    env = make_env(graph_base_url=fake.base_url, backend=backend)
    push = PushSettings(enabled=enabled, notification_url="https://app.example/api/push/notifications",
                        client_state="s" * 40, queue=unique_name + "pq", table=unique_name + "push")
    env.rt.config = dataclasses.replace(env.rt.config, push=push)
    subs = {}

    async def seed() -> None:
        async with TableClient.from_connection_string(storage_conn, push.table) as table:
            store = SubscriptionStore(table)
            await store.ensure_table()
            for i, box in enumerate(PROTECTED):
                sid = f"7d1c0a1e-1111-4222-8333-{i:012d}"
                subs[box] = sid
                await store.save(Subscription(sid, box, fake.users.add(box).id, "inbox",
                                              "2026-11-27T12:00:00Z"), etag=None, pending=False)
    asyncio.run(seed())
    return env, subs


def notification(fake: FakeGraph, box: str, message_id: str, sub: str) -> QueueMessage:
    uid = fake.users.get(box).id
    body = {"schema": "push-notification/1", "kind": "change", "subscription_id": sub,
            "change_type": "created", "resource": f"Users/{uid}/Messages/{message_id}", "user_id": uid,
            "message_id": message_id, "tenant_id": TENANT, "received_at": "2026-11-20T11:59:30Z"}
    return QueueMessage(id="p-" + message_id[-6:], body=json.dumps(body).encode(), dequeue_count=1)


def campaign(fake: FakeGraph) -> list[str]:
    """The same consumer sender mails the three protected mailboxes; returns the network message ids."""
    nmids = [f"d051c5e4-93c2-4f22-1379-08dc5164322{i}" for i in range(3)]
    for box, nmid in zip(PROTECTED, nmids, strict=True):
        fake.push.deliver_inbound(box, sender=SENDER, subject="Question", network_message_id=nmid)
    return nmids


def run_push(env: Env, fake: FakeGraph, subs: dict[str, str]) -> list[dict[str, Any]]:
    """Every inbox message of the protected mailboxes through push_worker; the requests it queued."""
    queued: list[dict[str, Any]] = []
    for box in PROTECTED:
        for msg in fake.mailboxes.messages(box):
            out, poison = Out(), Out()
            env.call("push_worker", notification(fake, box, msg.id, subs[box]), out, poison)
            assert out.calls == 1 and poison.calls == 0
            queued += [json.loads(m) for m in out.value]
    return queued


def test_a_campaign_is_queued_by_the_push_path_and_the_outcome_card_says_so(
        make_env: Any, fake: FakeGraph, unique_name: str, storage_conn: str) -> None:
    env, subs = push_env(make_env, fake, unique_name, storage_conn)
    nmids = campaign(fake)
    queued = run_push(env, fake, subs)
    assert sorted(r["target"]["network_message_id"] for r in queued) == nmids
    assert {(r["source"], r["rule"], r["action"], r["mode"]) for r in queued} == {
        ("push", RULE, "move_to_junk", "auto")}
    ledger = env.rt.ledger()
    rows = [ledger.read(RULE, r["id"]) for r in queued]
    assert {(row.state, row.request["source"]) for row in rows} == {("received", "push")}
    assert env.notifier.cards == []      # no "found and queued" card: the outcome card follows
    # The remediation worker acts on them; the run's last one sends the outcome card.
    for i, req in enumerate(queued):
        env.call("worker", QueueMessage(id=f"q{i}", body=json.dumps(req).encode(), dequeue_count=1))
    assert sorted(e["networkMessageId"] for r in fake.remediations for e in r.emails) == nmids
    (card,) = env.notifier.cards
    text = json.dumps(card)
    assert "found by the push path" in text
    # The run read the mailboxes, not the app's query backend (RESPONDER_BACKEND): the card says so.
    (backend,) = [f["value"] for f in _facts(card) if f.get("title") == "Backend"]
    assert backend == "push path (Graph change notifications)"


def _facts(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return list(node.get("facts") or []) + [f for v in node.values() for f in _facts(v)]
    if isinstance(node, list):
        return [f for v in node for f in _facts(v)]
    return []


def test_each_push_message_is_one_telemetry_record_and_a_message_without_an_id_is_counted(
        make_env: Any, fake: FakeGraph, unique_name: str, storage_conn: str,
        caplog: pytest.LogCaptureFixture) -> None:
    env, subs = push_env(make_env, fake, unique_name, storage_conn)
    campaign(fake)
    no_id = fake.mailboxes.add(PROTECTED[0], "<x@gmail.com>", "inbox", subject="Q", sender=("", SENDER),
                               body="<p>x</p>", body_type="html", headers=(("Return-Path", f"<{SENDER}>"),))
    with caplog.at_level(logging.INFO, logger="xdr.telemetry"):
        run_push(env, fake, subs)
    records = [r for r in (telemetry.parse_line(m.getMessage()) for m in caplog.records) if r]
    schema = json.loads((ROOT / "docs" / "telemetry.schema.json").read_text(encoding="utf-8"))
    for rec in records:
        jsonschema.validate(rec, schema)   # the contract the alerts and the workbook read
    pushes = [r for r in records if r["event"] == "push"]
    assert sorted(r["state"] for r in pushes) == ["no_match", "no_match", "no_network_message_id", "requests"]
    (done,) = [r for r in pushes if r["state"] == "requests"]
    assert done["counts"]["queued"] == 3 and done["trigger"] == "change"
    runs = [r for r in records if r["event"] == "scan_run"]
    assert [(r["trigger"], r["backend"], r["counts"]["requests"]) for r in runs] == [("push", "push", 3)]
    assert no_id


def test_the_ledger_keeps_the_push_request_when_a_scan_finds_the_same_copies_later(
        make_env: Any, fake: FakeGraph, unique_name: str, storage_conn: str) -> None:
    nmids = campaign(fake)
    rows = [inbox_row(nmid, box, sender=SENDER) for nmid, box in zip(nmids, PROTECTED, strict=True)]
    env, subs = push_env(make_env, fake, unique_name, storage_conn, backend=SpyBackend(rows))
    pushed = run_push(env, fake, subs)
    out = Out()
    env.call(f"rule_{RULE.replace('-', '_')}", _timer(), out)
    scanned = out.value
    assert scanned == []           # the same ids are already in flight: nothing queued twice
    ledger = env.rt.ledger()
    for req in pushed:
        assert req["id"] == request_id(RULE, "move_to_junk", req["target"])
        assert ledger.read(RULE, req["id"]).request["source"] == "push"


def test_the_ledger_keeps_the_scheduled_request_when_the_scan_was_first(
        make_env: Any, fake: FakeGraph, unique_name: str, storage_conn: str) -> None:
    nmids = campaign(fake)
    rows = [inbox_row(nmid, box, sender=SENDER) for nmid, box in zip(nmids, PROTECTED, strict=True)]
    env, subs = push_env(make_env, fake, unique_name, storage_conn, backend=SpyBackend(rows))
    out = Out()
    env.call(f"rule_{RULE.replace('-', '_')}", _timer(), out)
    scanned = [json.loads(m) for m in out.value]
    assert {r["source"] for r in scanned} == {"scheduled"} and len(scanned) == 3
    assert run_push(env, fake, subs) == []     # the push path finds the same ids in flight
    ledger = env.rt.ledger()
    assert {ledger.read(RULE, r["id"]).request["source"] for r in scanned} == {"scheduled"}


def test_invalid_forged_and_off(make_env: Any, fake: FakeGraph, unique_name: str, storage_conn: str,
                                caplog: pytest.LogCaptureFixture) -> None:
    env, subs = push_env(make_env, fake, unique_name, storage_conn)
    out, poison = Out(), Out()
    bad = QueueMessage(id="bad", body=b'{"schema":"push-notification/1","kind":"delete"}', dequeue_count=1)
    assert handled(env, bad, out, poison)["outcome"] == "invalid"
    assert out.value == [] and "kind: expected one of" in caplog.text
    (item,) = poison.value      # not dropped: to the poison queue with why (tests below: on Azurite)
    assert json.loads(item)["reason"].startswith("kind: expected one of")
    msg = fake.push.deliver_inbound(PROTECTED[0], sender=SENDER, subject="Q")
    forged = notification(fake, PROTECTED[0], msg.id, "0d1c0a1e-1111-4222-8333-000000000000")
    fake.clear_calls()
    assert handled(env, forged, Out())["outcome"] == "forged"
    assert fake.calls == []
    env.rt.config = dataclasses.replace(env.rt.config, push=dataclasses.replace(env.rt.config.push,
                                                                                enabled=False))
    real = notification(fake, PROTECTED[0], msg.id, subs[PROTECTED[0]])
    assert handled(env, real, Out())["outcome"] == "push_off"
    assert fake.calls == []


def test_a_transient_graph_error_is_raised_for_the_host_to_retry_then_poison_is_logged(
        make_env: Any, fake: FakeGraph, unique_name: str, storage_conn: str,
        caplog: pytest.LogCaptureFixture) -> None:
    env, subs = push_env(make_env, fake, unique_name, storage_conn)
    msg = fake.push.deliver_inbound(PROTECTED[0], sender=SENDER, subject="Q")
    fake.inject("GET", r"/messages/", 503, times=None)
    note = notification(fake, PROTECTED[0], msg.id, subs[PROTECTED[0]])
    out, poison = Out(), Out()
    with pytest.raises(GraphTransient, match="HTTP 503"):
        env.call("push_worker", note, out, poison)
    assert out.calls == 0 and poison.calls == 0   # transient: the host retries, then poisons it itself
    poisoned = QueueMessage(id="p1", body=note.get_body(), dequeue_count=5)
    assert asyncio.run(handlers.on_push_poison(env.rt, poisoned))["outcome"] == "poison"
    assert "given up after 5 deliveries" in caplog.text and subs[PROTECTED[0]] in caplog.text


def handled(env: Env, msg: QueueMessage, out: Out, poison: Out | None = None) -> dict[str, Any]:
    """The function's work with its summary (the function itself returns nothing to the host)."""
    return asyncio.run(handlers.on_push_message(env.rt, msg, out, poison or Out()))


def _timer() -> Any:
    from azure.functions.timer import TimerRequest

    return TimerRequest(past_due=False)


def test_a_missed_lifecycle_item_resyncs_the_folder_onto_the_push_queue(
        make_env: Any, fake: FakeGraph, unique_name: str, storage_conn: str) -> None:
    """The lifecycle handler (push/lifecycle.py) is wired: ``missed`` runs a delta round whose messages are
    queued on the push queue as ``message`` items, base64-encoded as the queue trigger reads them."""
    from azure.storage.queue import QueueClient

    env, subs = push_env(make_env, fake, unique_name, storage_conn)
    box = PROTECTED[0]
    uid = fake.users.get(box).id
    # The folder's delta link as the subscription row keeps it, then a mail delivered while notifications
    # were lost.
    page = httpx.get(f"{fake.base_url}/users/{uid}/mailFolders/inbox/messages/delta",
                     params={"changeType": "created"}).json()
    while "@odata.deltaLink" not in page:
        page = httpx.get(page["@odata.nextLink"]).json()

    async def keep_link() -> None:
        async with TableClient.from_connection_string(storage_conn, env.rt.config.push.table) as table:
            store = SubscriptionStore(table)
            entry = await store.get(uid, "inbox")
            await store.set_link(entry.sub, page["@odata.deltaLink"], pending=False)
    asyncio.run(keep_link())
    msg = fake.push.deliver_inbound(box, sender=SENDER, subject="Q")
    queue = QueueClient.from_connection_string(storage_conn, env.rt.config.push.queue)
    queue.create_queue()
    body = {"schema": "push-notification/1", "kind": "lifecycle", "subscription_id": subs[box],
            "lifecycle_event": "missed", "tenant_id": TENANT, "received_at": "2026-11-20T12:00:00Z"}
    out = Out()
    summary = handled(env, QueueMessage(id="lc", body=json.dumps(body).encode(), dequeue_count=1), out)
    assert summary["outcome"] == "lifecycle" and out.value == []
    import base64

    items = [json.loads(base64.b64decode(m.content)) for m in queue.receive_messages(max_messages=32)]
    assert [(i["kind"], i["subscription_id"], i["message_id"]) for i in items] == [
        ("message", subs[box], msg.id)]
