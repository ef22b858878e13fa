"""The hot-campaign sweep (push/sweep.py) through the ``push_worker`` function as the host calls it: Azurite
(push queue, push table, ledger), the real msgraph-sdk client against the fake Graph with a manual clock,
the real streaming rule. The push queue is read back from Azurite; the sweep messages' visibility delay is
recorded and made 0 (Azurite honours it in real time), the clocks are moved instead."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from azure.data.tables.aio import TableClient
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

from app import push_worker
from devtools.fakegraph import FakeGraph
from push.sweep import SWEEP_EVERY, campaign_row_key, partition
from tests.functions.conftest import PROTECTED, RULE, Out
from tests.functions.test_push_worker import SENDER, TENANT, campaign, handled, notification, push_env
from tests.push.conftest import push_fake

# The campaign key is the rule's normalised sender (dots dropped at gmail.com).
SWEEP_KEY = campaign_row_key("sender:evesmith@gmail.com")


@pytest.fixture
def fake() -> Iterator[FakeGraph]:
    with push_fake() as graph:
        yield graph


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> list[timedelta]:
    asked: list[timedelta] = []

    def visible_now(delay: timedelta) -> int:
        asked.append(delay)
        return 0
    monkeypatch.setattr(push_worker, "_visibility", visible_now)
    return asked


class Push:
    """The app with the push path on, its push queue in Azurite, the runtime clock on the fake's."""

    def __init__(self, make_env: Any, fake: FakeGraph, unique_name: str, storage_conn: str) -> None:
        self.env, self.subs = push_env(make_env, fake, unique_name, storage_conn)
        self.fake, self.conn = fake, storage_conn
        self.queue = QueueClient.from_connection_string(storage_conn, self.env.rt.config.push.queue)
        self.queue.create_queue()
        self.sync()
        self.requests: list[dict[str, Any]] = []
        self.outcomes: list[str] = []

    def sync(self) -> None:
        self.env.clock.now = self.fake.push.now()

    def advance(self, seconds: float) -> None:
        self.fake.push.advance(seconds)
        self.sync()

    def call(self, body: dict[str, Any] | bytes, msg_id: str = "m") -> dict[str, Any]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        out = Out()
        summary = handled(self.env, QueueMessage(id=msg_id, body=raw, dequeue_count=1), out)
        self.requests += [json.loads(m) for m in out.value or []]
        self.outcomes.append(summary["outcome"])
        return summary

    def notify(self, box: str, message_id: str) -> dict[str, Any]:
        return self.call(json.loads(notification(self.fake, box, message_id, self.subs[box]).get_body()))

    def drain(self) -> list[dict[str, Any]]:
        """Process every message item now on the push queue; the sweep messages are taken off and
        returned (the test decides when each runs)."""
        sweeps = []
        while True:
            got = list(self.queue.receive_messages(max_messages=32))
            if not got:
                return sweeps
            for m in got:
                item = json.loads(base64.b64decode(m.content))
                self.queue.delete_message(m)
                if item["kind"] == "sweep":
                    sweeps.append(item)
                else:
                    self.call(item)

    def marker(self) -> dict[str, Any] | None:
        async def read() -> dict[str, Any] | None:
            async with TableClient.from_connection_string(self.conn, self.env.rt.config.push.table) as t:
                rows = [dict(r) async for r in t.query_entities(
                    "PartitionKey eq @pk", parameters={"pk": partition(RULE)})]
            assert len(rows) <= 1
            return rows[0] if rows else None
        return asyncio.run(read())

    def flag_campaign(self) -> list[str]:
        nmids = campaign(self.fake)
        for box in PROTECTED:
            for msg in self.fake.mailboxes.messages(box):
                self.notify(box, msg.id)
        return nmids


@pytest.fixture
def push(make_env: Any, fake: FakeGraph, unique_name: str, storage_conn: str,
         delays: list[timedelta]) -> Push:
    return Push(make_env, fake, unique_name, storage_conn)


def test_a_copy_whose_notification_never_comes_is_junked_by_the_next_sweep(push: Push,
                                                                            delays: list[timedelta]) -> None:
    nmids = push.flag_campaign()
    assert sorted(r["target"]["network_message_id"] for r in push.requests) == nmids
    (first,) = push.drain()
    assert (first["rule"], first["campaign"], first["seq"]) == (RULE, SWEEP_KEY, 0)
    assert delays == [timedelta(0)]
    assert push.call(first)["outcome"] == "sweep"     # the sweep at flag time: the 3 Inboxes, nothing new
    (second,) = push.drain()
    assert second["seq"] == 1 and delays[-1] == SWEEP_EVERY
    # A later copy 20 s after the flag; its change notification is never processed (dropped or at the
    # 3-minute tail).
    push.advance(20)
    late = "d051c5e4-93c2-4f22-1379-08dc51643229"
    arrived = push.fake.push.now()
    msg = push.fake.push.deliver_inbound(PROTECTED[1], sender=SENDER, subject="Question",
                                         network_message_id=late)
    push.advance(40)                                       # the successor is due SWEEP_EVERY after the flag
    before = len(push.requests)
    summary = push.call(second)
    assert summary["outcome"] == "sweep" and "3 inbox(es), 1 message(s) queued" in summary["detail"]
    (third,) = push.drain()                                # the flag by the late copy only extended the chain
    assert third["seq"] == 2 and third["chain_id"] == first["chain_id"]
    (req,) = push.requests[before:]
    assert (req["target"]["network_message_id"], req["source"]) == (late, "push")
    assert req["action"] == "move_to_junk"
    assert push.env.clock.now - arrived <= SWEEP_EVERY
    push.env.call("worker", QueueMessage(id="w", body=json.dumps(req).encode(), dequeue_count=1))
    moved = [e for r in push.fake.remediations for e in r.emails]
    assert [e["networkMessageId"] for e in moved] == [late]
    assert msg.id


def test_a_legitimate_sender_starts_no_sweep(push: Push) -> None:
    for box in PROTECTED:     # a colleague at a business domain, to every shared mailbox
        m = push.fake.push.deliver_inbound(box, sender="anna@fabrikam.com", subject="Invoice")
        push.notify(box, m.id)
    one = push.fake.push.deliver_inbound(PROTECTED[0], sender=SENDER, subject="Hello")   # a consumer, once
    push.notify(PROTECTED[0], one.id)
    assert push.outcomes == ["no_match"] * 4 and push.requests == []
    assert push.drain() == [] and push.marker() is None


def test_forged_and_malformed_sweep_messages(push: Push) -> None:
    base = {"schema": "push-notification/1", "kind": "sweep", "rule": RULE, "campaign": SWEEP_KEY,
            "chain_id": "0" * 32, "seq": 0, "tenant_id": TENANT, "received_at": "2026-11-20T12:00:00Z"}
    push.fake.push.deliver_inbound(PROTECTED[0], sender=SENDER, subject="Q")
    push.fake.clear_calls()
    # Well-formed, but no chain of ours / no sweeping rule of that name: stopped without a Graph call.
    assert push.call(base)["outcome"] == "sweep_stopped"
    for rule in ("no-such-rule", "consumer-reply-chain-file-link"):
        assert push.call({**base, "rule": rule})["outcome"] == "sweep_unknown"
    assert push.fake.calls == [] and push.requests == [] and push.drain() == [] and push.marker() is None
    bad = [{**base, "seq": "0"}, {**base, "seq": -1}, {**base, "seq": True}, {**base, "campaign": "sender:x"},
           {**base, "chain_id": "0" * 31 + "\n"}, {**base, "rule": "../x"}, {**base, "user_id": TENANT},
           {k: v for k, v in base.items() if k != "chain_id"}, {**base, "tenant_id": "x"}]
    for body in bad:
        assert push.call(body)["outcome"] == "invalid", body
    assert push.fake.calls == [] and push.drain() == []


def test_the_chain_ends_after_hot_until_and_duplicates_do_not_double_it(push: Push) -> None:
    push.flag_campaign()
    (first,) = push.drain()
    marker = push.marker()
    assert marker is not None and marker["Chain"] == first["chain_id"] and marker["Seq"] == 0
    body = json.dumps(first).encode()
    assert push.call(body)["outcome"] == "sweep"
    assert push.call(body)["detail"] == "duplicate"        # the same message delivered again
    (second,) = push.drain()                               # one successor, not two
    assert push.marker()["Seq"] == 1
    # Past hot-until (last copy + correlation_window, 1 h): the sweep due then is the last.
    push.advance(3600)
    summary = push.call(second)
    assert summary["outcome"] == "sweep" and summary["detail"].endswith("chain ended")
    assert push.drain() == [] and push.marker() is None
    assert push.call(second)["detail"] == "no_chain"
