"""disable_connector through the Exchange admin client against the fake's InvokeCommand endpoint."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from core.request import RequestInvalid
from devtools.fakegraph import FakeGraph
from remediation.actions.connector import manual_command
from remediation.exchange import EXCHANGE_SCOPE, ExchangeClient, make_exchange_client, render_command
from tests.remediation.actionkit import execute, settings_for
from tests.remediation.factories import connector_request

TOKEN = "eyJ0eXAiOiJKV1QiLCJub3QiOiJyZWFsIn0.secret-part"


class FakeCredential:
    """An azure-identity style async credential: records the scopes asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(TOKEN, 4_102_444_800)


def run(fake: FakeGraph, reqs: list[dict], credential: Any = None) -> list[Any]:
    async def go() -> list[Any]:
        client = ExchangeClient(fake.tenant_id, base_url=fake.exchange_base_url, credential=credential)
        try:
            return await execute(fake, "disable_connector", reqs, exchange=client)
        finally:
            await client.aclose()
    return asyncio.run(go())


def test_manual_mode_never_calls_exchange() -> None:
    # A manual deployment holds no Exchange permission: a call could only end in 401/403.
    async def go(fake: FakeGraph) -> list[Any]:
        client = ExchangeClient(fake.tenant_id, base_url=fake.exchange_base_url, credential=FakeCredential())
        try:
            return await execute(fake, "disable_connector", [connector_request("Partner relay")],
                                 exchange=client, connector_actions="manual")
        finally:
            await client.aclose()
    with FakeGraph() as fake:
        fake.connectors.add("Partner relay", "inbound")
        [res] = asyncio.run(go(fake))
        assert fake.calls == [] and fake.connectors.get("Partner relay")["Enabled"] is True  # type: ignore[index]
    assert res.state == "failed" and "RESPONDER_CONNECTOR_ACTIONS is manual" in (res.error or "")
    assert "Set-InboundConnector -Identity 'Partner relay' -Enabled:$false" in res.detail


def test_disables_an_inbound_connector_with_the_exact_commands_and_a_token() -> None:
    cred = FakeCredential()
    with FakeGraph() as fake:
        fake.connectors.add("Partner relay", "inbound")
        [res] = run(fake, [connector_request("Partner relay")], cred)
        calls = fake.calls
        assert fake.connectors.get("Partner relay")["Enabled"] is False  # type: ignore[index]
    url = f"/adminapi/beta/{fake.tenant_id}/InvokeCommand"
    assert [(c.method, c.path, c.json) for c in calls] == [
        ("POST", url, {"CmdletInput": {"CmdletName": "Get-InboundConnector",
                                       "Parameters": {"Identity": "Partner relay"}}}),
        ("POST", url, {"CmdletInput": {"CmdletName": "Set-InboundConnector",
                                       "Parameters": {"Identity": "Partner relay", "Enabled": False}}}),
    ]
    assert all(c.headers["authorization"] == f"Bearer {TOKEN}" for c in calls)
    # Anchored on the tenant's arbitration mailbox, as CIPP's New-ExoRequest.ps1 does (APP:...@tenant id).
    assert all(c.headers["x-anchormailbox"] == "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@"
               + fake.tenant_id for c in calls)
    assert cred.scopes == [(EXCHANGE_SCOPE,)] * 2
    assert (res.state, res.detail) == ("confirmed", "ran Set-InboundConnector -Identity 'Partner relay' "
                                                    "-Enabled:$false")
    assert res.undo == {"connector": "Partner relay", "connector_type": "inbound", "enabled": True}
    assert TOKEN not in repr(calls[0])


def test_without_a_type_both_kinds_are_looked_up() -> None:
    req = connector_request("Relay-Out", connector_type="outbound")
    del req["target"]["connector_type"]
    with FakeGraph() as fake:
        fake.connectors.add("Relay-Out", "outbound")
        [res] = run(fake, [req])
        names = [c.json["CmdletInput"]["CmdletName"] for c in fake.calls]
        assert fake.connectors.get("Relay-Out")["Enabled"] is False  # type: ignore[index]
    assert names == ["Get-InboundConnector", "Get-OutboundConnector", "Set-OutboundConnector"]
    # The Inbound lookup's "not found" is only in error.details / error.innererror (generic envelope).
    assert [c.status for c in fake.calls] == [400, 200, 200]
    assert res.state == "confirmed"


def test_other_cmdlet_errors_name_the_cmdlets_own_message() -> None:
    from remediation.exchange import ExchangeClient

    async def go(fake: FakeGraph) -> str:
        client = ExchangeClient(fake.tenant_id, base_url=fake.exchange_base_url)
        try:
            await client.invoke("Set-InboundConnector", {"Identity": "Ghost", "Enabled": False})
        except Exception as exc:
            assert getattr(exc, "not_found", None) is True
            return str(exc)
        finally:
            await client.aclose()
        return ""

    with FakeGraph() as fake:
        text = asyncio.run(go(fake))
    assert "Error executing cmdlet" in text and "object 'Ghost' couldn't be found" in text


def test_already_disabled_is_skipped() -> None:
    with FakeGraph() as fake:
        fake.connectors.add("Old", "inbound", enabled=False)
        [res] = run(fake, [connector_request("Old")])
        assert [c.json["CmdletInput"]["CmdletName"] for c in fake.calls] == ["Get-InboundConnector"]
    assert (res.state, res.detail) == ("skipped", "inbound connector Old is already disabled")


def test_missing_connector_fails_permanently_and_others_still_run() -> None:
    with FakeGraph() as fake:
        fake.connectors.add("Real", "inbound")
        results = run(fake, [connector_request("Ghost"), connector_request("Real")])
        assert fake.connectors.get("Real")["Enabled"] is False  # type: ignore[index]
    assert [(r.state, r.transient) for r in results] == [("failed", False), ("confirmed", False)]
    assert results[0].error == "no inbound connector named 'Ghost' exists"


def test_no_exchange_client_fails_with_the_command_to_run() -> None:
    with FakeGraph() as fake:
        [res] = asyncio.run(execute(fake, "disable_connector", [connector_request("Relay")], exchange=None))
        assert fake.calls == []
    assert res.state == "failed" and not res.transient
    assert res.detail == "not run: Set-InboundConnector -Identity 'Relay' -Enabled:$false"


@pytest.mark.parametrize(("status", "transient", "retry_after"), [
    (429, True, 30.0), (503, True, None), (400, False, None), (403, False, None)])
def test_fault_mapping(status: int, transient: bool, retry_after: float | None) -> None:
    with FakeGraph() as fake:
        fake.connectors.add("Relay", "inbound")
        fake.inject("POST", "InvokeCommand$", status, retry_after=retry_after, message="nope")
        [res] = run(fake, [connector_request("Relay")])
        assert fake.connectors.get("Relay")["Enabled"] is True  # type: ignore[index]
    assert (res.state, res.transient, res.retry_after) == ("failed", transient, retry_after)
    assert f"HTTP {status}" in (res.error or "") and "nope" in (res.error or "")


def test_render_command_quotes_for_powershell() -> None:
    assert render_command("outbound", "Bob's $(evil) relay") == \
        "Set-OutboundConnector -Identity 'Bob''s $(evil) relay' -Enabled:$false"
    assert render_command("inbound", "x", enabled=True) == "Set-InboundConnector -Identity 'x' -Enabled:$true"
    with pytest.raises(ValueError, match="inbound or outbound"):
        render_command("sideways", "x")
    with pytest.raises(ValueError, match="empty"):
        render_command("inbound", "  ")


# PowerShell's tokenizer treats each of these as a single quote (ASCII ' and U+2018..U+201B).
PS_QUOTES = "'\u2018\u2019\u201a\u201b"


def ps_single_quoted(text: str) -> tuple[str, str]:
    """Read one PowerShell single-quoted string at the start of ``text`` the way PowerShell does: any
    quote character ends it unless the next character is a quote too (then the pair is one literal
    quote). Returns (the value, what follows the closing quote)."""
    assert text[0] in PS_QUOTES
    value, i = [], 1
    while i < len(text):
        c = text[i]
        if c in PS_QUOTES:
            if i + 1 < len(text) and text[i + 1] in PS_QUOTES:
                value.append(text[i + 1])
                i += 2
                continue
            return "".join(value), text[i + 1:]
        value.append(c)
        i += 1
    raise AssertionError(f"unterminated string in {text!r}")


@pytest.mark.parametrize("name", [
    "Relay\u2019; Remove-InboundConnector -Identity Prod; \u2019",
    "Relay\u2018; Remove-InboundConnector -Identity Prod; \u2018",
    "Relay\u201a; Remove-InboundConnector -Identity Prod; \u201b",
    "Relay\u201b\u201b; iex 'x'; \u2019",
    "Relay'; Remove-InboundConnector -Identity Prod; '",
    "\u2019",
    "a\u2019\u2018b",
])
def test_render_command_keeps_curly_quote_names_one_argument(name: str) -> None:
    command = render_command("inbound", name)
    prefix = "Set-InboundConnector -Identity "
    assert command.startswith(prefix)
    value, rest = ps_single_quoted(command[len(prefix):])
    assert (value, rest) == (name, " -Enabled:$false")


@pytest.mark.parametrize("name", ["Relay\nRemove-InboundConnector Prod", "Relay\r", "a\x00b", "a\tb",
                                  "a\u2028b", "a\x1bb"])
def test_render_command_refuses_control_characters(name: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        render_command("inbound", name)
    # The approval card and the ledger then show no command at all (a request built past the contract,
    # which itself refuses such a name since issue 13).
    forged = {**connector_request("Relay"), "target": {"connector": name, "connector_type": "inbound"}}
    assert manual_command(forged) is None
    with pytest.raises(RequestInvalid, match="target/connector"):
        connector_request(name)


def test_curly_quote_connector_name_is_sent_verbatim_as_json_by_invoke_command() -> None:
    # The execution path sends the name as a JSON value: no PowerShell parsing, so no escaping needed.
    name = "Relay\u2019; Remove-InboundConnector -Identity Prod; \u2019"
    with FakeGraph() as fake:
        fake.connectors.add(name, "inbound")
        fake.connectors.add("Prod", "inbound")
        [res] = run(fake, [connector_request(name)])
        sent = [c.json["CmdletInput"] for c in fake.calls]
        assert fake.connectors.get(name)["Enabled"] is False  # type: ignore[index]
        assert fake.connectors.get("Prod")["Enabled"] is True  # type: ignore[index]
    assert sent[-1] == {"CmdletName": "Set-InboundConnector",
                        "Parameters": {"Identity": name, "Enabled": False}}
    assert res.state == "confirmed"


def test_a_name_with_a_newline_still_gets_a_result_without_a_command() -> None:
    with FakeGraph() as fake:
        # Built past the contract (which refuses such a name since issue 13): the action's own check stays.
        forged = {**connector_request("Relay"),
                  "target": {"connector": "Re\nlay", "connector_type": "inbound"}}
        [res] = asyncio.run(execute(fake, "disable_connector", [forged], exchange=None))
    assert res.state == "failed" and "Set-InboundConnector" not in (res.detail or "")
    assert "control characters" in (res.detail or "")


def test_client_needs_a_credential_for_a_real_endpoint_and_a_tenant() -> None:
    with pytest.raises(ValueError, match="credential"):
        ExchangeClient("t", base_url="https://outlook.office365.com/adminapi/beta")
    with pytest.raises(ValueError, match="tenant id"):
        ExchangeClient("", base_url="http://127.0.0.1:1/adminapi/beta")


def test_make_exchange_client_uses_the_setting() -> None:
    with FakeGraph() as fake:
        client = make_exchange_client(settings_for(fake), None)
        assert client is not None and client.base_url == fake.exchange_base_url
        assert client.tenant_id == fake.tenant_id


def test_unreachable_endpoint_is_transient() -> None:
    with FakeGraph() as fake:
        base, tenant = fake.exchange_base_url, fake.tenant_id
    # the fake is closed now: nothing listens on its port

    async def go() -> list[Any]:
        client = ExchangeClient(tenant, base_url=base)
        try:
            with FakeGraph() as graph:
                return await execute(graph, "disable_connector", [connector_request("Relay")],
                                     exchange=client)
        finally:
            await client.aclose()

    [res] = asyncio.run(go())
    assert (res.state, res.transient) == ("failed", True)
    assert "connection failed" in (res.error or "")
