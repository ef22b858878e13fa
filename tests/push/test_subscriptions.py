"""push/subscriptions.py: the subscription table (Azurite) and reconcile against the fake Graph."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from push.contract import SCHEMA, Subscription
from push.resync import parse_time
from push.subscriptions import (
    INDEX_PARTITION,
    PARTITION,
    ReconcileSummary,
    client_state_fingerprint,
    protected_mailboxes,
    row_key,
)
from tests.push.conftest import CLIENT_STATE, INFO, SALES, SUPPORT, Harness, drop_in_graph, graph_subs

pytestmark = pytest.mark.azurite



def test_reconcile_creates_one_subscription_per_mailbox_and_folder_as_documented(harness: Any) -> None:
    async def body(h: Harness) -> ReconcileSummary:
        return await h.manager.reconcile([SUPPORT, "Sales@Contoso.com "])

    summary = harness(body)
    assert summary.created == [f"{m}/{f}" for m in (SALES, SUPPORT) for f in ("inbox", "sentitems")]
    assert summary.failed == [] and summary.renewed == [] and summary.removed == []


def test_new_subscriptions_carry_the_documented_properties(harness: Any, fake: Any, receiver: Any) -> None:
    started = fake.push.now()
    harness(lambda h: h.manager.reconcile([SUPPORT]))
    subs = sorted(graph_subs(fake).values(), key=lambda s: s["resource"])
    uid = fake.users.get(SUPPORT).id
    assert [s["resource"] for s in subs] == [f"users/{uid}/mailFolders('inbox')/messages",
                                             f"users/{uid}/mailFolders('sentitems')/messages"]
    for s in subs:
        assert s["changeType"] == "created"
        assert s["notificationUrl"] == s["lifecycleNotificationUrl"] == receiver.url
        assert s["clientState"] == CLIENT_STATE
        expires = parse_time(s["expirationDateTime"])
        # Outlook messages: at most 10,080 minutes; we ask for that minus a small margin.
        assert started + timedelta(minutes=10_080 - 60) < expires <= started + timedelta(minutes=10_080)
    # Graph validated both URLs before creating each subscription (the handshake the receiver answered).
    assert len(fake.push.validations) == 4 and all(v.ok for v in fake.push.validations)


def test_rows_and_index_make_by_id_a_point_read(harness: Any, fake: Any) -> None:
    async def body(h: Harness) -> tuple[Any, Any, list[Any]]:
        await h.manager.reconcile([SUPPORT])
        sid = next(i for i, s in graph_subs(fake).items() if "inbox" in s["resource"])
        index = [e async for e in h.table.query_entities("PartitionKey eq @p",
                                                         parameters={"p": INDEX_PARTITION})]
        return await h.store.by_id(sid), await h.store.by_id("5b1f6f5e-0000-4000-8000-000000000000"), index

    found, unknown, index = harness(body)
    uid = fake.users.get(SUPPORT).id
    assert found is not None and (found.mailbox, found.user_id, found.folder) == (SUPPORT, uid, "inbox")
    assert found.delta_link.startswith(fake.base_url + "/")     # the baseline round's deltaLink
    assert unknown is None
    assert sorted(e["Key"] for e in index) == [row_key(uid, "inbox"), row_key(uid, "sentitems")]


def test_a_new_subscription_records_a_baseline_so_the_next_resync_returns_only_later_mail(
        harness: Any, fake: Any) -> None:
    old = fake.mailboxes.add(SUPPORT, "<old@x>")        # already there: inside the baseline lookback

    async def body(h: Harness) -> tuple[list[dict], list[dict]]:
        await h.manager.reconcile([SUPPORT])
        at_creation = list(h.queued)
        h.queued.clear()
        new = fake.mailboxes.add(SUPPORT, "<new@x>")
        entry = await h.store.get(h.user_id(SUPPORT), "inbox")
        await h.manager.resync(entry)
        return at_creation, [dict(i, new=new) for i in h.queued]

    at_creation, later = harness(body)
    assert [i["message_id"] for i in at_creation] == [old]
    assert len(later) == 1 and later[0]["message_id"] == later[0]["new"]
    item = later[0]
    assert item["schema"] == SCHEMA and item["kind"] == "message"
    assert item["user_id"] == fake.users.get(SUPPORT).id and item["subscription_id"] in graph_subs(fake)


def test_a_subscription_expiring_within_the_threshold_is_renewed(harness: Any, fake: Any) -> None:
    async def body(h: Harness) -> tuple[ReconcileSummary, str, Any]:
        await h.manager.reconcile([SUPPORT])
        entry = await h.store.get(h.user_id(SUPPORT), "inbox")
        soon = (fake.push.now() + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        row = await h.table.get_entity(PARTITION, entry.key)
        row["ExpiresAt"] = soon
        await h.table.update_entity(row)
        fake.clear_calls()
        summary = await h.manager.reconcile([SUPPORT])
        return summary, entry.sub.subscription_id, await h.store.get(h.user_id(SUPPORT), "inbox")

    summary, sid, after = harness(body)
    assert summary.renewed == [f"{SUPPORT}/inbox"] and summary.created == [] and summary.repaired == []
    assert summary.unchanged == 1                                     # sentitems: nothing to do
    patches = fake.calls_to("PATCH", r"/subscriptions/")
    assert [c.path for c in patches] == [f"/v1.0/subscriptions/{sid}"]
    assert set(patches[0].json) == {"expirationDateTime"}
    assert after.sub.subscription_id == sid
    assert parse_time(after.sub.expires_at) == parse_time(graph_subs(fake)[sid]["expirationDateTime"])
    assert parse_time(after.sub.expires_at) > fake.push.now() + timedelta(days=6)


@pytest.mark.parametrize("expiring", [False, True], ids=["found-by-get", "404-on-renew"])
def test_a_subscription_graph_no_longer_has_is_recreated_and_the_gap_resynced(
        harness: Any, fake: Any, expiring: bool) -> None:
    async def body(h: Harness) -> tuple[ReconcileSummary, str, Any, Any, list[dict], str]:
        await h.manager.reconcile([SUPPORT])
        entry = await h.store.get(h.user_id(SUPPORT), "inbox")
        old = entry.sub.subscription_id
        drop_in_graph(fake, old)                                    # Graph no longer has it
        if expiring:
            row = await h.table.get_entity(PARTITION, entry.key)
            row["ExpiresAt"] = (fake.push.now() + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
            await h.table.update_entity(row)
        gap = fake.mailboxes.add(SUPPORT, "<during-the-gap@x>")    # no notification for this one
        h.queued.clear()
        summary = await h.manager.reconcile([SUPPORT])
        new = await h.store.get(h.user_id(SUPPORT), "inbox")
        return summary, old, await h.store.by_id(old), new, list(h.queued), gap

    summary, old, by_old, new, queued, gap = harness(body)
    assert summary.repaired == [f"{SUPPORT}/inbox"] and summary.failed == []
    assert by_old is None and new.sub.subscription_id != old and new.sub.subscription_id in graph_subs(fake)
    assert [i["message_id"] for i in queued] == [gap]
    assert all(i["subscription_id"] == new.sub.subscription_id for i in queued)
    assert new.pending is False


def test_mailboxes_no_longer_protected_lose_their_subscriptions(harness: Any, fake: Any) -> None:
    async def body(h: Harness) -> tuple[ReconcileSummary, list[Any]]:
        await h.manager.reconcile([SUPPORT, SALES])
        summary = await h.manager.reconcile([SUPPORT])
        rows = [e async for e in h.table.list_entities()]
        return summary, rows

    summary, rows = harness(body)
    assert summary.removed == [f"{SALES}/inbox", f"{SALES}/sentitems"]
    sales = fake.users.get(SALES).id
    assert all(sales not in s["resource"] for s in graph_subs(fake).values())
    assert len(graph_subs(fake)) == 2
    assert sorted(r["PartitionKey"] for r in rows) == [PARTITION] * 2 + [INDEX_PARTITION] * 2
    assert len(fake.calls_to("DELETE", r"/subscriptions/")) == 2


def test_one_mailboxs_failure_never_stops_the_others(harness: Any, fake: Any) -> None:
    sales = fake.users.get(SALES).id
    fake.inject("POST", r"^/v1\.0/subscriptions$", 503, times=None, body_contains=sales)

    summary = harness(lambda h: h.manager.reconcile([SUPPORT, SALES, "nobody@contoso.com", "not an address"]))
    assert summary.created == [f"{SUPPORT}/inbox", f"{SUPPORT}/sentitems"]
    failed = dict(summary.failed)
    assert set(failed) == {f"{SALES}/inbox", f"{SALES}/sentitems", "nobody@contoso.com", "not an address"}
    assert "HTTP 503" in failed[f"{SALES}/inbox"]
    assert "resolve user" in failed["nobody@contoso.com"] and "HTTP 404" in failed["nobody@contoso.com"]
    assert "not a mailbox address" in failed["not an address"]
    assert summary.as_dict()["failed"][0].keys() == {"what", "reason"}


def test_a_mailbox_that_fails_to_resolve_keeps_its_subscriptions(harness: Any, fake: Any) -> None:
    async def body(h: Harness) -> ReconcileSummary:
        await h.manager.reconcile([SUPPORT, SALES])
        fake.inject("GET", r"/users/sales@contoso\.com$", 503, times=None)
        return await h.manager.reconcile([SUPPORT, SALES])

    summary = harness(body)
    assert summary.removed == [] and [w for w, _ in summary.failed] == [SALES]
    assert len(graph_subs(fake)) == 4 and fake.calls_to("DELETE", r"/subscriptions/") == []


def test_unreadable_rows_are_reported_never_followed_and_replaced(harness: Any, fake: Any) -> None:
    async def body(h: Harness) -> tuple[ReconcileSummary, Any, Any]:
        uid = h.user_id(SUPPORT)
        # A row for the wanted inbox with a subscription id from elsewhere and a hostile link ...
        await h.table.create_entity({"PartitionKey": PARTITION, "RowKey": row_key(uid, "inbox"),
                                     "SubscriptionId": "../../users/x", "Mailbox": SUPPORT, "UserId": uid,
                                     "Folder": "inbox", "ExpiresAt": "2099-01-01T00:00:00Z",
                                     "DeltaLink": "https://evil.example/steal"})
        await h.table.create_entity({"PartitionKey": INDEX_PARTITION, "RowKey": "forged-id",
                                     "Key": row_key(uid, "inbox")})
        # ... and junk under another key.
        await h.table.create_entity({"PartitionKey": PARTITION, "RowKey": "junk", "UserId": "nope"})
        await h.table.create_entity({"PartitionKey": INDEX_PARTITION, "RowKey": "odd-key",
                                     "Key": "x' or PartitionKey ne 'y"})
        by_forged = await h.store.by_id("forged-id")
        assert await h.store.by_id("odd-key") is None
        summary = await h.manager.reconcile([SUPPORT])
        return summary, by_forged, await h.store.get(uid, "inbox")

    summary, by_forged, inbox = harness(body)
    assert by_forged is None
    reasons = dict(summary.invalid_rows)
    assert "SubscriptionId" in reasons[row_key(fake.users.get(SUPPORT).id, "inbox")]
    assert "UserId" in reasons["junk"]
    assert f"{SUPPORT}/inbox" in summary.created
    assert inbox.sub.subscription_id in graph_subs(fake) and inbox.sub.delta_link.startswith(fake.base_url)
    assert not [c for c in fake.calls if "steal" in c.url or "../" in c.path]


def test_a_stored_delta_link_outside_graph_is_refused_and_the_resync_stays_owed(harness: Any,
                                                                                fake: Any) -> None:
    async def body(h: Harness) -> tuple[Any, Any]:
        await h.manager.reconcile([SUPPORT])
        entry = await h.store.get(h.user_id(SUPPORT), "inbox")
        row = await h.table.get_entity(PARTITION, entry.key)
        row["DeltaLink"] = "https://graph.microsoft.com.evil.example/v1.0/users/x/messages/delta"
        await h.table.update_entity(row)
        fake.clear_calls()
        result = await h.manager.resync(await h.store.get(h.user_id(SUPPORT), "inbox"))
        return result, await h.store.get(h.user_id(SUPPORT), "inbox")

    result, after = harness(body)
    assert result is None and after.pending is True
    assert fake.calls == []


def test_protected_mailboxes_are_the_union_of_the_mail_rules_protected_recipients() -> None:
    from core.tenant import TenantConfig
    from detections.catalog import load_catalog

    tenant = TenantConfig.from_mapping({"params": {"protected_recipients": ["Support@Contoso.com"]},
                                        "rules": {"consumer-reply-chain-file-link": {
                                            "params": {"protected_recipients": ["sales@contoso.com"]}}}},
                                       source="test")
    assert protected_mailboxes(load_catalog(), tenant) == [SALES, SUPPORT]
    off = TenantConfig.from_mapping({"params": {"protected_recipients": [SUPPORT]},
                                     "rules": {"consumer-sender-to-shared-mailboxes": {"enabled": False},
                                               "consumer-reply-chain-file-link": {"enabled": False}}},
                                    source="test")
    assert protected_mailboxes(load_catalog(), off) == []


def test_a_resync_cut_short_by_its_bound_is_continued_by_the_next_runs(harness: Any, fake: Any) -> None:
    async def body(h: Harness) -> tuple[list[Any], set[str], set[str]]:
        await h.manager.reconcile([SUPPORT])
        entry = await h.store.get(h.user_id(SUPPORT), "inbox")
        h.queued.clear()
        sent = {fake.mailboxes.add(SUPPORT, f"<burst{i}@x>") for i in range(12)}
        first = await h.manager.resync(entry)                 # e.g. after `missed`: 2 pages of 5
        states = [(first.complete, (await h.store.get(h.user_id(SUPPORT), "inbox")).pending)]
        for _ in range(2):
            summary = await h.manager.reconcile([SUPPORT])
            after = await h.store.get(h.user_id(SUPPORT), "inbox")
            states.append((summary.resynced, after.pending))
        return states, sent, {i["message_id"] for i in h.queued}

    states, sent, queued = harness(body, resync_bounds={"page_size": 5, "max_pages": 2})
    assert states == [(False, True), ([f"{SUPPORT}/inbox"], False), ([], False)]
    assert queued == sent


def test_without_directory_permission_the_ids_come_from_the_rows_then_from_email_events(
        harness: Any, fake: Any) -> None:
    from datetime import UTC, datetime

    from detections.backends.local import LocalBackend
    from push.subscriptions import ids_from_email_events

    fake.inject("GET", r"^/v1\.0/users/[^/]+$", 403, times=None, code="Authorization_RequestDenied",
                message="Insufficient privileges to complete the operation.")
    sales, info = fake.users.get(SALES).id, fake.users.get(INFO).id
    now = datetime.now(UTC)
    events = LocalBackend.from_rows({"EmailEvents": [
        {"Timestamp": now - timedelta(days=2), "RecipientEmailAddress": "Sales@Contoso.com",
         "RecipientObjectId": sales},
        {"Timestamp": now - timedelta(days=1), "RecipientEmailAddress": "someone@contoso.com",
         "RecipientObjectId": info}]}, now, source="test")
    asked: list[list[str]] = []

    async def lookup(mailboxes: list[str]) -> dict[str, str]:
        asked.append(mailboxes)
        return await ids_from_email_events(events, mailboxes)

    async def body(h: Harness) -> tuple[ReconcileSummary, ReconcileSummary]:
        support = h.user_id(SUPPORT)
        await h.store.save(Subscription("b8b1c1a4-1111-4a4a-9a9a-123456789abc", SUPPORT, support, "inbox",
                                        "2000-01-01T00:00:00Z"), etag=None, pending=False,
                           fingerprint=client_state_fingerprint(CLIENT_STATE))
        first = await h.manager.reconcile([SUPPORT, SALES, INFO], lookup=lookup)
        return first, await h.manager.reconcile([SUPPORT, SALES, INFO], lookup=lookup)

    first, second = harness(body)
    # support: its row's id (its stale inbox subscription repaired, sentitems created); sales: from
    # EmailEvents; info: in neither, so it fails with the reason (and is never removed).
    assert first.created == [f"{SALES}/inbox", f"{SALES}/sentitems", f"{SUPPORT}/sentitems"]
    assert first.repaired == [f"{SUPPORT}/inbox"]
    assert [w for w, _ in first.failed] == [INFO]
    assert "HTTP 403" in first.failed[0][1] and "User.ReadBasic.All" in first.failed[0][1]
    assert asked[0] == [INFO, SALES]
    resources = sorted(s["resource"] for s in graph_subs(fake).values())
    users = (fake.users.get(SUPPORT).id, sales)
    assert resources == sorted(f"users/{u}/mailFolders('{f}')/messages" for u in users
                               for f in ("inbox", "sentitems"))
    assert second.created == [] and second.unchanged == 4 and asked[1] == [INFO]
