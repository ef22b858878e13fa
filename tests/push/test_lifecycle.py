"""push/lifecycle.py: lifecycle queue items (reauthorizationRequired, subscriptionRemoved, missed) acted on
as https://learn.microsoft.com/graph/change-notifications-lifecycle-events says (Azurite + fake Graph)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from push.contract import SCHEMA
from push.lifecycle import LifecycleError, LifecycleFailed, handle_lifecycle, parse_lifecycle
from push.resync import parse_time
from push.subscriptions import PARTITION
from tests.push.conftest import Harness, drop_in_graph, graph_subs

pytestmark = pytest.mark.azurite

SUPPORT, SALES = "support@contoso.com", "sales@contoso.com"


def item(sid: str, event: str, **extra: Any) -> dict[str, Any]:
    return {"schema": SCHEMA, "kind": "lifecycle", "subscription_id": sid, "lifecycle_event": event,
            "tenant_id": "8f4a2c1e-0b7d-4e59-9c36-2d1f0a7b5e43", "received_at": "2026-12-02T04:00:00Z",
            **extra}


async def inbox(h: Harness, mailbox: str = SUPPORT) -> Any:
    return await h.store.get(h.user_id(mailbox), "inbox")


def test_missed_resyncs_the_folder_from_its_delta_link(harness: Any, fake: Any) -> None:
    async def body(h: Harness) -> tuple[Any, list[dict], str, Any, Any]:
        await h.manager.reconcile([SUPPORT])
        before = await inbox(h)
        h.queued.clear()
        lost = fake.mailboxes.add(SUPPORT, "<lost@x>")          # its notification was dropped
        out = await handle_lifecycle(h.manager, item(before.sub.subscription_id, "missed"))
        return out, list(h.queued), lost, before, await inbox(h)

    out, queued, lost, before, after = harness(body)
    assert (out.action, out.queued, out.complete) == ("resynced", 1, True)
    assert [i["message_id"] for i in queued] == [lost]
    assert after.sub.subscription_id == before.sub.subscription_id
    assert after.sub.delta_link != before.sub.delta_link and not after.pending


def test_subscription_removed_recreates_it_and_resyncs_the_gap(harness: Any, fake: Any,
                                                               receiver: Any) -> None:
    async def body(h: Harness) -> tuple[Any, list[dict], str, str, Any, Any]:
        await h.manager.reconcile([SUPPORT])
        old = (await inbox(h)).sub.subscription_id
        fake.push.remove_subscription(old)                        # the service removes it and says so
        fake.push.advance(200)
        told = [n for batch in receiver.received for n in batch["value"] if "lifecycleEvent" in n]
        assert [(n["subscriptionId"], n["lifecycleEvent"]) for n in told] == [(old, "subscriptionRemoved")]
        gap = fake.mailboxes.add(SUPPORT, "<gap@x>")               # no subscription: no notification
        h.queued.clear()
        out = await handle_lifecycle(h.manager, item(old, "subscriptionRemoved"))
        return out, list(h.queued), gap, old, await inbox(h), await h.store.by_id(old)

    out, queued, gap, old, now, by_old = harness(body)
    assert out.action == "recreated" and out.queued == 1
    assert now.sub.subscription_id != old and now.sub.subscription_id in graph_subs(fake)
    assert by_old is None
    assert [i["message_id"] for i in queued] == [gap]


def test_reauthorization_required_reauthorizes_or_renews_when_due(harness: Any, fake: Any) -> None:
    async def body(h: Harness) -> tuple[Any, Any, str, str]:
        await h.manager.reconcile([SUPPORT])
        sid = (await inbox(h)).sub.subscription_id
        first = await handle_lifecycle(h.manager, item(sid, "reauthorizationRequired"))
        row = await h.table.get_entity(PARTITION, (await inbox(h)).key)
        row["ExpiresAt"] = (fake.push.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        await h.table.update_entity(row)
        second = await handle_lifecycle(h.manager, item(sid, "reauthorizationRequired"))
        return first, second, sid, (await inbox(h)).sub.expires_at

    first, second, sid, expires = harness(body)
    assert first.action == "reauthorized"
    reauthorize = fake.calls_to("POST", r"/reauthorize$")
    assert [c.path for c in reauthorize] == [f"/v1.0/subscriptions/{sid}/reauthorize"]
    # Due for renewal anyway: the PATCH renews and reauthorizes at once (lifecycle docs).
    assert second.action == "renewed" and len(fake.calls_to("PATCH", rf"/subscriptions/{sid}$")) == 1
    assert parse_time(expires) > fake.push.now() + timedelta(days=6)


def test_reauthorizing_a_subscription_graph_lost_recreates_it(harness: Any, fake: Any) -> None:
    async def body(h: Harness) -> tuple[Any, str, Any]:
        await h.manager.reconcile([SUPPORT])
        sid = (await inbox(h)).sub.subscription_id
        drop_in_graph(fake, sid)
        return await handle_lifecycle(h.manager, item(sid, "reauthorizationRequired")), sid, await inbox(h)

    out, old, now = harness(body)
    assert out.action == "recreated" and now.sub.subscription_id != old


def test_an_unknown_subscription_id_is_ignored_and_logged(harness: Any, fake: Any,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    async def body(h: Harness) -> list[Any]:
        await h.manager.reconcile([SUPPORT])
        fake.clear_calls()
        return [await handle_lifecycle(h.manager, item("6a0c2d0e-1111-4222-8333-944455556666", e))
                for e in ("missed", "subscriptionRemoved", "reauthorizationRequired")]

    outs = harness(body)
    assert [o.action for o in outs] == ["ignored"] * 3
    assert fake.calls == [] and len(graph_subs(fake)) == 2
    assert "unknown subscription 6a0c2d0e-1111-4222-8333-944455556666" in caplog.text


def test_a_mailbox_no_longer_protected_is_unsubscribed_not_recreated(harness: Any, fake: Any) -> None:
    async def body(h: Harness) -> tuple[Any, int, Any]:
        await h.manager.reconcile([SUPPORT, SALES])
        sid = (await inbox(h, SALES)).sub.subscription_id
        drop_in_graph(fake, sid)
        posts = len(fake.calls_to("POST", r"^/v1\.0/subscriptions$"))
        out = await handle_lifecycle(h.manager, item(sid, "subscriptionRemoved"), protected={SUPPORT})
        return out, len(fake.calls_to("POST", r"^/v1\.0/subscriptions$")) - posts, await inbox(h, SALES)

    out, created, row = harness(body)
    assert out.action == "removed" and created == 0 and row is None
    sales = fake.users.get(SALES).id
    assert [s["resource"] for s in graph_subs(fake).values() if sales in s["resource"]] == [
        f"users/{sales}/mailFolders('sentitems')/messages"]     # the timer removes that one


def test_graph_failures_say_whether_a_retry_may_help(harness: Any, fake: Any) -> None:
    async def body(h: Harness) -> list[LifecycleFailed]:
        await h.manager.reconcile([SUPPORT])
        sid = (await inbox(h)).sub.subscription_id
        out = []
        for status in (503, 403):
            fake.inject("POST", r"/reauthorize$", status)
            with pytest.raises(LifecycleFailed) as err:
                await handle_lifecycle(h.manager, item(sid, "reauthorizationRequired"))
            out.append(err.value)
        return out

    busy, denied = harness(body)
    assert busy.transient and "HTTP 503" in str(busy)
    assert not denied.transient and "HTTP 403" in str(denied)


@pytest.mark.parametrize(("bad", "field"), [
    ({"schema": "push-notification/2"}, "schema"),
    ({"kind": "change"}, "kind"),
    ({"subscription_id": "../x"}, "subscription_id"),
    ({"subscription_id": 7}, "subscription_id"),
    ({"lifecycle_event": "deleted"}, "lifecycle_event"),
    ({"extra": 1}, "extra"),
])
def test_malformed_lifecycle_items_are_refused_naming_the_field(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(LifecycleError, match=rf"^{field}: "):
        parse_lifecycle(item("6a0c2d0e-1111-4222-8333-944455556666", "missed", **bad))
    with pytest.raises(LifecycleError, match=r"^message: "):
        parse_lifecycle(["not", "an", "object"])


def test_with_notifications_dropped_the_missed_events_resync_every_lost_message(
        harness: Any, fake: Any, receiver: Any) -> None:
    """The fake drops 30% of change notifications and sends ``missed`` for them (as Graph documents); acting
    on those lifecycle items recovers every message the notifications did not announce."""
    fake.push.configure(drop_rate=0.3, seed=7)

    async def body(h: Harness) -> tuple[set[str], set[str], set[str], int]:
        await h.manager.reconcile([SUPPORT, SALES])
        h.queued.clear()
        delivered = {fake.mailboxes.add(m, f"<m{i}@x>") for i in range(20) for m in (SUPPORT, SALES)}
        fake.push.advance(600)                               # past the documented 3-minute maximum latency
        notes = [n for batch in receiver.received for n in batch["value"]]
        notified = {n["resourceData"]["id"] for n in notes if "resourceData" in n}
        missed = [n for n in notes if n.get("lifecycleEvent") == "missed"]
        for n in missed:
            out = await handle_lifecycle(h.manager, item(n["subscriptionId"], "missed"))
            assert out.action == "resynced"
        return delivered, notified, {i["message_id"] for i in h.queued}, len(missed)

    delivered, notified, resynced, missed = harness(body)
    assert missed > 0 and notified < delivered                 # some were really lost
    assert delivered - notified <= resynced                     # every lost one came back through delta
    assert resynced <= delivered
