"""Defender email remediation through the real SDK against the fake: exact calls, grouping, faults."""

from __future__ import annotations

import asyncio

import pytest

from devtools.fakegraph import FakeGraph
from remediation.actions.email_defender import MAX_EMAILS_PER_CALL
from tests.remediation.actionkit import execute
from tests.remediation.factories import email_request

PATH = "/v1.0/security/collaboration/analyzedEmails/microsoft.graph.security.remediate"


def test_one_call_for_a_campaign_with_the_exact_body_and_the_action_center_link() -> None:
    seen: list[tuple[str, list[dict[str, str]]]] = []
    reqs = [email_request("nm-1", "support@contoso.com"), email_request("nm-1", "sales@contoso.com", index=1),
            email_request("nm-2", "info@contoso.com", index=2)]
    with FakeGraph(on_remediate=lambda a, e: seen.append((a, e))) as fake:
        results = asyncio.run(execute(fake, "move_to_junk", reqs))
        calls = fake.calls
    assert [(c.method, c.path) for c in calls] == [("POST", PATH)]
    assert calls[0].json == {
        "action": "moveToJunk",
        "analyzedEmails": [
            {"networkMessageId": "nm-1", "recipientEmailAddress": "support@contoso.com"},
            {"networkMessageId": "nm-1", "recipientEmailAddress": "sales@contoso.com"},
            {"networkMessageId": "nm-2", "recipientEmailAddress": "info@contoso.com"},
        ],
        "description": "xdr-responder: Move to Junk for 3 email(s) found by rule 'shared-mailboxes' "
                       "(scan run run-1). Sender's copy untouched.",
        "displayName": "xdr-responder: rule shared-mailboxes",
        "remediateSendersCopy": False,
        "severity": "medium",
    }
    assert seen == [("moveToJunk", calls[0].json["analyzedEmails"])]
    location = fake.remediations[0].location
    assert location.startswith("https://security.microsoft.com/action-center/history?filters=")
    assert [(r.request_id, r.state, r.link, r.transient) for r in results] == [
        (q["id"], "submitted", location, False) for q in reqs]


@pytest.mark.parametrize(("action", "wire"), [("move_to_inbox", "moveToInbox"),
                                              ("soft_delete", "softDelete"),
                                              ("move_to_deleted_items", "moveToDeletedItems")])
def test_other_actions_map_to_the_service_names(action: str, wire: str) -> None:
    with FakeGraph() as fake:
        results = asyncio.run(execute(fake, action, [email_request("nm-1", action=action)]))
    assert fake.remediations[0].action == wire
    assert results[0].state == "submitted"


def test_chunks_of_the_documented_size_and_duplicates_sent_once() -> None:
    n = MAX_EMAILS_PER_CALL + 5
    reqs = [email_request(f"nm-{i}", index=i) for i in range(n)]
    dup = email_request("NM-0", "SUPPORT@contoso.com", index=n)   # same message, other case: same pair
    dup["id"] = "f" * 32
    with FakeGraph() as fake:
        results = asyncio.run(execute(fake, "move_to_junk", [*reqs, dup]))
    sizes = [len(r.emails) for r in fake.remediations]
    assert sizes == [MAX_EMAILS_PER_CALL, 5]
    assert [r.state for r in results] == ["submitted"] * (n + 1)
    assert results[-1].link == results[0].link == fake.remediations[0].location


def test_groups_by_rule_so_each_entry_names_its_rule() -> None:
    reqs = [email_request("nm-1", rule="rule-a"), email_request("nm-2", rule="rule-b"),
            email_request("nm-3", rule="rule-a", index=1)]
    with FakeGraph() as fake:
        results = asyncio.run(execute(fake, "move_to_junk", reqs))
    sent = [(r.body["displayName"], [e["networkMessageId"] for e in r.emails]) for r in fake.remediations]
    assert sent == [
        ("xdr-responder: rule rule-a", ["nm-1", "nm-3"]), ("xdr-responder: rule rule-b", ["nm-2"])]
    assert [r.link for r in results] == [fake.remediations[0].location, fake.remediations[1].location,
                                         fake.remediations[0].location]


def test_highest_severity_of_the_group_is_used() -> None:
    reqs = [email_request("nm-1"), email_request("nm-2", index=1)]
    reqs[1]["severity"] = "High"
    with FakeGraph() as fake:
        asyncio.run(execute(fake, "move_to_junk", reqs))
    assert fake.remediations[0].body["severity"] == "high"


def test_bad_target_fails_alone_without_a_call() -> None:
    good = email_request("nm-1")
    bad = email_request("nm-2", "not-an-address", index=1)
    with FakeGraph() as fake:
        results = asyncio.run(execute(fake, "move_to_junk", [bad, good]))
    assert [e["networkMessageId"] for e in fake.remediations[0].emails] == ["nm-1"]
    assert (results[0].state, results[0].transient) == ("failed", False)
    assert "recipient" in (results[0].error or "")
    assert results[1].state == "submitted"


@pytest.mark.parametrize(("status", "transient", "retry_after"), [
    (429, True, 7.0), (400, False, None), (403, False, None), (404, False, None)])
def test_fault_mapping(status: int, transient: bool, retry_after: float | None) -> None:
    """Answers that say the call was not processed: 429 (retried by the worker), other 4xx (refused)."""
    reqs = [email_request("nm-1"), email_request("nm-2", index=1)]
    with FakeGraph() as fake:
        fake.inject("POST", r"remediate$", status, times=None, retry_after=retry_after,
                    message=f"boom {status}")
        results = asyncio.run(execute(fake, "move_to_junk", reqs))
        # A 400 for two emails is bisected (each email alone, refused too); nothing else is.
        assert len(fake.calls) == (3 if status == 400 else 1)
    assert fake.remediations == []
    for r in results:
        assert (r.state, r.transient, r.retry_after) == ("failed", transient, retry_after)
        assert f"HTTP {status}" in (r.error or "") and f"boom {status}" in (r.error or "")


@pytest.mark.parametrize("status", [500, 503, 504])
def test_an_ambiguous_answer_is_submitted_once_and_never_resubmitted(status: int) -> None:
    """A 5xx may come after the service accepted the call: recorded ``submitted`` (verification settles
    it), not transient, so nothing submits these emails again."""
    reqs = [email_request("nm-1"), email_request("nm-2", index=1)]
    with FakeGraph() as fake:
        fake.inject("POST", r"remediate$", status, times=None, message=f"boom {status}")
        results = asyncio.run(execute(fake, "move_to_junk", reqs, max_retries=3))
        assert len(fake.calls) == 1
    for r in results:
        assert (r.state, r.transient, r.link) == ("submitted", False, None)
        assert f"HTTP {status}" in r.detail and "may have accepted" in r.detail
        assert r.undo == {"strategy": "defender", "restore_action": "move_to_inbox"}


def test_the_sdk_never_replays_the_post_so_a_processed_503_makes_one_entry() -> None:
    """Before, the RetryHandler replayed a 503 that the service had processed: two Action-center entries
    for the same emails. Now the POST is sent once, even with the production retry count."""
    with FakeGraph() as fake:
        fake.inject("POST", r"remediate$", 503, retry_after=1, applied=True)
        results = asyncio.run(execute(fake, "move_to_junk", [email_request("nm-1")], max_retries=3))
        assert [c.status for c in fake.calls] == [503]
    assert len(fake.remediations) == 1
    assert results[0].state == "submitted" and not results[0].transient


def test_a_429_is_left_to_the_worker_with_its_retry_after() -> None:
    with FakeGraph() as fake:
        fake.inject("POST", r"remediate$", 429, times=None, retry_after=1)
        results = asyncio.run(execute(fake, "move_to_junk", [email_request("nm-1")], max_retries=1))
        assert [c.status for c in fake.calls] == [429]
    assert (results[0].state, results[0].transient, results[0].retry_after) == ("failed", True, 1.0)
    assert fake.remediations == []


def test_a_400_is_bisected_so_only_the_refused_email_fails() -> None:
    nmids = ["nm-1", "nm-2", "nm-bad", "nm-4", "nm-5"]
    reqs = [email_request(n, index=i) for i, n in enumerate(nmids)]
    with FakeGraph() as fake:
        # The service refuses every call that carries nm-bad, and only those.
        fake.inject("POST", r"remediate$", 400, times=None, body_contains='"nm-bad"',
                    code="BadRequest", message="Invalid analyzed email")
        results = asyncio.run(execute(fake, "move_to_junk", reqs))
        submitted = sorted(e["networkMessageId"] for r in fake.remediations for e in r.emails)
        statuses = [c.status for c in fake.calls]
    assert [(r.state, r.transient) for r in results] == [("submitted", False)] * 2 + [("failed", False)] + \
        [("submitted", False)] * 2
    assert "Invalid analyzed email" in (results[2].error or "")
    assert submitted == ["nm-1", "nm-2", "nm-4", "nm-5"]
    # [5] -> [2 ok] [3] -> [1 bad] [2 ok]: a few calls, not one per email.
    assert statuses == [400, 202, 400, 400, 202]


def test_a_403_is_not_bisected() -> None:
    reqs = [email_request(n, index=i) for i, n in enumerate(["nm-1", "nm-2", "nm-3"])]
    with FakeGraph() as fake:
        fake.inject("POST", r"remediate$", 403, times=None, message="no licence")
        results = asyncio.run(execute(fake, "move_to_junk", reqs))
        assert len(fake.calls) == 1
    assert all(r.state == "failed" for r in results)
