"""The loopback fake itself, over plain HTTP: what it records, serves, and how faults behave."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from devtools.fakegraph import FakeGraph, GraphFault


@pytest.fixture
def fake() -> Iterator[FakeGraph]:
    with FakeGraph() as f:
        yield f


@pytest.fixture
def http(fake: FakeGraph) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.root_url) as c:
        yield c


def test_urls_are_loopback(fake: FakeGraph) -> None:
    assert fake.base_url.startswith("http://127.0.0.1:") and fake.base_url.endswith("/v1.0")
    assert fake.exchange_base_url == fake.root_url + "/adminapi/beta"


def test_records_every_call_and_answers_unknown_paths_in_graphs_error_shape(fake: FakeGraph,
                                                                            http: httpx.Client) -> None:
    r = http.post("/v1.0/nowhere?$top=1", json={"a": 1}, headers={"Authorization": "Bearer t0k"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "BadRequest" and "nowhere" in err["message"] and "request-id" in err["innerError"]
    [call] = fake.calls
    assert (call.method, call.path, call.query, call.json, call.status) == (
        "POST", "/v1.0/nowhere", {"$top": "1"}, {"a": 1}, 400)
    assert call.headers["authorization"] == "Bearer t0k" and "t0k" not in repr(call)
    fake.clear_calls()
    assert fake.calls == []


def test_injected_fault_counts_down_then_the_real_answer(fake: FakeGraph, http: httpx.Client) -> None:
    fake.users.add("a@contoso.com")
    fault = fake.inject("GET", r"/users/a@contoso\.com$", 429, times=2, retry_after=4, code="TooManyRequests")
    got = [http.get("/v1.0/users/a@contoso.com") for _ in range(3)]
    assert [r.status_code for r in got] == [429, 429, 200]
    assert got[0].headers["retry-after"] == "4" and got[0].json()["error"]["code"] == "TooManyRequests"
    assert fault.hits == 2
    assert got[2].json()["userPrincipalName"] == "a@contoso.com"


def test_an_applied_fault_does_the_work_and_still_fails(fake: FakeGraph, http: httpx.Client) -> None:
    user = fake.users.add("a@contoso.com")
    fake.inject("PATCH", "/users/", 503, applied=True)
    r = http.patch("/v1.0/users/a@contoso.com", json={"accountEnabled": False})
    assert r.status_code == 503 and user.account_enabled is False


def test_inject_refuses_nonsense(fake: FakeGraph) -> None:
    with pytest.raises(ValueError, match="400-599"):
        fake.inject("GET", ".", 200)
    with pytest.raises(ValueError, match="times"):
        fake.inject("GET", ".", 500, times=0)


def test_hunting_needs_a_handler(http: httpx.Client) -> None:
    r = http.post("/v1.0/security/runHuntingQuery", json={"Query": "EmailEvents"})
    assert r.status_code == 400 and "hunting handler" in r.json()["error"]["message"]


def test_hunting_handler_on_both_paths_and_its_faults(fake: FakeGraph, http: httpx.Client) -> None:
    seen: list[tuple[str, str | None]] = []

    def hunting(query: str, timespan: str | None) -> tuple[list, list]:
        seen.append((query, timespan))
        if "boom" in query:
            raise GraphFault(429, "Query quota exceeded.", retry_after=12)
        return [("Subject", "String")], [{"Subject": "10:30"}]

    fake.hunting = hunting
    a = http.post("/v1.0/security/runHuntingQuery", json={"Query": "T", "Timespan": "PT1H"})
    b = http.post("/v1.0/security/microsoft.graph.security.runHuntingQuery", json={"Query": "T"})
    c = http.post("/v1.0/security/runHuntingQuery", json={"Query": "boom"})
    assert a.json()["schema"] == [{"name": "Subject", "type": "String"}]
    assert a.json()["results"] == [{"Subject": "10:30"}] and b.status_code == 200
    assert (c.status_code, c.headers["retry-after"], c.json()["error"]["message"]) == (
        429, "12", "Query quota exceeded.")
    assert seen == [("T", "PT1H"), ("T", None), ("boom", None)]


def test_remediate_validates_records_and_calls_the_hook(fake: FakeGraph, http: httpx.Client) -> None:
    hooked: list = []
    fake.on_remediate = lambda action, emails: hooked.append((action, emails))
    good = {"displayName": "x", "description": "d", "severity": "medium", "action": "moveToJunk",
            "remediateSendersCopy": False,
            "analyzedEmails": [{"networkMessageId": "n1", "recipientEmailAddress": "a@contoso.com"}]}
    r = http.post("/v1.0/security/collaboration/analyzedEmails/remediate", json=good)
    assert (r.status_code, r.content) == (202, b"")
    assert r.headers["location"] == fake.remediations[0].location
    assert hooked == [("moveToJunk", good["analyzedEmails"])]
    path = "/v1.0/security/collaboration/analyzedEmails/remediate"
    for broken in ({**good, "action": "purge"}, {**good, "severity": "urgent"},
                   {**good, "analyzedEmails": []}, {**good, "analyzedEmails": [{"networkMessageId": "n1"}]}):
        assert http.post(path, json=broken).status_code == 400
    assert len(fake.remediations) == 1

    def bad_hook(action: str, emails: list) -> None:
        raise RuntimeError("table missing")
    fake.on_remediate = bad_hook
    r = http.post("/v1.0/security/collaboration/analyzedEmails/remediate", json=good)
    assert r.status_code == 500 and "table missing" in r.json()["error"]["message"]


def test_mailbox_filter_move_and_old_ids(fake: FakeGraph, http: httpx.Client) -> None:
    mid = fake.mailboxes.add("a@contoso.com", "<x@y>")
    r = http.get("/v1.0/users/a@contoso.com/messages", params={"$filter": "subject eq 'x'"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "ErrorInvalidUrlQueryFilter")
    r = http.get("/v1.0/users/a@contoso.com/messages", params={"$filter": "internetMessageId eq '<x@y>'"})
    assert [m["id"] for m in r.json()["value"]] == [mid]
    moved = http.post(f"/v1.0/users/a@contoso.com/messages/{mid}/move",
                      json={"destinationId": "deleteditems"})
    assert moved.status_code == 201 and moved.json()["id"] != mid
    assert http.get(f"/v1.0/users/a@contoso.com/messages/{mid}").status_code == 404
    assert http.post(f"/v1.0/users/a@contoso.com/messages/{mid}/move",
                     json={"destinationId": "junkemail"}).status_code == 404
    assert http.post(f"/v1.0/users/a@contoso.com/messages/{moved.json()['id']}/move",
                     json={"destinationId": "NoSuchFolder"}).status_code == 404
    assert fake.mailboxes.folder_of("a@contoso.com", "<x@y>") == "deleteditems"
    assert http.get("/v1.0/users/ghost@contoso.com/messages").status_code == 404


def test_outlook_rate_limit_per_mailbox(fake: FakeGraph, http: httpx.Client) -> None:
    fake.mailboxes.add("a@contoso.com", "<x@y>")
    fake.mailboxes.add("b@contoso.com", "<x@y>")
    fake.outlook_limits(concurrent=4, per_window=2, window=3600, retry_after=60)
    codes = [http.get("/v1.0/users/a@contoso.com/messages").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert http.get("/v1.0/users/b@contoso.com/messages").status_code == 200
    fake.outlook_limits(None)
    assert http.get("/v1.0/users/a@contoso.com/messages").status_code == 200


ARBITRATION = "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}"


def test_exchange_invoke_command(fake: FakeGraph, http: httpx.Client) -> None:
    fake.connectors.add("In1", "inbound")
    fake.connectors.add("Out1", "outbound")
    url = f"/adminapi/beta/{fake.tenant_id}/InvokeCommand"
    anchor = {"X-AnchorMailbox": f"APP:{ARBITRATION}@{fake.tenant_id}"}

    def cmd(name: str, **params: object) -> httpx.Response:
        return http.post(url, json={"CmdletInput": {"CmdletName": name, "Parameters": params}},
                         headers=anchor)

    assert [c["Name"] for c in cmd("Get-InboundConnector").json()["value"]] == ["In1"]
    missing = cmd("Get-OutboundConnector", Identity="In1")
    # Not found as clients see it: a generic envelope, the cmdlet's own error in details and innererror.
    assert missing.status_code == 400
    err = missing.json()["error"]
    assert err["message"] == "Error executing cmdlet"
    assert "ManagementObjectNotFoundException" in json.loads(err["details"][0]["message"])["TypeName"]
    assert err["innererror"]["internalexception"]["type"].endswith("ManagementObjectNotFoundException")
    assert cmd("Remove-InboundConnector", Identity="In1").status_code == 400
    assert cmd("Set-InboundConnector", Identity="In1", Enabled="no").status_code == 400
    assert cmd("Set-InboundConnector", Identity="In1", Enabled=False).json()["value"] == []
    assert fake.connectors.get("In1")["Enabled"] is False  # type: ignore[index]
    other = http.post("/adminapi/beta/other-tenant/InvokeCommand",
                      json={"CmdletInput": {"CmdletName": "Get-InboundConnector"}}, headers=anchor)
    assert other.status_code == 404


@pytest.mark.parametrize("anchor", [None, "support@contoso.com",
                                    "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@another-tenant"])
def test_exchange_invoke_command_needs_the_arbitration_anchor(fake: FakeGraph, http: httpx.Client,
                                                              anchor: str | None) -> None:
    headers = {"X-AnchorMailbox": anchor} if anchor else {}
    resp = http.post(f"/adminapi/beta/{fake.tenant_id}/InvokeCommand", headers=headers,
                     json={"CmdletInput": {"CmdletName": "Get-InboundConnector"}})
    assert resp.status_code == 400 and "X-AnchorMailbox" in resp.json()["error"]["message"]
    upn = http.post(f"/adminapi/beta/{fake.tenant_id}/InvokeCommand",
                    headers={"X-AnchorMailbox": "UPN:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}"
                                                "@contoso.onmicrosoft.com"},
                    json={"CmdletInput": {"CmdletName": "Get-InboundConnector"}})
    assert upn.status_code == 200
