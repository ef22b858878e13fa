"""push/resync.py: one bounded round of a folder's delta query, through the real msgraph-sdk client against
the fake Graph's message delta (devtools/fakegraph_push.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from core.graph import make_graph_client
from push.contract import SCHEMA, Subscription
from push.graphjson import GraphResponseError
from push.resync import ResyncError, delta_round

SUPPORT = "support@contoso.com"


def answer_delta(fake: Any, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The fake's next delta answer, changed by ``change`` (hostile or malformed answers)."""
    i = next(i for i, (m, p, _) in enumerate(fake._routes) if m == "GET" and "delta" in p.pattern)
    method, pattern, real = fake._routes[i]

    def once(*args: Any) -> Any:
        fake._routes[i] = (method, pattern, real)
        reply = real(*args)
        reply.body = change(reply.body)
        return reply

    fake._routes[i] = (method, pattern, once)


def sub(fake: Any, link: str = "", folder: str = "inbox") -> Subscription:
    uid = fake.users.get(SUPPORT).id
    return Subscription("0d9c1a52-6a7b-4c1e-9a43-2f1f1f0c0b11", SUPPORT, uid, folder, "2099-01-01T00:00:00Z",
                        link)


def run(fake: Any, s: Subscription, **kw: Any) -> Any:
    async def main() -> Any:
        graph = make_graph_client(base_url=fake.base_url, max_retries=0)
        return await delta_round(graph, s, now=kw.pop("now", fake.push.now()), **kw)
    return asyncio.run(main())


def test_baseline_asks_for_created_messages_since_the_lookback_with_the_documented_options(fake: Any) -> None:
    fake.mailboxes.add(SUPPORT, "<a@x>")
    result = run(fake, sub(fake))
    first = fake.calls_to("GET", r"/messages/delta")[0]
    assert first.path.endswith("/mailFolders/inbox/messages/delta()")
    assert first.query["changeType"] == "created"
    assert first.query["$select"] == "id,receivedDateTime"
    assert first.query["$filter"].startswith("receivedDateTime ge ")       # the only $filter delta supports
    assert first.headers["prefer"] == "odata.maxpagesize=50"
    assert result.complete and result.link.startswith(fake.base_url + "/") and "deltatoken=" in result.link


def test_a_baseline_the_service_will_not_filter_runs_unfiltered_and_skips_older_mail(fake: Any) -> None:
    # This fake's delta refuses $filter (400), as a service with "limited support" may: the round runs
    # without it and only what arrived within the lookback becomes a queue item.
    long_ago = (fake.push.now() - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    fake.mailboxes.add(SUPPORT, "<old@x>", received=long_ago)
    recent = fake.mailboxes.add(SUPPORT, "<recent@x>")
    result = run(fake, sub(fake))
    calls = fake.calls_to("GET", r"/messages/delta")
    assert [c.status for c in calls] == [400, 200] and "$filter" not in calls[1].query
    assert calls[1].query["changeType"] == "created"
    assert [i["message_id"] for i in result.items] == [recent] and result.skipped == {"too_old": 1}


def test_a_round_is_bounded_and_resumes_from_its_next_link(fake: Any) -> None:
    ids = [fake.mailboxes.add(SUPPORT, f"<m{i}@x>") for i in range(25)]
    first = run(fake, sub(fake), page_size=10, max_pages=2)
    assert not first.complete and first.pages == 2 and len(first.items) == 20
    assert "skiptoken=" in first.link
    rest = run(fake, sub(fake, first.link), page_size=10, max_pages=2)
    assert rest.complete and "deltatoken=" in rest.link
    assert [i["message_id"] for i in first.items + rest.items] == ids
    capped = run(fake, sub(fake), page_size=10, max_items=5)
    assert not capped.complete and capped.pages == 1    # the item bound stops after the page that reached it


def test_items_are_message_queue_items_and_removed_or_malformed_entries_are_skipped(fake: Any) -> None:
    link = first_link(fake)
    good = fake.mailboxes.add(SUPPORT, "<good@x>")
    old = (fake.push.now() - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    answer_delta(fake, lambda body: {**body, "value": [
        {"id": "AAMkGone=", "@removed": {"reason": "deleted"}}, {"id": "AAMk/../../evil?x=1"}, {"id": 42},
        "not an object", {"id": "AAMkOld=", "receivedDateTime": old}, *body["value"]]})
    now = fake.push.now()
    result = run(fake, sub(fake, link), now=now)
    s = sub(fake)
    assert result.items == [{"schema": SCHEMA, "kind": "message", "subscription_id": s.subscription_id,
                             "user_id": s.user_id, "message_id": good,
                             "received_at": now.isoformat().replace("+00:00", "Z")}]
    assert result.skipped == {"removed": 1, "bad_id": 2, "bad_item": 1, "too_old": 1}


def test_messages_that_left_the_folder_are_not_queued(fake: Any) -> None:
    moved = fake.mailboxes.add(SUPPORT, "<moved@x>")
    link = first_link(fake)
    fake.mailboxes.move(fake.users.get(SUPPORT).id, moved, "junkemail")
    kept = fake.mailboxes.add(SUPPORT, "<kept@x>")
    result = run(fake, sub(fake, link))
    assert [i["message_id"] for i in result.items] == [kept]


def test_links_outside_the_graph_base_url_are_never_followed(fake: Any) -> None:
    for evil in ("https://evil.example/v1.0/users/x/messages/delta",
                 fake.base_url + ".evil.example/users/x", "http://127.0.0.1:1/v1.0/users/x"):
        with pytest.raises(ResyncError, match="not under the Graph base URL"):
            run(fake, sub(fake, evil))
    assert fake.calls == []


def test_an_answer_without_next_or_delta_link_is_an_error_not_an_empty_folder(fake: Any) -> None:
    link = first_link(fake)
    for change, error, text in [
            (lambda b: {"value": []}, GraphResponseError, "neither"),
            (lambda b: {k: v for k, v in b.items() if k != "value"}, GraphResponseError, "no `value` list"),
            (lambda b: {"value": [], "@odata.deltaLink": "https://evil.example/delta?$deltatoken=1"},
             ResyncError, "outside the Graph base URL")]:
        answer_delta(fake, change)
        with pytest.raises(error, match=text):
            run(fake, sub(fake, link))


def first_link(fake: Any) -> str:
    """The delta link of a round over the (empty) folder: later rounds return what arrives after it."""
    result = run(fake, sub(fake))
    assert result.complete
    return result.link


@pytest.mark.parametrize("answer", [(410, "SyncStateNotFound"), (400, "ErrorInvalidSyncStateData")])
def test_an_expired_delta_link_starts_again_over_the_last_max_age(fake: Any, answer: tuple[int, str]) -> None:
    # "Synchronization reset" (delta-query-overview): the token's state is gone; start a new round.
    link = first_link(fake)
    day_old = (fake.push.now() - timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    fake.mailboxes.add(SUPPORT, "<too-old@x>", received=day_old)
    recent = fake.mailboxes.add(SUPPORT, "<recent@x>")
    fake.clear_calls()
    fake.inject("GET", r"/messages/delta", answer[0], code=answer[1], times=1)
    result = run(fake, sub(fake, link))
    assert result.complete and [i["message_id"] for i in result.items] == [recent]
    assert result.skipped == {"too_old": 1}
    restart = next(c for c in fake.calls_to("GET", r"/messages/delta") if c.status == 200)
    assert restart.query["changeType"] == "created" and "deltatoken" not in str(restart.query)


def test_other_errors_on_a_stored_link_are_not_mistaken_for_a_reset(fake: Any) -> None:
    link = first_link(fake)
    fake.inject("GET", r"/messages/delta", 503, times=1)
    with pytest.raises(Exception, match="503"):
        run(fake, sub(fake, link))
    calls = fake.calls_to("GET", r"/messages/delta")
    assert calls[-1].status == 503 and "$deltatoken" in calls[-1].query     # no new round after it
