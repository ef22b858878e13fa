"""clientState rotation (docs/push.md, "The clientState secret"): after the secret changes, the timer's
reconcile recreates every subscription with the new value, deletes the old ones and resyncs the gap, so
mail whose notifications the endpoint refused meanwhile is still queued. Azurite + the fake Graph (real
msgraph-sdk)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from typing import Any

import pytest

from core.settings import PushSettings
from push.subscriptions import (
    INDEX_PARTITION,
    PARTITION,
    ReconcileSummary,
    SubscriptionManager,
    row_key,
)
from tests.push.conftest import CLIENT_STATE, INFO, SALES, SUPPORT, Harness, graph_subs

pytestmark = pytest.mark.azurite

NEW_STATE = "n3w-client-state-after-azd-provision-" + "y" * 20
ALL = [f"{m}/{f}" for m in (INFO, SALES, SUPPORT) for f in ("inbox", "sentitems")]


def rotated(h: Harness, settings: PushSettings, state: str = NEW_STATE) -> SubscriptionManager:
    """The manager the timer builds once the app settings carry the new secret (same table and queue)."""
    async def enqueue(items: list[dict[str, Any]]) -> None:
        h.queued.extend(items)

    return SubscriptionManager(h.graph, h.store, dataclasses.replace(settings, client_state=state), enqueue,
                               clock=h.fake.push.now)


def notified(receiver: Any, message_id: str) -> list[dict[str, Any]]:
    return [n for batch in receiver.received for n in batch["value"]
            if n.get("resourceData", {}).get("id") == message_id]


def test_after_rotation_the_reconcile_recreates_every_subscription_and_resyncs_the_refused_mail(
        harness: Any, fake: Any, receiver: Any, settings: PushSettings) -> None:
    receiver.client_state = CLIENT_STATE

    async def body(h: Harness) -> dict[str, Any]:
        await h.manager.reconcile([SUPPORT, SALES, INFO])
        old = dict(graph_subs(fake))
        # The secret rotates (azd provision): the endpoint now checks the new value ...
        receiver.client_state = NEW_STATE
        # ... and a mail arrives before the timer runs: its notification carries the old value.
        gap = fake.push.deliver_inbound(SUPPORT, sender="someone@outlook.com", subject="before").id
        fake.push.advance(600)                                     # past the 3-minute maximum latency
        h.queued.clear()
        fake.clear_calls()
        manager = rotated(h, settings)
        summary = await manager.reconcile([SUPPORT, SALES, INFO])
        queued = list(h.queued)
        inbox = await h.store.get(h.user_id(SUPPORT), "inbox")
        later = fake.push.deliver_inbound(SUPPORT, sender="someone@outlook.com", subject="after").id
        fake.push.advance(600)
        return {"old": old, "gap": gap, "later": later, "summary": summary, "queued": queued,
                "inbox": inbox, "by_old": [await h.store.by_id(i) for i in old],
                "again": await manager.reconcile([SUPPORT, SALES, INFO])}

    r = harness(body)
    summary: ReconcileSummary = r["summary"]
    assert summary.rotated == ALL and summary.failed == []
    assert summary.created == summary.repaired == summary.renewed == summary.removed == []
    assert summary.as_dict()["rotated"] == ALL
    # Graph: six new subscriptions with the new clientState, none of the old ones left.
    now = graph_subs(fake)
    assert len(now) == 6 and not set(now) & set(r["old"])
    assert {s["clientState"] for s in now.values()} == {NEW_STATE}
    assert sorted(c.path.rsplit("/", 1)[-1] for c in fake.calls_to("DELETE", r"/subscriptions/")) \
        == sorted(r["old"])
    assert r["by_old"] == [None] * 6
    # The refused notification was not taken; the resync found that mail and queued it for the new
    # subscription.
    assert [n["resourceData"]["id"] for n in receiver.refused] == [r["gap"]]
    assert notified(receiver, r["gap"]) == []
    assert [(i["message_id"], i["subscription_id"]) for i in r["queued"]] == \
        [(r["gap"], r["inbox"].sub.subscription_id)]
    # Later notifications carry the new value and are taken.
    later = notified(receiver, r["later"])
    assert [(n["clientState"], n["subscriptionId"]) for n in later] == \
        [(NEW_STATE, r["inbox"].sub.subscription_id)]
    assert len(receiver.refused) == 1
    # Rotated once: the next run has nothing to rotate.
    assert r["again"].rotated == [] and r["again"].unchanged == 6


def test_rows_written_before_fingerprints_are_recreated(harness: Any, fake: Any) -> None:
    async def body(h: Harness) -> tuple[ReconcileSummary, dict[str, Any], list[Any]]:
        await h.manager.reconcile([SUPPORT, SALES])
        old = dict(graph_subs(fake))
        async for row in h.table.query_entities("PartitionKey eq @p", parameters={"p": PARTITION}):
            del row["ClientStateFingerprint"]                      # as written before this change
            await h.table.update_entity(row, mode="replace")
        h.queued.clear()
        summary = await h.manager.reconcile([SUPPORT, SALES])      # the same secret as before
        rows = [e async for e in h.table.query_entities("PartitionKey eq @p", parameters={"p": PARTITION})]
        return summary, old, rows

    summary, old, rows = harness(body)
    assert summary.rotated == [f"{m}/{f}" for m in (SALES, SUPPORT) for f in ("inbox", "sentitems")]
    assert summary.failed == []
    now = graph_subs(fake)
    assert len(now) == 4 and not set(now) & set(old)
    assert {s["clientState"] for s in now.values()} == {CLIENT_STATE}
    assert len({r["ClientStateFingerprint"] for r in rows}) == 1 and len(rows) == 4


def test_the_table_holds_a_fingerprint_of_the_client_state_never_the_secret(
        harness: Any, fake: Any, settings: PushSettings) -> None:
    async def body(h: Harness) -> tuple[list[Any], list[Any]]:
        await h.manager.reconcile([SUPPORT])
        before = [e async for e in h.table.list_entities()]
        await rotated(h, settings).reconcile([SUPPORT])
        return before, [e async for e in h.table.list_entities()]

    before, after = harness(body)

    def fingerprints(rows: list[Any]) -> set[str]:
        return {r["ClientStateFingerprint"] for r in rows if r["PartitionKey"] == PARTITION}

    # The documented construction: HMAC-SHA256 keyed by the secret over a fixed label, 128 bits in hex.
    def expected(secret: str) -> str:
        return hmac.new(secret.encode(), b"xdr-responder/push/client-state-fingerprint/v1",
                        hashlib.sha256).hexdigest()[:32]

    assert fingerprints(before) == {expected(CLIENT_STATE)}
    assert fingerprints(after) == {expected(NEW_STATE)}
    assert expected(CLIENT_STATE) != hashlib.sha256(CLIENT_STATE.encode()).hexdigest()[:32]
    for secret, rows in ((CLIENT_STATE, before), (NEW_STATE, after)):
        for row in rows:
            for name, value in row.items():
                text = str(value)
                assert secret not in text and secret[:16] not in text, name
                assert secret.encode().hex() not in text.lower(), name
    assert {r["PartitionKey"] for r in after} == {PARTITION, INDEX_PARTITION}


@pytest.mark.parametrize("value", [5, "", "A" * 32, "0" * 31, "0" * 64, CLIENT_STATE])
def test_a_hostile_fingerprint_makes_the_row_unreadable_and_it_is_replaced(
        harness: Any, fake: Any, value: Any) -> None:
    async def body(h: Harness) -> tuple[ReconcileSummary, Any, Any, str]:
        await h.manager.reconcile([SUPPORT])
        uid = h.user_id(SUPPORT)
        row = await h.table.get_entity(PARTITION, row_key(uid, "inbox"))
        sid = row["SubscriptionId"]
        row["ClientStateFingerprint"] = value
        await h.table.update_entity(row, mode="replace")
        by_id = await h.store.by_id(sid)
        summary = await h.manager.reconcile([SUPPORT])
        return summary, by_id, await h.store.get(uid, "inbox"), sid

    summary, by_id, inbox, sid = harness(body)
    assert by_id is None                                          # never followed
    assert [(k, "ClientStateFingerprint" in why) for k, why in summary.invalid_rows] == \
        [(row_key(fake.users.get(SUPPORT).id, "inbox"), True)]
    assert summary.created == [f"{SUPPORT}/inbox"] and summary.rotated == []
    assert inbox.sub.subscription_id != sid and inbox.sub.subscription_id in graph_subs(fake)


def test_one_mailboxs_rotation_failure_never_stops_the_others(harness: Any, fake: Any,
                                                              settings: PushSettings) -> None:
    async def body(h: Harness) -> tuple[ReconcileSummary, dict[str, Any], dict[str, Any], ReconcileSummary]:
        await h.manager.reconcile([SUPPORT, SALES, INFO])
        old = dict(graph_subs(fake))
        sales = h.user_id(SALES)
        info_inbox = (await h.store.get(h.user_id(INFO), "inbox")).sub.subscription_id
        fake.inject("POST", r"^/v1\.0/subscriptions$", 503, times=None, body_contains=sales)
        fake.inject("DELETE", rf"^/v1\.0/subscriptions/{info_inbox}$", 503, times=None)
        manager = rotated(h, settings)
        first = await manager.reconcile([SUPPORT, SALES, INFO])
        fake.clear_faults()
        return first, old, {"info_inbox": info_inbox, "sales": sales}, \
            await manager.reconcile([SUPPORT, SALES, INFO])

    first, old, ids, second = harness(body)
    assert first.rotated == [f"{m}/{f}" for m in (INFO, SUPPORT) for f in ("inbox", "sentitems")]
    failed = dict(first.failed)
    assert set(failed) == {f"{SALES}/inbox", f"{SALES}/sentitems", f"{INFO}/inbox"}
    assert "HTTP 503" in failed[f"{SALES}/inbox"]
    assert ids["info_inbox"] in failed[f"{INFO}/inbox"] and "HTTP 503" in failed[f"{INFO}/inbox"]
    # Sales keeps its old subscriptions until a run can replace them: the next one does.
    assert second.rotated == [f"{SALES}/inbox", f"{SALES}/sentitems"] and second.failed == []
    now = graph_subs(fake)
    # The undeleted old one is left to expire (the endpoint refuses its clientState meanwhile).
    assert set(now) & set(old) == {ids["info_inbox"]}
    assert sorted(s["clientState"] for s in now.values()) == sorted([CLIENT_STATE] + [NEW_STATE] * 6)
