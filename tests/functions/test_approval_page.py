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


def confirmed_move(env: Env, fake: FakeGraph, nmid: str = "held-1") -> str:
    """A held move approved on the page and run by the worker (mailbox strategy: confirmed at once)."""
    imid = f"<{nmid}@mail.gmail.com>"
    fake.mailboxes.add(PROTECTED[0], imid, "inbox")
    req = make_request(rule=RULE, action="move_to_junk", mode="approval",
                       target={"network_message_id": nmid, "recipient": PROTECTED[0],
                               "internet_message_id": imid},
                       evidence={"Subject": "s"}, detected_at=NOW,
                       run={"id": "run-page", "index": 0, "total": 1}, severity="Medium", rule_name="r")
    env.call("worker", QueueMessage(id="q", body=json.dumps(req).encode(), dequeue_count=1))
    _, _, msgs = post(env, "approve", req["id"])
    (body,) = msgs.value
    env.call("worker", QueueMessage(id="q2", body=body.encode(), dequeue_count=1))
    assert env.rt.ledger().read(RULE, req["id"]).state == "confirmed"
    assert fake.mailboxes.folder_of(PROTECTED[0], imid) == "junkemail"
    return req["id"]


@pytest.fixture
def mailbox(make_env: Any, fake: FakeGraph, monkeypatch: pytest.MonkeyPatch) -> Env:
    env = make_env(graph_base_url=fake.base_url, email_strategy="mailbox")
    monkeypatch.setattr(env.fa, "page_auth", ON)
    return env


def test_undo_from_the_page_is_recorded_and_the_worker_restores(mailbox: Env, fake: FakeGraph) -> None:
    rid = confirmed_move(mailbox, fake)
    status, page = get(mailbox, rid)
    assert status == 200 and f'action="/requests/{rid}/undo"' in page
    moves = len(fake.calls_to("POST", "/move$"))
    assert moves == 1
    status, page, msgs = post(mailbox, "undo", rid)
    assert status == 200, page
    assert len(fake.calls_to("POST", "/move$")) == moves     # nothing ran in the page's process
    (body,) = msgs.value
    undo = json.loads(body)
    assert (undo["action"], undo["undo_of"]["request_id"], undo["undo_of"]["by"]) == (
        "move_to_inbox", rid, "alice@contoso.com")
    row = mailbox.rt.ledger().read(RULE, rid)
    assert row.extra["undone_by"] == undo["id"]
    new = mailbox.rt.ledger().get(undo["id"])
    assert (new.extra["undo_of"], new.extra["decided_by_id"], new.extra["decided_via"]) == (rid, OID, "page")
    mailbox.call("worker", QueueMessage(id="q3", body=body.encode(), dequeue_count=1))
    assert fake.mailboxes.folder_of(PROTECTED[0], "<held-1@mail.gmail.com>") == "inbox"
    assert mailbox.rt.ledger().get(undo["id"]).state == "confirmed"
    # Undone once: no second undo, and the button is gone.
    status, page, msgs = post(mailbox, "undo", rid)
    assert status == 409 and msgs.value is None
    assert f'action="/requests/{rid}/undo"' not in get(mailbox, rid)[1]


def test_undo_of_a_held_request_is_409(on: Env) -> None:
    rid = held(on)
    assert f'action="/requests/{rid}/undo"' not in get(on, rid)[1]
    status, page, msgs = post(on, "undo", rid)
    assert status == 409 and "held" in page and msgs.value is None


def test_undo_needs_csrf(mailbox: Env, fake: FakeGraph) -> None:
    rid = confirmed_move(mailbox, fake)
    status, _, msgs = post(mailbox, "undo", rid, csrf="0" * 64)
    assert status == 403 and msgs.value is None
    assert not mailbox.rt.ledger().read(RULE, rid).extra.get("undone_by")


def test_mark_done_records_a_connector_command_run_by_hand(on: Env) -> None:
    req = make_request(rule="connector-sender-mismatch", action="disable_connector", mode="approval",
                       target={"connector": "Partner relay"}, evidence={"Connector": "Partner relay"},
                       detected_at=NOW, run={"id": "run-conn", "index": 0, "total": 1}, severity="High",
                       rule_name="c")
    on.call("worker", QueueMessage(id="q", body=json.dumps(req).encode(), dequeue_count=1))
    rid = req["id"]
    status, page = get(on, rid)
    assert status == 200 and f'action="/requests/{rid}/done"' in page
    assert f'action="/requests/{rid}/approve"' not in page     # approving could run nothing here
    assert "Set-InboundConnector" in page or "Set-OutboundConnector" in page
    status, page, msgs = post(on, "done", rid)
    assert status == 200, page
    assert msgs.value is None                                  # nothing to run, nothing queued
    row = on.rt.ledger().get(rid)
    assert (row.state, row.extra["approved_by"], row.extra["executed_by"], row.extra["decided_by_id"],
            row.extra["decided_via"]) == ("confirmed", "alice@contoso.com", "person", OID, "page")
    status, page, _ = post(on, "done", rid)
    assert status == 409 and "confirmed" in page


def test_mark_done_is_refused_for_an_action_the_app_runs(on: Env) -> None:
    rid = held(on)
    status, _, msgs = post(on, "done", rid)
    assert status == 409 and msgs.value is None
    assert on.rt.ledger().read(RULE, rid).state == "held"


def test_run_page_undoes_all_done_by_queueing_one_undo_each(mailbox: Env, fake: FakeGraph) -> None:
    a, b = confirmed_move(mailbox, fake), confirmed_move(mailbox, fake, "held-2")
    other = held(mailbox, "held-3")
    resp = mailbox.call("page_run", http("GET", f"https://{HOST}/runs/run-page",
                                         route_params={"id": "run-page"}, headers=principal()))
    assert 'action="/runs/run-page/undo"' in resp.get_body().decode()
    hdrs = {**principal(), "Origin": f"https://{HOST}"}

    def undo_all(csrf: str) -> tuple[int, str, Out]:
        msgs = Out()
        resp = mailbox.call("page_run_undo", http("POST", f"https://{HOST}/runs/run-page/undo",
                                                  urlencode({"csrf": csrf}).encode(),
                                                  route_params={"id": "run-page"}, headers=hdrs), msgs)
        return resp.status_code, resp.get_body().decode(), msgs

    assert undo_all("0" * 64)[0] == 403
    moves = len(fake.calls_to("POST", "/move$"))
    assert moves == 2
    status, page, msgs = undo_all(token("run:run-page"))
    assert status == 200, page
    assert "2 undo(s) recorded and queued" in page and "1 had done nothing" in page
    assert len(fake.calls_to("POST", "/move$")) == moves
    assert sorted(json.loads(m)["undo_of"]["request_id"] for m in msgs.value) == sorted([a, b])
    assert mailbox.rt.ledger().read(RULE, other).state == "held"
    for i, body in enumerate(msgs.value):
        mailbox.call("worker", QueueMessage(id=f"u{i}", body=body.encode(), dequeue_count=1))
    assert {fake.mailboxes.folder_of(PROTECTED[0], f"<{n}@mail.gmail.com>") for n in ("held-1", "held-2")} \
        == {"inbox"}
    status, page, msgs = undo_all(token("run:run-page"))
    assert status == 200 and "0 undo(s)" in page and "2 undone before" in page and msgs.value == []
