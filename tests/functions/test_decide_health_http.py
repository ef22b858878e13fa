"""POST /api/requests/{id}/approve|reject and GET /api/health, called as the host calls them."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from app.bootstrap import StorageConfig
from app.runtime import Runtime
from core.request import make_request
from devtools.azurite import DEV_KEY
from devtools.fakegraph import FakeGraph
from tests.functions.conftest import NOW, PROTECTED, RULE, Env, http


@pytest.fixture
def fake() -> Iterator[FakeGraph]:
    with FakeGraph() as graph:
        yield graph


def held_request(env: Env, nmid: str = "held-1") -> str:
    """A request of an approval-mode action, through the worker function: it ends up held."""
    req = make_request(rule=RULE, action="move_to_junk", mode="approval",
                       target={"network_message_id": nmid, "recipient": PROTECTED[0]},
                       evidence={"SenderMailFromAddress": "bad@gmail.com"}, detected_at=NOW,
                       run={"id": "run-held", "index": 0, "total": 1}, severity="Medium", rule_name="r")
    env.call("worker", QueueMessage(id="q", body=json.dumps(req).encode(), dequeue_count=1))
    assert env.rt.ledger().read(RULE, req["id"]).state == "held"
    return req["id"]


def decide(env: Env, verb: str, rid: str, body: Any = b"", **kw: Any) -> tuple[int, dict[str, Any]]:
    resp = env.call(verb, http("POST", f"http://localhost/api/requests/{rid}/{verb}", body,
                               route_params={"id": rid}, **kw))
    return resp.status_code, json.loads(resp.get_body())


@pytest.mark.parametrize("verb", ["approve", "reject"])
@pytest.mark.parametrize(("rid", "body", "params", "field"), [
    ("not-an-id", b"", None, "id"),
    ("A" * 32, b"", None, "id"),
    ("a" * 32, {"by": "x", "force": True}, None, "force"),
    ("a" * 32, {"by": 7}, None, "by"),
    ("a" * 32, {"by": " "}, None, "by"),
    ("a" * 32, b"[1]", None, "body"),
    ("a" * 32, b"{", None, "body"),
    ("a" * 32, b"", {"by": "me"}, "query.by"),
])
def test_bad_input_is_a_400_naming_the_field(env: Env, verb: str, rid: str, body: Any,
                                             params: dict[str, str] | None, field: str) -> None:
    status, doc = decide(env, verb, rid, body, params=params)
    assert (status, doc["field"]) == (400, field)


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_unknown_request_is_404(env: Env, verb: str) -> None:
    status, doc = decide(env, verb, "0" * 32)
    assert status == 404 and "no request" in doc["message"]


def test_approve_runs_a_held_request_once(make_env: Any, fake: FakeGraph) -> None:
    env = make_env(graph_base_url=fake.base_url, api_base="https://func-xdr.azurewebsites.net")
    rid = held_request(env)
    # One card: the run's outcome card, which is the approval card since everything in it is held.
    (card,) = env.notifier.cards
    assert card["body"][0]["id"] == "xdr-approval"
    # The approval card tells on-call the exact call to make, and to which app.
    text = json.dumps(card)
    assert f"POST /api/requests/{rid}/approve" in text and "https://func-xdr.azurewebsites.net" in text
    status, doc = decide(env, "approve", rid, {"by": "oncall@contoso.com"})
    assert (status, doc["state"]) == (200, "submitted"), doc
    assert [e["networkMessageId"] for r in fake.remediations for e in r.emails] == ["held-1"]
    row = env.rt.ledger().read(RULE, rid)
    assert (row.extra["approved_by"], row.extra["claimed_by"]) == ("function-key", "oncall@contoso.com")
    status, doc = decide(env, "approve", rid)
    assert status == 409 and "only a held request" in doc["message"]
    assert len(fake.remediations) == 1


def test_a_principal_header_on_the_key_route_is_only_a_claim(make_env: Any, fake: FakeGraph) -> None:
    # /api/* is excluded from App Service authentication, so nothing vouches for the header there.
    env = make_env(graph_base_url=fake.base_url)
    rid = held_request(env)
    status, doc = decide(env, "reject", rid, headers={"X-MS-CLIENT-PRINCIPAL-NAME": "alice@contoso.com"})
    assert (status, doc["state"]) == (200, "rejected")
    row = env.rt.ledger().read(RULE, rid)
    assert (row.extra["rejected_by"], row.extra["claimed_by"]) == ("function-key", "alice@contoso.com")
    status, _ = decide(env, "reject", rid)
    assert status == 409
    status, _ = decide(env, "approve", rid)
    assert status == 409
    assert fake.remediations == []


def test_a_name_in_the_body_is_only_a_claim_never_who_approved(make_env: Any, fake: FakeGraph) -> None:
    # Anyone holding the (shared) function key could otherwise write any name into the audit trail.
    env = make_env(graph_base_url=fake.base_url)
    rid = held_request(env, "spoof-1")
    status, _ = decide(env, "reject", rid, {"by": "ciso@contoso.com"})
    assert status == 200
    row = env.rt.ledger().read(RULE, rid)
    assert (row.extra["rejected_by"], row.extra["claimed_by"]) == ("function-key", "ciso@contoso.com")
    assert row.detail == "rejected by function-key"
    # A forged principal header does not make anyone the approver either.
    rid = held_request(env, "spoof-2")
    status, _ = decide(env, "approve", rid, {"by": "ciso@contoso.com"},
                       headers={"X-MS-CLIENT-PRINCIPAL-NAME": "alice@contoso.com"})
    assert status == 200
    row = env.rt.ledger().read(RULE, rid)
    assert (row.extra["approved_by"], row.extra["claimed_by"]) == ("function-key", "ciso@contoso.com")
    # No body, no claim.
    rid = held_request(env, "spoof-3")
    assert decide(env, "reject", rid)[0] == 200
    assert "claimed_by" not in env.rt.ledger().read(RULE, rid).extra


CONNECTOR_RULE = "connector-sender-mismatch"


def held_connector(env: Env, name: str = "Partner relay") -> str:
    req = make_request(rule=CONNECTOR_RULE, action="disable_connector", mode="approval",
                       target={"connector": name}, evidence={"Connector": name}, detected_at=NOW,
                       run={"id": "run-conn", "index": 0, "total": 1}, severity="High", rule_name="c")
    env.call("worker", QueueMessage(id="q", body=json.dumps(req).encode(), dequeue_count=1))
    assert env.rt.ledger().read(CONNECTOR_RULE, req["id"]).state == "held"
    return req["id"]


def test_manual_connector_actions_are_run_by_hand_then_marked_done(make_env: Any, fake: FakeGraph) -> None:
    # The default deployment (connectorActions=manual) grants no Exchange permission.
    env = make_env(graph_base_url=fake.base_url, api_base="https://func-xdr.azurewebsites.net")
    assert env.rt.settings.connector_actions == "manual"
    fake.connectors.add("Partner relay", "inbound")
    rid = held_connector(env)
    (card,) = env.notifier.cards
    text = json.dumps(card)
    assert "Set-InboundConnector -Identity 'Partner relay' -Enabled:$false" in text
    assert "then mark it done" in text and f"python -m responder approve {rid} --done" in text
    assert "To approve" not in text and f"python -m responder approve {rid}\"" not in text
    # A plain approve runs nothing and says what to do instead.
    status, doc = decide(env, "approve", rid)
    assert status == 409 and f"approve {rid} --done" in doc["message"] and '{"done": true}' in doc["message"]
    assert fake.calls == []
    status, doc = decide(env, "reject", rid, {"done": True})
    assert (status, doc.get("field")) == (400, "done")
    status, doc = decide(env, "approve", rid, {"done": True},
                         headers={"X-MS-CLIENT-PRINCIPAL-NAME": "alice@contoso.com"})
    assert (status, doc["state"]) == (200, "confirmed"), doc
    # Marked done through the key route: recorded as the function key (the header is only a claim).
    assert doc["outcome"]["detail"].startswith("run by hand by function-key")
    assert fake.calls == [] and fake.connectors.get("Partner relay")["Enabled"] is True


def test_health_reports_counts_and_reachability_only(env: Env) -> None:
    resp = env.call("health", http("GET", "http://localhost/api/health"))
    doc = json.loads(resp.get_body())
    assert resp.status_code == 200
    assert doc == {"status": "ok", "config": "loaded", "storage": "reachable", "notifications": True,
                   "rules": {"valid": True, "count": len(env.rt.config.catalog),
                             "scheduled": len(env.rt.config.timers)},
                   "emergency_stop": {"on": False, "at": ""}}


WEBHOOK = "https://prod-01.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?sig=SECRETSIG"


def test_notifications_off_is_warned_at_start_and_shown_by_health(make_env: Any,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="app.runtime"):
        env = make_env(notifier="from-settings", teams_webhook_url="")
    assert any("notifications are off" in r.getMessage() and "RESPONDER_TEAMS_WEBHOOK_URL" in r.getMessage()
               for r in caplog.records)
    resp = env.call("health", http("GET", "http://localhost/api/health"))
    assert resp.status_code == 200 and json.loads(resp.get_body())["notifications"] is False


def test_notifications_on_says_so_without_the_url(make_env: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        env = make_env(notifier="from-settings", teams_webhook_url=WEBHOOK)
    assert not any("notifications are off" in r.getMessage() for r in caplog.records)
    assert "SECRETSIG" not in caplog.text
    resp = env.call("health", http("GET", "http://localhost/api/health"))
    body = resp.get_body().decode()
    assert json.loads(body)["notifications"] is True
    assert "SECRETSIG" not in body and "logic.azure.com" not in body


def test_health_says_unhealthy_without_leaking_the_connection(env: Env,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    nothing_there = "http://127.0.0.1:9/devstoreaccount1"   # the discard port: connection refused
    dead = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
            f"TableEndpoint={nothing_there};QueueEndpoint={nothing_there};")
    config = dataclasses.replace(env.rt.config, storage=StorageConfig(connection_string=dead))
    monkeypatch.setattr(env.fa, "runtime", Runtime(config, notifier=env.notifier))
    resp = env.call("health", http("GET", "http://localhost/api/health"))
    text = resp.get_body().decode()
    assert resp.status_code == 503
    assert json.loads(text)["storage"] == "unreachable"
    assert DEV_KEY not in text and "127.0.0.1" not in text
