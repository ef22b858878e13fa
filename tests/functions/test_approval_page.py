"""The approval page (GET /requests/{id}, GET /runs/{id}, POST forms), called as the host calls it."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from azure.functions.queue import QueueMessage

from app.signin import PageAuth, Principal, csrf_token
from core.request import make_request
from devtools.fakegraph import FakeGraph
from tests.functions.conftest import NOW, PROTECTED, RULE, Env, Out, http

ONCALL = "6f1e3d2c-0000-4000-8000-00000000c411"
OID = "0a1b2c3d-0000-4000-8000-0000000a11ce"
HOST = "func-xdr.azurewebsites.net"
ON = PageAuth(easy_auth=True, oncall=ONCALL, key=b"k" * 32)
EVIL = '<script>alert("x")</script>'


@pytest.fixture
def fake() -> Iterator[FakeGraph]:
    with FakeGraph() as graph:
        yield graph


def principal(oid: str = OID, groups: tuple[str, ...] = (ONCALL,),
              name: str = "alice@contoso.com") -> dict[str, str]:
    """The headers Easy Auth injects (configure-authentication-user-identities)."""
    claims = [{"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
              {"typ": "preferred_username", "val": name}] + [{"typ": "groups", "val": g} for g in groups]
    doc = {"auth_typ": "aad", "claims": claims, "name_typ": "preferred_username", "role_typ": "roles"}
    return {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(doc).encode()).decode(),
            "X-MS-CLIENT-PRINCIPAL-NAME": name, "X-MS-CLIENT-PRINCIPAL-ID": oid, "Host": HOST,
            "X-Forwarded-For": "203.0.113.7:51234"}


def held(env: Env, nmid: str = "held-1", subject: str = EVIL) -> str:
    req = make_request(rule=RULE, action="move_to_junk", mode="approval",
                       target={"network_message_id": nmid, "recipient": PROTECTED[0]},
                       evidence={"SenderMailFromAddress": f"bad{EVIL}@gmail.com", "Subject": subject},
                       detected_at=NOW, run={"id": "run-page", "index": 0, "total": 1}, severity="Medium",
                       rule_name="r")
    env.call("worker", QueueMessage(id="q", body=json.dumps(req).encode(), dequeue_count=1))
    assert env.rt.ledger().read(RULE, req["id"]).state == "held"
    return req["id"]


@pytest.fixture
def on(env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    monkeypatch.setattr(env.fa, "page_auth", ON)
    return env


def token(rid: str, oid: str = OID) -> str:
    return csrf_token(ON, Principal(name="", oid=oid, memberships=frozenset(), ip=""), rid)


def post(env: Env, verb: str, rid: str, *, headers: dict[str, str] | None = None, csrf: str | None = None,
         origin: str | None = f"https://{HOST}") -> tuple[int, str, Out]:
    hdrs = dict(principal() if headers is None else headers)
    if origin:
        hdrs["Origin"] = origin
    form = urlencode({"csrf": token(rid) if csrf is None else csrf, verb: "1"}).encode()
    msgs = Out()
    resp = env.call(f"page_{verb}", http("POST", f"https://{HOST}/requests/{rid}/{verb}", form,
                                          route_params={"id": rid}, headers=hdrs), msgs)
    return resp.status_code, resp.get_body().decode(), msgs


def get(env: Env, rid: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    resp = env.call("page_request", http("GET", f"https://{HOST}/requests/{rid}", route_params={"id": rid},
                                         headers=principal() if headers is None else headers))
    return resp.status_code, resp.get_body().decode()


def test_page_shows_a_held_request_with_hostile_evidence_inert(on: Env) -> None:
    rid = held(on)
    status, page = get(on, rid)
    assert status == 200
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    rule_name = on.rt.config.catalog[RULE].name
    assert rid in page and "move_to_junk" in page and "held" in page
    from html import escape
    assert escape(rule_name) in page
    assert f'action="/requests/{rid}/approve"' in page and f'value="{token(rid)}"' in page
    resp = on.call("page_request", http("GET", f"https://{HOST}/requests/{rid}", route_params={"id": rid},
                                        headers=principal()))
    assert "script-src" not in resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]


def test_approve_records_the_person_and_queues_for_the_worker(make_env: Any, fake: FakeGraph,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_env(graph_base_url=fake.base_url)
    monkeypatch.setattr(env.fa, "page_auth", ON)
    rid = held(env)
    status, page, msgs = post(env, "approve", rid)
    assert status == 200, page
    row = env.rt.ledger().read(RULE, rid)
    assert row.state == "approved"
    assert (row.extra["approved_by"], row.extra["decided_by_id"], row.extra["decided_from"],
            row.extra["decided_via"]) == ("alice@contoso.com", OID, "203.0.113.7:51234", "page")
    assert row.state_times["approved"]
    assert fake.remediations == []            # nothing ran in the page's process
    (body,) = msgs.value
    assert json.loads(body)["id"] == rid
    # The worker (in Azure, with the managed identity) picks it up and runs it, once.
    env.call("worker", QueueMessage(id="q2", body=body.encode(), dequeue_count=1))
    assert env.rt.ledger().read(RULE, rid).state == "submitted"
    assert [e["networkMessageId"] for r in fake.remediations for e in r.emails] == ["held-1"]
    env.call("worker", QueueMessage(id="q3", body=body.encode(), dequeue_count=1))
    assert len(fake.remediations) == 1


def test_reject_records_the_person_and_queues_nothing(on: Env) -> None:
    rid = held(on)
    status, _, msgs = post(on, "reject", rid)
    row = on.rt.ledger().read(RULE, rid)
    assert (status, row.state, row.extra["rejected_by"], msgs.value) == (200, "rejected", "alice@contoso.com",
                                                                         None)


def test_a_decision_is_final_409_with_the_state(on: Env) -> None:
    rid = held(on)
    assert post(on, "approve", rid)[0] == 200
    status, page, msgs = post(on, "approve", rid)
    assert status == 409 and "approved" in page and msgs.value is None
    status, page, _ = post(on, "reject", rid)
    assert status == 409 and "approved" in page
    other = held(on, "held-2")
    assert post(on, "reject", other)[0] == 200
    status, page, msgs = post(on, "approve", other)
    assert status == 409 and "rejected" in page and msgs.value is None


def test_approve_after_expiry_is_409(on: Env) -> None:
    from datetime import timedelta
    rid = held(on)
    on.clock.now = NOW + on.rt.settings.held_expiry + timedelta(minutes=1)
    status, page, msgs = post(on, "approve", rid)
    assert status == 409 and "expired" in page and msgs.value is None


def test_someone_outside_the_oncall_group_gets_403(on: Env) -> None:
    rid = held(on)
    bob = "0a1b2c3d-0000-4000-8000-0000000b0b00"
    outsider = principal(oid=bob, groups=("some-other-group",), name="bob@contoso.com")
    assert get(on, rid, outsider)[0] == 403
    status, _, msgs = post(on, "approve", rid, headers=outsider, csrf=token(rid, bob))
    assert status == 403 and msgs.value is None
    assert on.rt.ledger().read(RULE, rid).state == "held"


def test_a_principal_header_without_easy_auth_is_refused(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # As deployed without authsettingsV2: RESPONDER_EASY_AUTH unset, WEBSITE_AUTH_ENABLED unset.
    monkeypatch.setattr(env.fa, "page_auth", PageAuth.from_env({"RESPONDER_ONCALL_GROUP": ONCALL,
                                                                "RESPONDER_PAGE_KEY": "k" * 32}))
    rid = held(env)
    status, page = get(env, rid)
    assert status == 403 and "not configured" in page
    status, _, msgs = post(env, "approve", rid)
    assert status == 403 and msgs.value is None
    assert env.rt.ledger().read(RULE, rid).state == "held"
    # The app setting alone is not enough: the platform must say authentication is on.
    assert not PageAuth.from_env({"RESPONDER_EASY_AUTH": "entra"}).easy_auth
    assert PageAuth.from_env({"RESPONDER_EASY_AUTH": "entra", "WEBSITE_AUTH_ENABLED": "True"}).easy_auth


@pytest.mark.parametrize(("csrf", "origin"), [
    ("", f"https://{HOST}"),                       # no token
    ("0" * 64, f"https://{HOST}"),                 # wrong token
    (None, "https://evil.example"),                # cross-site form post
    (None, None),                                  # neither Origin nor Referer
])
def test_csrf_is_refused(on: Env, csrf: str | None, origin: str | None) -> None:
    rid = held(on)
    status, _, msgs = post(on, "approve", rid, csrf=csrf, origin=origin)
    assert status == 403 and msgs.value is None
    assert on.rt.ledger().read(RULE, rid).state == "held"


def test_a_token_for_another_request_is_refused(on: Env) -> None:
    rid, other = held(on), held(on, "held-2")
    status, _, _ = post(on, "approve", rid, csrf=token(other))
    assert status == 403


def test_run_page_lists_requests_and_approves_all_held(on: Env) -> None:
    a, b = held(on), held(on, "held-2")
    resp = on.call("page_run", http("GET", f"https://{HOST}/runs/run-page", route_params={"id": "run-page"},
                                    headers=principal()))
    page = resp.get_body().decode()
    assert resp.status_code == 200 and a in page and b in page and "Approve all held (2)" in page
    hdrs = {**principal(), "Origin": f"https://{HOST}"}
    msgs = Out()
    form = urlencode({"csrf": token("run:run-page")}).encode()
    resp = on.call("page_run_approve", http("POST", f"https://{HOST}/runs/run-page/approve", form,
                                            route_params={"id": "run-page"}, headers=hdrs), msgs)
    assert resp.status_code == 200
    assert sorted(json.loads(m)["id"] for m in msgs.value) == sorted([a, b])
    assert {on.rt.ledger().read(RULE, r).state for r in (a, b)} == {"approved"}
