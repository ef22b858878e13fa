"""Account actions through the real SDK against the fake: exact requests, skip, isolation, faults."""

from __future__ import annotations

import asyncio

import pytest

from devtools.fakegraph import FakeGraph
from tests.remediation.actionkit import execute
from tests.remediation.factories import user_request

ADMIN = "admin@contoso.com"


def run(fake: FakeGraph, action: str, reqs: list[dict]):  # type: ignore[no-untyped-def]
    return asyncio.run(execute(fake, action, reqs))


def test_revoke_sessions_posts_once_per_user() -> None:
    with FakeGraph() as fake:
        admin = fake.users.add(ADMIN)
        [res] = run(fake, "revoke_sessions", [user_request(ADMIN)])
        calls = [(c.method, c.url, c.json) for c in fake.calls]
    assert calls == [("POST", f"/v1.0/users/{ADMIN}/revokeSignInSessions", None)]
    assert fake.revoked == [admin.id]
    assert (res.state, res.detail) == ("confirmed", f"sign-in sessions of {ADMIN} revoked")


def test_disable_user_reads_then_patches_account_enabled_false() -> None:
    with FakeGraph() as fake:
        admin = fake.users.add(ADMIN)
        [res] = run(fake, "disable_user", [user_request(ADMIN, "disable_user")])
        calls = [(c.method, c.url, c.json) for c in fake.calls]
    assert calls == [("GET", f"/v1.0/users/{ADMIN}?$select=id,accountEnabled", None),
                     ("PATCH", f"/v1.0/users/{ADMIN}", {"@odata.type": "#microsoft.graph.user",
                                                        "accountEnabled": False})]
    assert admin.account_enabled is False
    assert (res.state, res.undo) == ("confirmed", {"account_enabled": True})


def test_disable_user_already_disabled_is_skipped() -> None:
    with FakeGraph() as fake:
        fake.users.add(ADMIN, account_enabled=False)
        [res] = run(fake, "disable_user", [user_request(ADMIN, "disable_user")])
        assert fake.calls_to("PATCH", ".") == []
    assert (res.state, res.detail) == ("skipped", f"account {ADMIN} is already disabled")


def test_confirm_compromised_sends_object_ids_without_reading_users() -> None:
    with FakeGraph() as fake:
        a = fake.users.add(ADMIN)
        b = fake.users.add("ops@contoso.com")
        # The feature grants IdentityRiskyUser.ReadWrite.All only: reading a user is refused as Graph
        # refuses a call the app has no permission for.
        fake.inject("GET", r"^/v1\.0/users/", 403, times=None, code="Authorization_RequestDenied",
                    message="Insufficient privileges to complete the operation.")
        reqs = [user_request(u, "confirm_compromised") for u in (a.id, ADMIN, b.id)]
        results = run(fake, "confirm_compromised", reqs)
        posts = fake.calls_to("POST", "confirmCompromised")
        reads = fake.calls_to("GET", "/users/")
    assert reads == []
    assert [(c.path, c.json) for c in posts] == [
        ("/v1.0/identityProtection/riskyUsers/confirmCompromised", {"userIds": [a.id, b.id]})]
    assert fake.compromised == {a.id, b.id}
    assert [r.state for r in results] == ["confirmed", "failed", "confirmed"]
    assert results[1].transient is False
    assert "not one: map the rule's AccountObjectId" in (results[1].error or "")


def test_confirm_compromised_isolates_an_id_the_service_refuses() -> None:
    with FakeGraph() as fake:
        a = fake.users.add(ADMIN)
        b = fake.users.add("ops@contoso.com")
        ghost = "0b7e9c4a-1111-4d2e-9f00-000000000000"
        reqs = [user_request(u, "confirm_compromised") for u in (a.id, ghost, b.id)]
        results = run(fake, "confirm_compromised", reqs)
    assert fake.compromised == {a.id, b.id}
    assert [r.state for r in results] == ["confirmed", "failed", "confirmed"]
    assert "HTTP 400" in (results[1].error or "")


def test_one_user_failing_does_not_stop_the_others() -> None:
    with FakeGraph() as fake:
        fake.users.add(ADMIN)
        fake.users.add("ops@contoso.com")
        fake.inject("POST", r"/users/ops@contoso\.com/revokeSignInSessions$", 404,
                    code="Request_ResourceNotFound", message="Resource 'ops@contoso.com' does not exist.")
        results = run(fake, "revoke_sessions", [user_request("ops@contoso.com"), user_request(ADMIN)])
    assert [r.state for r in results] == ["failed", "confirmed"]
    assert results[0].error == "HTTP 404 Request_ResourceNotFound: Resource 'ops@contoso.com' does not exist."


@pytest.mark.parametrize("action", ["revoke_sessions", "disable_user"])
def test_privileged_target_is_an_explicit_permanent_outcome(action: str) -> None:
    with FakeGraph() as fake:
        admin = fake.users.add("ga@contoso.com", privileged_role="Global Administrator")
        [res] = run(fake, action, [user_request(admin.id, action)])
        assert admin.account_enabled is True and fake.revoked == []
        # Once the identity holds the role, the same request goes through.
        fake.app_roles.add("Privileged Authentication Administrator")
        [again] = run(fake, action, [user_request(admin.id, action)])
    assert (res.state, res.transient, res.blocked) == ("failed", False, "privileged_target")
    assert (res.error or "").startswith(
        "target is privileged: the identity needs role Privileged Authentication Administrator to ")
    assert again.state == "confirmed"


def test_user_administrator_is_enough_for_a_helpdesk_admin_but_not_for_a_global_admin() -> None:
    with FakeGraph() as fake:
        fake.app_roles.add("User Administrator")
        helpdesk = fake.users.add("hd@contoso.com", privileged_role="Helpdesk Administrator")
        ga = fake.users.add("ga@contoso.com", privileged_role="Global Administrator")
        results = run(fake, "revoke_sessions", [user_request(helpdesk.id), user_request(ga.id)])
    assert [(r.state, r.blocked) for r in results] == [("confirmed", None), ("failed", "privileged_target")]


@pytest.mark.parametrize(("action", "method", "path", "status", "transient", "retry_after"), [
    ("revoke_sessions", "POST", "revokeSignInSessions$", 429, True, 3.0),
    ("revoke_sessions", "POST", "revokeSignInSessions$", 503, True, None),
    ("disable_user", "PATCH", "/users/", 400, False, None),
    ("disable_user", "GET", "/users/", 404, False, None),
    ("confirm_compromised", "POST", "confirmCompromised$", 429, True, 9.0),
    ("confirm_compromised", "POST", "confirmCompromised$", 403, False, None),
])
def test_fault_mapping(action: str, method: str, path: str, status: int, transient: bool,
                       retry_after: float | None) -> None:
    with FakeGraph() as fake:
        admin = fake.users.add(ADMIN)
        fake.inject(method, path, status, retry_after=retry_after)
        target = admin.id if action == "confirm_compromised" else ADMIN
        [res] = run(fake, action, [user_request(target, action)])
    assert (res.state, res.transient, res.retry_after) == ("failed", transient, retry_after)
    assert f"HTTP {status}" in (res.error or "")
    assert fake.revoked == [] and fake.compromised == set() and admin.account_enabled is True


def test_missing_user_fails_without_a_call() -> None:
    req = user_request(ADMIN)
    req["target"] = {}
    with FakeGraph() as fake:
        [res] = run(fake, "revoke_sessions", [req])
        assert fake.calls == []
    assert res.state == "failed" and res.error == "target needs a user (UPN or object id)"
