"""The push path's subscription timer and lifecycle dispatch in the function app (app/push_subscriptions.py):
Azurite for the push table and queue, the fake Graph (with its push side) for Graph."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import jsonschema
import pytest
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient

from app import push_subscriptions as push_subs
from core.settings import ROOT, PushSettings
from devtools.fakegraph import FakeGraph
from push.contract import SCHEMA
from tests.functions.conftest import PROTECTED, Env, SpyBackend
from tests.push.conftest import CLIENT_STATE, Receiver, push_fake

pytestmark = pytest.mark.azurite


@pytest.fixture
def fake() -> Iterator[FakeGraph]:
    with push_fake(PROTECTED) as g:
        yield g


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def push_on(receiver: Receiver, name: str) -> PushSettings:
    # Built directly: from the app settings the URL must be https, which the loopback receiver is not.
    return PushSettings(enabled=True, notification_url=receiver.url, client_state=CLIENT_STATE,
                        queue=name + "push", table=name + "push")


def queued(conn: str, queue: str) -> list[dict[str, Any]]:
    client = QueueClient.from_connection_string(conn, queue)
    out = [json.loads(base64.b64decode(m.content)) for m in client.receive_messages(max_messages=32)]
    client.close()
    return out


def test_the_timer_does_nothing_while_the_push_path_is_off_and_says_so_once(
        make_env: Callable[..., Env], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    env = make_env()
    monkeypatch.setenv("RESPONDER_PUSH", "off")
    monkeypatch.setattr(push_subs, "_off_said", False)
    caplog.set_level(logging.INFO, logger="app.push_subscriptions")
    for _ in range(2):
        assert env.call("push_subscriptions", TimerRequest(past_due=False)) is None
        assert asyncio.run(push_subs.on_timer(env.rt)) is None
    assert caplog.text.count("push path is off") == 1


def test_a_misconfigured_push_path_names_the_setting_and_does_nothing(
        make_env: Callable[..., Env], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    env = make_env()
    monkeypatch.setenv("RESPONDER_PUSH", "on")
    monkeypatch.setenv("RESPONDER_PUSH_NOTIFICATION_URL", "http://responder.example.net/api/push/notifications")
    assert asyncio.run(push_subs.on_timer(env.rt)) is None
    assert "RESPONDER_PUSH_NOTIFICATION_URL" in caplog.text


def test_the_timer_subscribes_the_protected_mailboxes_and_queues_the_baseline(
        make_env: Callable[..., Env], fake: FakeGraph, receiver: Receiver, storage_conn: str,
        unique_name: str) -> None:
    env = make_env(graph_base_url=fake.base_url)
    env.clock.now = fake.push.now()
    push = push_on(receiver, unique_name)
    arrived = fake.mailboxes.add(PROTECTED[0], "<just-before@x>")
    summary = asyncio.run(push_subs.on_timer(env.rt, TimerRequest(past_due=False), push=push))
    assert summary is not None and summary.failed == []
    assert sorted(summary.created) == sorted(f"{m}/{f}" for m in PROTECTED for f in ("inbox", "sentitems"))
    assert len(fake.push.subscriptions) == 6
    items = queued(storage_conn, push.queue)
    assert [(i["schema"], i["kind"], i["message_id"]) for i in items] == [(SCHEMA, "message", arrived)]
    again = asyncio.run(push_subs.on_timer(env.rt, push=push))       # nothing due: nothing changes
    assert again is not None and again.unchanged == 6 and again.created == []
    assert len(fake.push.subscriptions) == 6


def test_a_missed_lifecycle_item_queues_what_was_not_notified(
        make_env: Callable[..., Env], fake: FakeGraph, receiver: Receiver, storage_conn: str,
        unique_name: str) -> None:
    env = make_env(graph_base_url=fake.base_url)
    env.clock.now = fake.push.now()
    push = push_on(receiver, unique_name)
    asyncio.run(push_subs.on_timer(env.rt, push=push))
    inbox = next(s for s in fake.push.subscriptions if s.folder == "inbox" and s.user_id == fake.users.get(
        PROTECTED[1]).id)
    lost = fake.mailboxes.add(PROTECTED[1], "<lost@x>")
    item = {"schema": SCHEMA, "kind": "lifecycle", "subscription_id": inbox.id, "lifecycle_event": "missed",
            "tenant_id": fake.tenant_id, "received_at": "2026-12-02T04:00:00Z"}
    outcome = asyncio.run(push_subs.on_lifecycle(env.rt, item, push=push))
    assert outcome is not None and (outcome.action, outcome.queued) == ("resynced", 1)
    items = queued(storage_conn, push.queue)
    assert [i["message_id"] for i in items] == [lost] and items[0]["subscription_id"] == inbox.id
    # Malformed: refused and dropped (no retry can help); forged id: ignored.
    bogus = {**item, "lifecycle_event": "bogus"}
    assert asyncio.run(push_subs.on_lifecycle(env.rt, bogus, push=push)) is None
    forged_item = {**item, "subscription_id": "00000000-0000-4000-8000-000000000000"}
    forged = asyncio.run(push_subs.on_lifecycle(env.rt, forged_item, push=push))
    assert forged is not None and forged.action == "ignored"


def test_a_transient_lifecycle_failure_raises_so_the_queue_redelivers(
        make_env: Callable[..., Env], fake: FakeGraph, receiver: Receiver, unique_name: str) -> None:
    env = make_env(graph_base_url=fake.base_url)
    env.clock.now = fake.push.now()
    push = push_on(receiver, unique_name)
    asyncio.run(push_subs.on_timer(env.rt, push=push))
    sid = fake.push.subscriptions[0].id
    item = {"schema": SCHEMA, "kind": "lifecycle", "subscription_id": sid,
            "lifecycle_event": "reauthorizationRequired"}
    fake.inject("POST", r"/reauthorize$", 503)
    with pytest.raises(Exception, match="HTTP 503"):
        asyncio.run(push_subs.on_lifecycle(env.rt, item, push=push))
    fake.inject("POST", r"/reauthorize$", 403)
    assert asyncio.run(push_subs.on_lifecycle(env.rt, item, push=push)) is None     # permanent: logged
    assert asyncio.run(push_subs.on_lifecycle(env.rt, item, push=push)).action == "reauthorized"


def test_without_directory_permission_the_timer_finds_ids_in_email_events(
        make_env: Callable[..., Env], fake: FakeGraph, receiver: Receiver, unique_name: str) -> None:
    sales = fake.users.get(PROTECTED[1]).id
    backend = SpyBackend(rows=[{"Mailbox": PROTECTED[1], "RecipientObjectId": sales}])
    env = make_env(graph_base_url=fake.base_url, backend=backend)
    env.clock.now = fake.push.now()
    fake.inject("GET", r"^/v1\.0/users/[^/]+$", 403, times=None, code="Authorization_RequestDenied")
    summary = asyncio.run(push_subs.on_timer(env.rt, push=push_on(receiver, unique_name)))
    assert summary is not None
    assert summary.created == [f"{PROTECTED[1]}/inbox", f"{PROTECTED[1]}/sentitems"]
    assert sorted(w for w, _ in summary.failed) == sorted([PROTECTED[0], PROTECTED[2]])
    (query, span), = backend.queries
    assert "EmailEvents" in query and "RecipientObjectId" in query and span.days == 30
    assert all(f'"{m}"' in query for m in (PROTECTED[0], PROTECTED[1], PROTECTED[2]))


def _records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    from app import telemetry

    recs = [r for r in (telemetry.parse_line(m.getMessage()) for m in caplog.records) if r]
    schema = json.loads((ROOT / "docs" / "telemetry.schema.json").read_text(encoding="utf-8"))
    for rec in recs:
        jsonschema.validate(rec, schema)      # the contract the alerts and the workbook read
    return [r for r in recs if r["event"] == "push" and r["state"] == "subscriptions"]


def test_the_timer_records_its_run_and_a_failed_mailbox_for_the_alert(
        make_env: Callable[..., Env], fake: FakeGraph, receiver: Receiver, unique_name: str,
        caplog: pytest.LogCaptureFixture) -> None:
    env = make_env(graph_base_url=fake.base_url)
    env.clock.now = fake.push.now()
    push = push_on(receiver, unique_name)
    with caplog.at_level(logging.INFO):
        asyncio.run(push_subs.on_timer(env.rt, push=push))
    (ok,) = _records(caplog)
    assert ok["error_class"] is None and ok["counts"]["created"] == 6 and ok["counts"]["failed"] == 0
    # One mailbox's subscription cannot be made (403): the record says so, with the error's class.
    caplog.clear()
    fake.inject("POST", r"/subscriptions$", 403, times=None)
    env2 = make_env(graph_base_url=fake.base_url)
    env2.clock.now = fake.push.now()
    with caplog.at_level(logging.INFO):
        summary = asyncio.run(push_subs.on_timer(env2.rt, push=push_on(receiver, unique_name + "b")))
    assert summary is not None and summary.failed
    (bad,) = _records(caplog)
    assert bad["counts"]["failed"] == len(summary.failed) and bad["error_class"] == "permission"


def test_the_timer_deletes_expired_stream_state_and_keeps_the_rest(
        make_env: Callable[..., Env], fake: FakeGraph, receiver: Receiver, storage_conn: str,
        unique_name: str, caplog: pytest.LogCaptureFixture) -> None:
    from azure.data.tables.aio import TableClient

    from push.resync import iso
    from push.state import TableState, row_key

    env = make_env(graph_base_url=fake.base_url)
    env.clock.now = fake.push.now()
    push = push_on(receiver, unique_name)
    asyncio.run(push_subs.on_timer(env.rt, push=push))
    later = fake.push.now() + timedelta(days=2)

    async def plant() -> None:
        async with TableClient.from_connection_string(storage_conn, push.table) as table:
            state = TableState(table, "consumer-sender-to-shared-mailboxes")
            assert await state.save("over", {"expires_at": iso(later - timedelta(days=1, hours=1))}, None)
            assert await state.save("live", {"expires_at": iso(later + timedelta(hours=1))}, None)

    async def left() -> set[str]:
        async with TableClient.from_connection_string(storage_conn, push.table) as table:
            return {e["RowKey"] async for e in table.query_entities(
                "PartitionKey eq 'stream-consumer-sender-to-shared-mailboxes'")}

    asyncio.run(plant())
    fake.push.advance(2 * 86400)
    env.clock.now = fake.push.now()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        summary = asyncio.run(push_subs.on_timer(env.rt, push=push))
    assert summary is not None and summary.failed == []
    assert asyncio.run(left()) == {row_key("live")}
    (rec,) = _records(caplog)
    assert rec["counts"]["deleted"] == 1
