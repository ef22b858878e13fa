"""Issue 13, exactly once, the action side: work an earlier attempt did is recognised (``prior_attempts``),
Defender submissions are never sent twice after an ambiguous answer, and account/connector targets go out
in bounded batches with a per-target timeout. Real msgraph-sdk and Exchange client against the fake."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devtools.fakegraph import FakeGraph
from remediation.actions import ActionResult
from remediation.exchange import ExchangeClient
from tests.remediation.actionkit import execute
from tests.remediation.factories import connector_request, email_request, user_request

BOX = "support@contoso.com"
USER = "ada@contoso.com"
REMEDIATE = r"analyzedEmails/(microsoft\.graph\.security\.)?remediate$"


def now_iso(delta: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def mailbox_request(imid: str, action: str) -> dict[str, Any]:
    return email_request("nm-" + imid.strip("<>"), BOX, imid=imid, action=action)


def run(fake: FakeGraph, action: str, reqs: list[dict[str, Any]], **kw: Any) -> list[ActionResult]:
    return asyncio.run(execute(fake, action, reqs, **kw))


def run_connector(fake: FakeGraph, reqs: list[dict[str, Any]], **kw: Any) -> list[ActionResult]:
    async def go() -> list[ActionResult]:
        client = ExchangeClient(fake.tenant_id, base_url=fake.exchange_base_url)
        try:
            return await execute(fake, "disable_connector", reqs, exchange=client,
                                 connector_actions="auto", **kw)
        finally:
            await client.aclose()
    return asyncio.run(go())


# --- 1. work done before an error is recognised as ours ---------------------------------------------------

@pytest.mark.parametrize(("action", "folder"), [("move_to_junk", "junkemail"),
                                                ("move_to_deleted_items", "deleteditems"),
                                                ("soft_delete", "recoverableitemsdeletions")])
def test_a_move_applied_before_a_503_is_confirmed_with_undo_on_the_retry(action: str, folder: str) -> None:
    req = mailbox_request("<m1@evil.example>", action)
    with FakeGraph() as fake:
        fake.mailboxes.add(BOX, "<m1@evil.example>")
        fake.inject("POST", r"/move$", 503, applied=True)          # moved, then the answer was lost
        [first] = run(fake, action, [req], strategy="mailbox")
        assert (first.state, first.transient) == ("failed", True)
        [again] = run(fake, action, [req], strategy="mailbox", prior_attempts={req["id"]: now_iso()})
        [msg] = fake.mailboxes.messages(BOX)
        assert len(fake.calls_to("POST", r"/move$")) == 1          # not moved a second time
    assert msg.folder == folder
    assert again.state == "confirmed" and "earlier attempt" in again.detail
    assert again.undo == {"strategy": "mailbox", "mailbox": BOX, "internet_message_id": "<m1@evil.example>",
                          "original_folder": "inbox", "moved_message_id": msg.id}


def test_a_message_already_there_without_a_prior_attempt_is_still_skipped() -> None:
    req = mailbox_request("<m1@evil.example>", "move_to_junk")
    with FakeGraph() as fake:
        fake.mailboxes.add(BOX, "<m1@evil.example>", folder="junkemail")
        [res] = run(fake, "move_to_junk", [req], strategy="mailbox",
                    prior_attempts={"some-other-request": now_iso()})
    assert (res.state, res.undo) == ("skipped", None)


def test_the_undo_of_a_recognised_move_puts_the_message_back_in_the_inbox() -> None:
    req = mailbox_request("<m1@evil.example>", "move_to_junk")
    with FakeGraph() as fake:
        fake.mailboxes.add(BOX, "<m1@evil.example>", folder="junkemail")
        [res] = run(fake, "move_to_junk", [req], strategy="mailbox", prior_attempts={req["id"]: now_iso()})
        undo = mailbox_request("<m1@evil.example>", "move_to_inbox")
        undo["undo_of"] = {"request_id": req["id"], "undo": res.undo, "by": "oncall@contoso.com"}
        [back] = run(fake, "move_to_inbox", [undo], strategy="mailbox")
        assert fake.mailboxes.folder_of(BOX, "<m1@evil.example>") == "inbox"
    assert back.state == "confirmed"


def test_a_connector_disabled_before_a_503_is_confirmed_with_the_re_enable_undo() -> None:
    req = connector_request("Partner relay")
    with FakeGraph() as fake:
        fake.connectors.add("Partner relay", "inbound")
        fake.inject("POST", r"InvokeCommand$", 503, applied=True, body_contains="Set-InboundConnector")
        [first] = run_connector(fake, [req])
        assert (first.state, first.transient) == ("failed", True)
        assert fake.connectors.get("Partner relay")["Enabled"] is False  # type: ignore[index]
        [again] = run_connector(fake, [req], prior_attempts={req["id"]: now_iso()})
        sets = [c for c in fake.calls if (c.json or {}).get("CmdletInput", {}).get("CmdletName", "")
                .startswith("Set-")]
    assert len(sets) == 1
    assert again.state == "confirmed" and "earlier attempt" in again.detail
    assert again.undo == {"connector": "Partner relay", "connector_type": "inbound", "enabled": True}


def test_a_connector_already_disabled_by_someone_else_is_still_skipped() -> None:
    with FakeGraph() as fake:
        fake.connectors.add("Old", "inbound", enabled=False)
        [res] = run_connector(fake, [connector_request("Old")])
    assert (res.state, res.undo) == ("skipped", None)


def test_a_revoke_that_succeeded_before_a_reset_is_not_repeated() -> None:
    req = user_request(USER)
    with FakeGraph() as fake:
        user = fake.users.add(USER)
        intent = now_iso(-timedelta(seconds=1))
        fake.inject_reset("POST", r"/revokeSignInSessions$", applied=True)   # revoked, reply lost
        [first] = run(fake, "revoke_sessions", [req])
        assert (first.state, first.transient) == ("failed", True)
        [again] = run(fake, "revoke_sessions", [req], prior_attempts={req["id"]: intent})
        gets = [c.url for c in fake.calls_to("GET", r"/users/")]
    assert fake.revoked == [user.id]
    assert gets == [f"/v1.0/users/{USER}?$select=id,signInSessionsValidFromDateTime"]
    assert again.state == "confirmed" and "earlier attempt" in again.detail


def test_a_revoke_older_than_the_prior_attempt_is_not_taken_for_ours() -> None:
    """The earlier attempt failed before reaching the service; the last revoke is from last week."""
    req = user_request(USER)
    with FakeGraph() as fake:
        user = fake.users.add(USER)
        week_ago = datetime.now(UTC) - timedelta(days=7)
        user.sign_in_sessions_valid_from = week_ago.strftime("%Y-%m-%dT%H:%M:%SZ")
        intent = now_iso(-timedelta(minutes=1))
        [res] = run(fake, "revoke_sessions", [req], prior_attempts={req["id"]: intent})
    assert fake.revoked == [user.id]
    assert (res.state, res.detail) == ("confirmed", f"sign-in sessions of {USER} revoked")


def test_without_read_permission_the_revoke_is_sent_again_and_says_why() -> None:
    req = user_request(USER)
    with FakeGraph() as fake:
        user = fake.users.add(USER)
        fake.inject("GET", rf"/users/{USER}$", 403, code="Authorization_RequestDenied",
                    message="Insufficient privileges to complete the operation.")
        [res] = run(fake, "revoke_sessions", [req], prior_attempts={req["id"]: now_iso()})
    assert fake.revoked == [user.id]
    assert res.state == "confirmed" and "User.Read.All" in res.detail


def test_a_revoke_without_a_prior_attempt_reads_nothing() -> None:
    with FakeGraph() as fake:
        fake.users.add(USER)
        run(fake, "revoke_sessions", [user_request(USER)])
        assert fake.calls_to("GET", ".*") == []


def test_a_disable_applied_before_a_503_is_confirmed_with_undo() -> None:
    req = user_request(USER, "disable_user")
    with FakeGraph() as fake:
        user = fake.users.add(USER)
        fake.inject("PATCH", rf"/users/{USER}$", 503, applied=True)
        [first] = run(fake, "disable_user", [req])
        assert (first.state, first.transient, user.account_enabled) == ("failed", True, False)
        [again] = run(fake, "disable_user", [req], prior_attempts={req["id"]: now_iso()})
        assert len(fake.calls_to("PATCH", ".*")) == 1
    assert (again.state, again.undo) == ("confirmed", {"account_enabled": True})
    assert "earlier attempt" in again.detail


def test_confirm_compromised_applied_before_a_503_is_recognised_not_sent_again() -> None:
    """The answer was lost after the service confirmed the user: riskState says so (riskyUser Get)."""
    with FakeGraph() as fake:
        user = fake.users.add(USER)
        req = user_request(user.id, "confirm_compromised")
        fake.inject("POST", r"/riskyUsers/(microsoft\.graph\.)?confirmCompromised$", 503, applied=True)
        [first] = run(fake, "confirm_compromised", [req])
        assert first.transient and fake.compromised == {user.id}
        [again] = run(fake, "confirm_compromised", [req], prior_attempts={req["id"]: now_iso()})
        posts = fake.calls_to("POST", r"/riskyUsers/(microsoft\.graph\.)?confirmCompromised$")
    assert again.state == "confirmed" and "earlier attempt" in again.detail
    assert len(posts) == 1


def test_confirm_compromised_whose_state_cannot_be_read_now_is_retried_not_sent_twice() -> None:
    """A 503 on the riskState read after a lost answer: transient (read again later), no second POST."""
    with FakeGraph() as fake:
        user = fake.users.add(USER)
        req = user_request(user.id, "confirm_compromised")
        fake.inject("POST", r"/riskyUsers/(microsoft\.graph\.)?confirmCompromised$", 503, applied=True)
        run(fake, "confirm_compromised", [req])
        fake.inject("GET", r"/riskyUsers/[0-9a-f-]{36}$", 503)
        [again] = run(fake, "confirm_compromised", [req], prior_attempts={req["id"]: now_iso()})
        posts = fake.calls_to("POST", r"/riskyUsers/(microsoft\.graph\.)?confirmCompromised$")
    assert again.transient and len(posts) == 1


def test_confirm_compromised_not_yet_applied_is_sent_on_the_retry() -> None:
    """A prior attempt the service never applied (riskyUser Get: 404, not risky): sent now."""
    with FakeGraph() as fake:
        user = fake.users.add(USER)
        req = user_request(user.id, "confirm_compromised")
        [res] = run(fake, "confirm_compromised", [req], prior_attempts={req["id"]: now_iso()})
        posts = fake.calls_to("POST", r"/riskyUsers/(microsoft\.graph\.)?confirmCompromised$")
    assert fake.compromised == {user.id} and len(posts) == 1
    assert res.state == "confirmed" and "already confirmed" not in res.detail


@pytest.mark.parametrize(("action", "method", "path"), [
    ("revoke_sessions", "POST", r"/revokeSignInSessions$"),
    ("disable_user", "PATCH", rf"/users/{USER}$"),
    ("confirm_compromised", "POST", r"/riskyUsers/(microsoft\.graph\.)?confirmCompromised$"),
])
def test_an_account_call_applied_before_a_503_is_not_replayed_by_the_sdk(action: str, method: str,
                                                                         path: str) -> None:
    """The SDK's RetryHandler (on in production) replays a 503 of any method; for these calls it must not:
    the worker's retry comes back with the request in prior_attempts, so the check runs first."""
    with FakeGraph() as fake:
        user = fake.users.add(USER)
        req = user_request(user.id if action == "confirm_compromised" else USER, action)
        fake.inject(method, path, 503, applied=True, times=None)     # every answer lost after applying
        [res] = run(fake, action, [req], max_retries=2)
        sent = len(fake.calls_to(method, path))
    assert (res.state, res.transient) == ("failed", True)
    assert sent == 1


# --- 2. Defender: an ambiguous answer never makes a second submission -------------------------------------

async def worker_like(fake: FakeGraph, reqs: list[dict[str, Any]], *, attempts: int = 3,
                      max_retries: int = 3, timeout: float = 180.0) -> dict[str, ActionResult]:
    """What Execution does: call, retry what came back transient (listed in prior_attempts) up to
    ``attempts`` times. The SDK keeps its production retry count."""
    done: dict[str, ActionResult] = {}
    pending, prior = reqs, {}
    for _ in range(attempts):
        results = await execute(fake, "move_to_junk", pending, max_retries=max_retries,
                                prior_attempts=prior, http_timeout=timeout)
        retry = [q for q, r in zip(pending, results, strict=True) if r.transient]
        done.update({r.request_id: r for r in results})
        prior = {**prior, **{q["id"]: now_iso() for q in retry}}
        pending = retry
        if not pending:
            break
    return done


def submissions(fake: FakeGraph) -> Counter[str]:
    return Counter(e["networkMessageId"] for r in fake.remediations for e in r.emails)


@pytest.mark.parametrize("fault", ["503-after-apply", "504-after-apply", "reset-after-apply",
                                   "500-after-apply"])
def test_a_fault_on_one_call_resubmits_no_email(fault: str) -> None:
    """250 emails, three calls; the second call's answer is lost after the service accepted it. Before:
    the SDK replayed it (503/504) or the worker resubmitted the whole chunk (500, reset): 100 emails
    submitted twice. Now each email is submitted exactly once."""
    reqs = [email_request(f"nm-{i}", index=i) for i in range(250)]
    with FakeGraph() as fake:
        status, _, _ = fault.partition("-")
        if status == "reset":
            fake.inject_reset("POST", REMEDIATE, applied=True, body_contains='"nm-100"')
        else:
            fake.inject("POST", REMEDIATE, int(status), applied=True, retry_after=1,
                        body_contains='"nm-100"')
        done = asyncio.run(worker_like(fake, reqs))
    counts = submissions(fake)
    assert len(counts) == 250 and max(counts.values()) == 1
    assert {r.state for r in done.values()} == {"submitted"}
    ambiguous = [r for r in done.values() if "may have accepted" in r.detail]
    assert len(ambiguous) == 100


def test_a_fault_before_apply_leaves_its_emails_submitted_for_verification_not_resubmitted() -> None:
    """The trade-off (docs/remediation.md): a 503 the service did not process is not retried at once;
    its emails are recorded submitted and verification reports them not applied after the grace period."""
    reqs = [email_request(f"nm-{i}", index=i) for i in range(150)]
    with FakeGraph() as fake:
        fake.inject("POST", REMEDIATE, 503, body_contains='"nm-0"')
        done = asyncio.run(worker_like(fake, reqs))
    counts = submissions(fake)
    assert sorted(counts) == sorted(f"nm-{i}" for i in range(100, 150)) and max(counts.values()) == 1
    assert all(done[q["id"]].state == "submitted" for q in reqs)
    assert all("may have accepted" in done[q["id"]].detail for q in reqs[:100])


def test_a_429_on_one_call_is_retried_and_its_siblings_are_not_resubmitted() -> None:
    reqs = [email_request(f"nm-{i}", index=i) for i in range(250)]
    with FakeGraph() as fake:
        fake.inject("POST", REMEDIATE, 429, retry_after=0, body_contains='"nm-100"')
        done = asyncio.run(worker_like(fake, reqs))
    counts = submissions(fake)
    assert len(counts) == 250 and max(counts.values()) == 1
    assert all(r.state == "submitted" and "may have accepted" not in r.detail for r in done.values())


def test_a_connection_never_made_is_transient_not_submitted() -> None:
    """Nothing reached the service (connection refused): the worker may send it again safely."""
    closed = FakeGraph().start()
    url = closed.base_url   # a port nobody listens on once the fake is closed
    closed.close()

    class Gone:   # just what execute() reads from the fake
        base_url = url
        exchange_base_url = url.replace("/v1.0", "/adminapi/beta")
        tenant_id = closed.tenant_id

    [res] = asyncio.run(execute(Gone(), "move_to_junk", [email_request("nm-1")]))  # type: ignore[arg-type]
    assert (res.state, res.transient) == ("failed", True)
    assert "connection failed" in (res.error or "")


def test_a_timeout_on_one_call_resubmits_no_email() -> None:
    reqs = [email_request(f"nm-{i}", index=i) for i in range(120)]
    with FakeGraph() as fake:
        fake.add_latency(4.0, "POST", REMEDIATE, times=1, body_contains='"nm-0"')
        done = asyncio.run(worker_like(fake, reqs, timeout=2.0))
        # The slow call is still carried out by the service after the client gave up: wait for it.
        assert asyncio.run(_until(lambda: all(c.finished for c in fake.calls)))
    counts = submissions(fake)
    assert len(counts) == 120 and max(counts.values()) == 1
    assert all(r.state == "submitted" for r in done.values())


# --- 3. bounded batches, per-target timeout -----------------------------------------------------------------

def test_one_hung_account_times_out_alone_and_says_it_may_have_been_applied() -> None:
    users = [f"u{i}@contoso.com" for i in range(5)]
    with FakeGraph() as fake:
        for u in users:
            fake.users.add(u)
        fake.add_latency(6.0, "POST", r"/users/u2@contoso\.com/revokeSignInSessions$")
        results = run(fake, "revoke_sessions", [user_request(u) for u in users], concurrency=1, timeout=2.0)
    states = [(r.state, r.transient) for r in results]
    assert states == [("confirmed", False)] * 2 + [("failed", True)] + [("confirmed", False)] * 2
    assert "may have been applied" in (results[2].error or "")


def test_account_targets_go_out_in_bounded_batches() -> None:
    users = [f"u{i}@contoso.com" for i in range(12)]
    with FakeGraph() as fake:
        for u in users:
            fake.users.add(u)
        fake.add_latency(0.5, "POST", r"/revokeSignInSessions$")
        results = run(fake, "revoke_sessions", [user_request(u) for u in users], concurrency=3)
        peak = fake.peak_overlap("POST", r"/revokeSignInSessions$")
    assert [r.state for r in results] == ["confirmed"] * 12
    assert 2 <= peak <= 3   # 3 in flight at most (all 12 at once before); 2 or 3 overlap on a busy host


def test_a_hung_disable_times_out_alone_and_the_retry_recognises_it() -> None:
    users = ["a@contoso.com", "b@contoso.com"]
    reqs = [user_request(u, "disable_user") for u in users]
    with FakeGraph() as fake:
        for u in users:
            fake.users.add(u)
        fake.add_latency(4.0, "PATCH", r"/users/a@contoso\.com$", times=1)
        first = run(fake, "disable_user", reqs, timeout=2.0)
        assert [(r.state, r.transient) for r in first] == [("failed", True), ("confirmed", False)]
        deadline = asyncio.run(_until(lambda: fake.users.get("a@contoso.com").account_enabled is False))
        assert deadline, "the service applied the slow PATCH after the client gave up"
        again = run(fake, "disable_user", reqs[:1], prior_attempts={reqs[0]["id"]: now_iso()})
    assert (again[0].state, again[0].undo) == ("confirmed", {"account_enabled": True})


def test_one_hung_connector_times_out_alone() -> None:
    names = ["Relay A", "Relay B", "Relay C"]
    with FakeGraph() as fake:
        for n in names:
            fake.connectors.add(n, "inbound")
        fake.add_latency(6.0, "POST", r"InvokeCommand$", body_contains='"Relay B"')
        results = run_connector(fake, [connector_request(n) for n in names], timeout=2.0)
    assert [(r.state, r.transient) for r in results] == [("confirmed", False), ("failed", True),
                                                         ("confirmed", False)]
    assert "may have been applied" in (results[1].error or "")


def test_connector_targets_go_out_in_bounded_batches() -> None:
    names = [f"Relay {i}" for i in range(8)]
    with FakeGraph() as fake:
        for n in names:
            fake.connectors.add(n, "inbound")
        fake.add_latency(0.5, "POST", r"InvokeCommand$")
        results = run_connector(fake, [connector_request(n) for n in names], concurrency=2)
        peak = fake.peak_overlap("POST", r"InvokeCommand$")
    assert [r.state for r in results] == ["confirmed"] * 8
    assert peak <= 2   # all 8 at once before


def test_a_hung_confirm_compromised_call_times_out_alone() -> None:
    from remediation.actions.accounts import MAX_USERS_PER_CALL

    with FakeGraph() as fake:
        ids = [fake.users.add(f"u{i}@contoso.com").id for i in range(MAX_USERS_PER_CALL + 1)]
        # The second call (the last id alone) hangs; the first is answered.
        fake.add_latency(6.0, "POST", r"confirmCompromised$", body_contains=ids[-1])
        results = run(fake, "confirm_compromised", [user_request(i, "confirm_compromised") for i in ids],
                      timeout=2.0)
    assert [r.state for r in results[:-1]] == ["confirmed"] * MAX_USERS_PER_CALL
    assert (results[-1].state, results[-1].transient) == ("failed", True)
    assert "may have been applied" in (results[-1].error or "")


async def _until(check: Any, seconds: float = 10.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if check():
            return True
        await asyncio.sleep(0.05)
    return False
