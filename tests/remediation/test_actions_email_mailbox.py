"""Mailbox email strategy through the real SDK against the fake: find, check folder, move; limits; faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from core.graph import make_graph_client
from core.tenant import TenantConfig
from devtools.fakegraph import FakeGraph, folder_id
from remediation.actions import ActionContext, ActionResult, get_action
from remediation.actions.email_mailbox import MAX_IN_FLIGHT
from tests.remediation.actionkit import execute, settings_for
from tests.remediation.factories import email_request

BOX = "support@contoso.com"


def junk(imid: str, recipient: str = BOX, *, action: str = "move_to_junk", index: int = 0) -> dict:
    # A NetworkMessageId has no whitespace (the contract refuses it, issue 13); the imid may.
    return email_request("nm-" + imid.replace(" ", "_"), recipient, imid=imid, action=action, index=index)


def run(fake: FakeGraph, action: str, reqs: list[dict], **kw):  # type: ignore[no-untyped-def]
    return asyncio.run(execute(fake, action, reqs, strategy="mailbox", **kw))


def test_finds_checks_and_moves_with_the_exact_requests() -> None:
    with FakeGraph() as fake:
        old_id = fake.mailboxes.add(BOX, "<a1@evil.example>")
        user = fake.users.get(BOX)
        assert user is not None
        [res] = run(fake, "move_to_junk", [junk("<a1@evil.example>")])
        calls = [(c.method, c.url, c.json) for c in fake.calls]
        [msg] = fake.mailboxes.messages(BOX)
    assert calls == [
        ("GET", f"/v1.0/users/{BOX}/messages?$filter=internetMessageId eq '<a1@evil.example>'"
                "&$select=id,parentFolderId,internetMessageId", None),
        ("GET", f"/v1.0/users/{BOX}/mailFolders/junkemail?$select=id", None),
        ("POST", f"/v1.0/users/{BOX}/messages/{old_id}/move", {"DestinationId": "junkemail"}),
    ]
    assert msg.folder == "junkemail" and msg.id != old_id
    assert (res.state, res.transient, res.error) == ("confirmed", False, None)
    assert res.detail == f"moved 1 message(s) to Junk Email in {BOX}"
    assert res.undo == {"strategy": "mailbox", "mailbox": BOX, "internet_message_id": "<a1@evil.example>",
                        "original_folder": folder_id(user.id, "inbox"), "moved_message_id": msg.id}


def test_already_in_the_destination_is_skipped_without_a_move() -> None:
    with FakeGraph() as fake:
        fake.mailboxes.add(BOX, "<a1@x>", folder="junkemail")
        [res] = run(fake, "move_to_junk", [junk("<a1@x>")])
        assert fake.calls_to("POST", "move") == []
    assert (res.state, res.detail) == ("skipped", f"already in Junk Email in {BOX}")


def test_not_found_is_a_permanent_failure_with_the_reason() -> None:
    with FakeGraph() as fake:
        fake.users.add(BOX)
        [res] = run(fake, "move_to_junk", [junk("<gone@x>")])
    assert (res.state, res.transient) == ("failed", False)
    assert res.error == f"message <gone@x> not found in mailbox {BOX} (deleted, or never delivered there)"


def test_target_without_internet_message_id_fails_before_any_call() -> None:
    with FakeGraph() as fake:
        [res] = run(fake, "move_to_junk", [email_request("nm-1")])
        assert fake.calls == []
    assert res.state == "failed" and "internet_message_id" in (res.error or "")


def test_quotes_in_the_id_cannot_change_the_filter() -> None:
    imid = "<it's' or 1 eq 1@x>"
    with FakeGraph() as fake:
        fake.mailboxes.add(BOX, imid)
        fake.mailboxes.add(BOX, "<other@x>")
        [res] = run(fake, "move_to_junk", [junk(imid)])
        assert fake.calls[0].query["$filter"] == "internetMessageId eq '<it''s'' or 1 eq 1@x>'"
        assert fake.mailboxes.folder_of(BOX, imid) == "junkemail"
        assert fake.mailboxes.folder_of(BOX, "<other@x>") == "inbox"
    assert res.state == "confirmed"


def test_one_mailbox_failing_does_not_stop_the_others() -> None:
    with FakeGraph() as fake:
        fake.mailboxes.add(BOX, "<a@x>")
        fake.mailboxes.add("sales@contoso.com", "<a@x>")
        fake.mailboxes.add("info@contoso.com", "<a@x>")
        fake.inject("*", r"/users/sales@contoso\.com/", 403, times=None, code="ErrorAccessDenied",
                    message="Access is denied. Check credentials and try again.")
        results = run(fake, "move_to_junk", [junk("<a@x>", BOX), junk("<a@x>", "sales@contoso.com", index=1),
                                             junk("<a@x>", "info@contoso.com", index=2)])
        boxes = (BOX, "sales@contoso.com", "info@contoso.com")
        folders = [fake.mailboxes.folder_of(u, "<a@x>") for u in boxes]
    assert [r.state for r in results] == ["confirmed", "failed", "confirmed"]
    assert folders == ["junkemail", "inbox", "junkemail"]
    assert results[1].transient is False
    assert results[1].error == ("HTTP 403 ErrorAccessDenied: Access is denied. Check credentials and try "
                                "again.")
    assert results[1].detail.startswith("find message in sales@contoso.com: ")


@pytest.mark.parametrize(("status", "transient", "retry_after", "path"), [
    (429, True, 5.0, "messages$"), (503, True, None, "mailFolders"), (400, False, None, "move$"),
    (404, False, None, "move$")])
def test_fault_mapping(status: int, transient: bool, retry_after: float | None, path: str) -> None:
    with FakeGraph() as fake:
        fake.mailboxes.add(BOX, "<a@x>")
        fake.inject("*", path, status, retry_after=retry_after)
        [res] = run(fake, "move_to_junk", [junk("<a@x>")])
        assert fake.mailboxes.folder_of(BOX, "<a@x>") == "inbox"
    assert (res.state, res.transient, res.retry_after) == ("failed", transient, retry_after)
    assert f"HTTP {status}" in (res.error or "")


def test_unknown_mailbox_is_a_permanent_failure() -> None:
    with FakeGraph() as fake:
        [res] = run(fake, "move_to_junk", [junk("<a@x>", "nobody@contoso.com")])
    assert (res.state, res.transient) == ("failed", False)
    assert "HTTP 404 Request_ResourceNotFound" in (res.error or "")


def test_at_most_four_requests_in_flight_per_mailbox_and_no_throttling() -> None:
    """Ten targets in one mailbox and two in another, with Outlook's limits on and each request slow
    enough to overlap: the action keeps each mailbox at 4 in flight (and uses all 4), so nothing is
    throttled, while the other mailbox is not held up by the first one's semaphore."""
    other = "sales@contoso.com"
    with FakeGraph() as fake:
        fake.outlook_limits(concurrent=4)
        fake.add_latency(0.05, path_regex=r"/users/")
        for i in range(10):
            fake.mailboxes.add(BOX, f"<m{i}@x>")
        fake.mailboxes.add(other, "<o1@x>")
        fake.mailboxes.add(other, "<o2@x>")
        reqs = [junk(f"<m{i}@x>", index=i) for i in range(10)]
        reqs += [junk("<o1@x>", other, index=10), junk("<o2@x>", other, index=11)]
        results = run(fake, "move_to_junk", reqs)
        statuses = {c.status for c in fake.calls}
        peak, peak_other = fake.peak_concurrency(BOX), fake.peak_concurrency(other)
    assert [r.state for r in results] == ["confirmed"] * 12
    assert 429 not in statuses
    assert peak == 4
    assert peak_other == 2


def test_the_fake_throttles_a_fifth_concurrent_request() -> None:
    """The other half of the previous test: the limit is real, so the semaphore is what avoids it."""
    with FakeGraph() as fake:
        fake.outlook_limits(concurrent=4, retry_after=2)
        fake.add_latency(0.2, path_regex=r"/messages$")
        for i in range(5):
            fake.mailboxes.add(BOX, f"<m{i}@x>")

        async def five() -> list[int]:
            import httpx
            async with httpx.AsyncClient() as http:
                url = f"{fake.base_url}/users/{BOX}/messages"
                got = await asyncio.gather(*(http.get(url) for _ in range(5)))
                return sorted(r.status_code for r in got)

        assert asyncio.run(five()) == [200, 200, 200, 200, 429]
        throttled = [c for c in fake.calls if c.status == 429]
    assert len(throttled) == 1


@pytest.mark.parametrize(("action", "folder", "start"), [
    ("move_to_inbox", "inbox", "junkemail"),
    # Defender's meaning of soft delete: Recoverable Items\Deletions, not the user's Deleted Items.
    ("soft_delete", "recoverableitemsdeletions", "inbox"),
    ("move_to_deleted_items", "deleteditems", "inbox")])
def test_other_actions_move_to_their_folder(action: str, folder: str, start: str) -> None:
    with FakeGraph() as fake:
        fake.mailboxes.add(BOX, "<a@x>", folder=start)
        [res] = run(fake, action, [junk("<a@x>", action=action)])
        assert fake.mailboxes.folder_of(BOX, "<a@x>") == folder
        assert fake.calls_to("POST", "move$")[0].json == {"DestinationId": folder}
    assert res.state == "confirmed"


def test_undo_puts_the_message_back_in_its_original_folder() -> None:
    with FakeGraph() as fake:
        fake.mailboxes.add(BOX, "<a@x>", folder="Projects")
        [first] = run(fake, "move_to_junk", [junk("<a@x>")])
        assert fake.mailboxes.folder_of(BOX, "<a@x>") == "junkemail"
        undo = junk("<a@x>", action="move_to_inbox")
        undo["undo_of"] = {"request_id": first.request_id, "undo": first.undo, "by": "alice"}
        fake.clear_calls()
        [res] = run(fake, "move_to_inbox", [undo])
        original = first.undo["original_folder"]  # type: ignore[index]
        assert fake.calls_to("POST", "move$")[0].json == {"DestinationId": original}
        assert fake.mailboxes.folder_of(BOX, "<a@x>") == "Projects"
    assert res.state == "confirmed"
    assert res.detail == f"moved 1 message(s) to its original folder in {BOX}"


def test_sdk_replay_of_a_processed_move_is_still_confirmed() -> None:
    """The move was done but answered 503; the SDK replays it with the old id and gets 404. The action
    re-reads the mailbox instead of reporting a failure that did not happen."""
    with FakeGraph() as fake:
        fake.mailboxes.add(BOX, "<a@x>")
        fake.inject("POST", "move$", 503, retry_after=1, applied=True)
        [res] = run(fake, "move_to_junk", [junk("<a@x>")], max_retries=1)
        moves = [c.status for c in fake.calls_to("POST", "move$")]
        assert fake.mailboxes.folder_of(BOX, "<a@x>") == "junkemail"
    assert moves == [503, 404]
    assert res.state == "confirmed" and "applied an attempt" in res.detail


# --- Requests sent through the SDK's request adapter, answers read as JSON -------------------------------

Send = Callable[[Any, str, Any], Awaitable[Any]]


def run_wrapped(fake: FakeGraph, reqs: list[dict], wrap: Callable[[Send], Send]) -> list[ActionResult]:
    """Run ``move_to_junk`` with the real client whose adapter's send is wrapped (still the real send)."""
    graph = make_graph_client(base_url=fake.base_url, max_retries=0)
    adapter = graph.request_adapter
    adapter.send_primitive_async = wrap(adapter.send_primitive_async)  # type: ignore[method-assign]
    ctx = ActionContext(settings=settings_for(fake, "mailbox"), tenant=TenantConfig(), graph=graph)
    return asyncio.run(get_action("move_to_junk", "mailbox").execute(reqs, ctx))


def test_overall_requests_in_flight_are_capped_at_the_pool_size() -> None:
    """30 mailboxes at once: never more than MAX_IN_FLIGHT requests in flight (more would make httpx close
    and reopen connections), and the cap is used in full, each one through the adapter as bytes."""
    boxes = [f"box{i:02d}@contoso.com" for i in range(30)]
    state = {"now": 0, "peak": 0}
    kinds: set[str] = set()

    def wrap(send: Send) -> Send:
        async def counted(info: Any, response_type: str, errors: Any) -> Any:
            kinds.add(response_type)
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            try:
                return await send(info, response_type, errors)
            finally:
                state["now"] -= 1
        return counted

    with FakeGraph() as fake:
        fake.add_latency(0.05, path_regex=r"/users/")
        for b in boxes:
            fake.mailboxes.add(b, "<a@x>")
        results = run_wrapped(fake, [junk("<a@x>", b, index=i) for i, b in enumerate(boxes)], wrap)
        folders = {fake.mailboxes.folder_of(b, "<a@x>") for b in boxes}
    assert [r.state for r in results] == ["confirmed"] * 30
    assert folders == {"junkemail"}
    assert state["peak"] == MAX_IN_FLIGHT
    assert kinds == {"bytes"}


def test_only_messages_the_answer_names_with_the_requested_id_are_moved() -> None:
    """If the service ever ignored the filter and answered the whole mailbox, only the message whose
    internetMessageId is the requested one (compared as Exchange does, ignoring case) is moved."""
    def wrap(send: Send) -> Send:
        async def unfiltered(info: Any, response_type: str, errors: Any) -> Any:
            if info.http_method.value == "GET" and info.url.split("?")[0].endswith("/messages"):
                everything = [{"id": m.id, "internetMessageId": m.internet_message_id,
                               "parentFolderId": folder_id(user.id, m.folder)}
                              for m in fake.mailboxes.messages(BOX)]
                await send(info, response_type, errors)   # the real request still goes out
                return json.dumps({"value": everything}).encode()
            return await send(info, response_type, errors)
        return unfiltered

    with FakeGraph() as fake:
        fake.mailboxes.add(BOX, "<A@X>")
        fake.mailboxes.add(BOX, "<b@x>")
        fake.mailboxes.add(BOX, "<a@x.other>")
        user = fake.users.get(BOX)
        assert user is not None
        [res] = run_wrapped(fake, [junk("<a@x>")], wrap)
        folders = {m.internet_message_id: m.folder for m in fake.mailboxes.messages(BOX)}
    assert folders == {"<A@X>": "junkemail", "<b@x>": "inbox", "<a@x.other>": "inbox"}
    assert (res.state, res.detail) == ("confirmed", f"moved 1 message(s) to Junk Email in {BOX}")


@pytest.mark.parametrize("answer", [b"<html>gateway</html>", b"[]", b'{"value": "nope"}', b'{"value": [{}]}'])
def test_a_malformed_lookup_answer_is_transient_and_moves_nothing(answer: bytes) -> None:
    def wrap(send: Send) -> Send:
        async def garbled(info: Any, response_type: str, errors: Any) -> Any:
            got = await send(info, response_type, errors)
            return answer if info.url.split("?")[0].endswith("/messages") else got
        return garbled

    with FakeGraph() as fake:
        fake.mailboxes.add(BOX, "<a@x>")
        [res] = run_wrapped(fake, [junk("<a@x>")], wrap)
        assert fake.calls_to("POST", "move$") == []
        assert fake.mailboxes.folder_of(BOX, "<a@x>") == "inbox"
    assert (res.state, res.transient) == ("failed", True)
    assert res.detail.startswith(f"find message in {BOX}: GraphResponseError: ")


# --- addressing the mailbox --------------------------------------------------------------------------------

SHARED_ID = "3f2b8c1d-6e4a-4b7f-9d20-5a1c0e7b9f31"


def test_mailbox_is_addressed_by_recipient_object_id() -> None:
    # A shared mailbox whose SMTP address (what EmailEvents records) is not its UPN: Graph's
    # /users/{id | userPrincipalName} does not resolve the address, the object id always works.
    with FakeGraph() as fake:
        fake.users.add("support-shared@contoso.onmicrosoft.com", id=SHARED_ID, mail=BOX)
        fake.mailboxes.add(SHARED_ID, "<a@x>")
        req = junk("<a@x>")
        req["target"]["recipient_object_id"] = SHARED_ID
        [res] = run(fake, "move_to_junk", [req])
        paths = {c.path.split("/")[3] for c in fake.calls}
        assert fake.mailboxes.folder_of(SHARED_ID, "<a@x>") == "junkemail"
    assert paths == {SHARED_ID}
    assert res.state == "confirmed" and res.detail == f"moved 1 message(s) to Junk Email in {BOX}"


def test_without_an_object_id_the_address_is_used_and_a_non_upn_address_is_not_found() -> None:
    with FakeGraph() as fake:
        fake.users.add("support-shared@contoso.onmicrosoft.com", id=SHARED_ID, mail=BOX)
        fake.mailboxes.add(SHARED_ID, "<a@x>")
        [res] = run(fake, "move_to_junk", [junk("<a@x>")])
        [call] = fake.calls
    assert call.path == f"/v1.0/users/{BOX}/messages" and call.status == 404
    assert (res.state, res.transient) == ("failed", False)


def test_a_recipient_object_id_that_is_not_a_guid_is_refused_naming_the_field() -> None:
    from core.request import RequestInvalid, make_request
    from tests.remediation.factories import T0

    with pytest.raises(RequestInvalid, match="target/recipient_object_id"):
        make_request(rule="r", action="move_to_junk", mode="auto", evidence={}, detected_at=T0,
                     target={"network_message_id": "m", "recipient": BOX,
                             "recipient_object_id": "../../users/admin@contoso.com"})


def test_soft_delete_again_finds_the_message_in_recoverable_items_and_skips() -> None:
    with FakeGraph() as fake:
        fake.mailboxes.add(BOX, "<a@x>")
        [first] = run(fake, "soft_delete", [junk("<a@x>", action="soft_delete")])
        # The user's folders no longer list it (GET /messages does not cover Recoverable Items) ...
        assert fake.calls_to("GET", r"/messages$")[0].status == 200
        [again] = run(fake, "soft_delete", [junk("<a@x>", action="soft_delete")])
        looked = [c.path for c in fake.calls_to("GET", r"/messages$")][1:]
        assert fake.mailboxes.folder_of(BOX, "<a@x>") == "recoverableitemsdeletions"
    assert first.state == "confirmed"
    # ... so the re-run looks in the folder itself, and the message is already there.
    assert looked == [f"/v1.0/users/{BOX}/messages",
                      f"/v1.0/users/{BOX}/mailFolders/recoverableitemsdeletions/messages"]
    assert (again.state, again.detail) == ("skipped", f"already in Recoverable Items (Deletions) in {BOX}")
