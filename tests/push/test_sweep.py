"""The hot-campaign sweep's chain (push/sweep.py) against Azurite (the marker row, the subscription rows) and
the fake Graph's message delta through the real msgraph-sdk client, with the fake's manual clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from push.contract import Subscription
from push.notification import parse_notification
from push.sweep import MAX_HOT, STALL_AFTER, SWEEP_EVERY, Sweeper, campaign_row_key, hot_until, partition
from tests.push.conftest import MAILBOXES, Harness

RULE = "consumer-sender-to-shared-mailboxes"
KEY = "sender:evesmith@gmail.com"
ROW = campaign_row_key(KEY)
PARAMS = {"correlation_window": timedelta(hours=1)}


class Sent(list[tuple[dict[str, Any], timedelta]]):
    async def __call__(self, item: dict[str, Any], delay: timedelta) -> None:
        parse_notification(__import__("json").dumps(item))   # what it queues is a valid sweep message
        self.append((item, delay))


async def setup(h: Harness) -> tuple[Sweeper, Sent]:
    for i, box in enumerate(MAILBOXES):
        await h.store.save(Subscription(f"5d1c0a1e-1111-4222-8333-{i:012d}", box, h.user_id(box), "inbox",
                                        "2026-12-09T00:00:00Z"), etag=None, pending=False)
    sent = Sent()
    return Sweeper(h.table, sent, h.manager, clock=h.fake.push.now), sent


def rows(h: Harness, age: timedelta = timedelta(0)) -> list[dict[str, Any]]:
    ts = (h.fake.push.now() - age).isoformat().replace("+00:00", "Z")
    return [{"Timestamp": ts, "Campaigns": [KEY], "NetworkMessageId": "x"}]


async def sweep(s: Sweeper, item: dict[str, Any]) -> Any:
    return await s.sweep(item["rule"], item["campaign"], item["chain_id"], item["seq"], MAILBOXES)


def test_concurrent_duplicate_deliveries_claim_one_step(harness: Any) -> None:
    async def body(h: Harness) -> None:
        s, sent = await setup(h)
        assert await s.flagged(RULE, PARAMS, rows(h)) == {ROW: "started"}
        (first, delay), = sent
        assert delay == timedelta(0) and first["seq"] == 0
        a, b = await asyncio.gather(sweep(s, first), sweep(s, first))
        assert sorted([a.outcome, b.outcome]) == ["duplicate", "swept"]
        # The loser may have queued a successor before it lost the claim; only one of them runs.
        successors = [i for i, d in sent[1:]]
        assert successors and all(i["seq"] == 1 and d == SWEEP_EVERY for i, d in sent[1:])
        h.fake.push.advance(60)
        outcomes = [(await sweep(s, i)).outcome for i in successors]
        assert outcomes.count("swept") == 1
        row = await h.table.get_entity(partition(RULE), ROW)
        assert row["Seq"] == 2
    harness(body)


def test_one_mailbox_failing_never_stops_the_others(harness: Any) -> None:
    async def body(h: Harness) -> None:
        s, sent = await setup(h)
        await s.flagged(RULE, PARAMS, rows(h))
        h.fake.push.deliver_inbound(MAILBOXES[2], sender="eve.smith@gmail.com", subject="Q")
        h.fake.inject("GET", h.user_id(MAILBOXES[0]) + r"/mailFolders/inbox/messages/delta", 503, times=None)
        done = await sweep(s, sent[0][0])
        assert done.outcome == "swept" and done.failed == [MAILBOXES[0]] and done.mailboxes == 2
        assert [q["user_id"] for q in h.queued] == [h.user_id(MAILBOXES[2])]
        assert (await h.store.get(h.user_id(MAILBOXES[0]), "inbox")).pending   # the timer retries it
    harness(body)


def test_a_flag_extends_a_running_chain_and_a_stalled_chain_is_replaced(harness: Any) -> None:
    async def body(h: Harness) -> None:
        s, sent = await setup(h)
        await s.flagged(RULE, PARAMS, rows(h, timedelta(minutes=30)))
        h.fake.push.advance(120)
        assert await s.flagged(RULE, PARAMS, rows(h)) == {ROW: "extended"}
        assert await s.flagged(RULE, PARAMS, rows(h, timedelta(minutes=1))) == {ROW: "running"}
        assert len(sent) == 1                                   # still one chain
        row = await h.table.get_entity(partition(RULE), ROW)
        assert row["HotUntil"] == (h.fake.push.now() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
        # Its sweep message was lost: once overdue by STALL_AFTER a flag starts another chain, and the old
        # chain's message (if it turns up) stops.
        h.fake.push.advance((STALL_AFTER + SWEEP_EVERY).total_seconds())
        assert await s.flagged(RULE, PARAMS, rows(h)) == {ROW: "started"}
        assert sent[1][0]["chain_id"] != sent[0][0]["chain_id"]
        assert (await sweep(s, sent[0][0])).outcome == "superseded"
        assert [(await sweep(s, sent[1][0])).outcome] == ["swept"]
    harness(body)


def test_an_unreadable_marker_is_no_chain_and_a_flag_replaces_it(harness: Any) -> None:
    async def body(h: Harness) -> None:
        s, sent = await setup(h)
        await h.table.create_entity({"PartitionKey": partition(RULE), "RowKey": ROW, "Chain": "../x",
                                     "Seq": 0, "HotUntil": "never", "NextDue": "now"})
        forged = {"rule": RULE, "campaign": ROW, "chain_id": "0" * 32, "seq": 0}
        h.fake.clear_calls()
        assert (await sweep(s, forged)).outcome == "no_chain" and h.fake.calls == [] and sent == []
        assert await s.flagged(RULE, PARAMS, rows(h)) == {ROW: "started"}
        assert (await h.table.get_entity(partition(RULE), ROW))["Chain"] == sent[0][0]["chain_id"]
    harness(body)


def test_hot_until_is_the_last_copy_plus_the_window_capped() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 2, 5, tzinfo=UTC)
    assert hot_until(now - timedelta(minutes=10), timedelta(hours=1), now) == now + timedelta(minutes=50)
    assert hot_until(now, timedelta(hours=24), now) == now + MAX_HOT           # a tenant's long window
    assert hot_until(now + timedelta(days=3), timedelta(hours=1), now) == now + MAX_HOT   # future stamp
