"""``python -m responder approve ID --done``: connector actions in manual mode (the default)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.request import make_request
from devtools.fakegraph import FakeGraph
from remediation.ledger import Ledger
from responder.cli import main

pytestmark = pytest.mark.azurite

RULE = "connector-sender-mismatch"


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch, storage_conn: str, unique_name: str, tmp_path: Path) -> Ledger:
    monkeypatch.setenv("RESPONDER_STORAGE_CONNECTION", storage_conn)
    monkeypatch.setenv("RESPONDER_LEDGER_TABLE", unique_name)
    monkeypatch.setenv("RESPONDER_DRY_RUN", "false")
    monkeypatch.delenv("RESPONDER_CONNECTOR_ACTIONS", raising=False)   # the default: manual
    tenant = tmp_path / "tenant.yaml"
    tenant.write_text("params:\n  protected_recipients: [support@contoso.com]\n")
    monkeypatch.setenv("RESPONDER_TENANT_CONFIG", str(tenant))
    return Ledger.from_connection_string(storage_conn, unique_name)


def test_approve_refuses_and_done_records_the_hand_run(ledger: Ledger, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    req = make_request(rule=RULE, action="disable_connector", mode="approval", target={"connector": "Relay"},
                       evidence={"Connector": "Relay"}, detected_at=datetime(2026, 11, 20, tzinfo=UTC),
                       run={"id": "run-cli", "index": 0, "total": 1})
    with FakeGraph() as fake:
        # The fake's Exchange endpoint would answer; the point is that nothing calls it.
        monkeypatch.setenv("RESPONDER_GRAPH_BASE_URL", fake.base_url)
        monkeypatch.setenv("RESPONDER_TENANT_ID", fake.tenant_id)
        monkeypatch.setenv("RESPONDER_EXCHANGE_BASE_URL", fake.exchange_base_url)
        fake.connectors.add("Relay", "inbound")
        rec, _ = ledger.receive(req)
        ledger.transition(rec, "held", hold_reason="approval")
        assert main(["approve", req["id"], "--by", "alice"]) == 2
        err = capsys.readouterr().err
        assert "Set-InboundConnector -Identity 'Relay' -Enabled:$false" in err
        assert f"approve {req['id']} --done" in err
        assert main(["approve", req["id"], "--by", "alice", "--done", "--json"]) == 0
        [out] = json.loads(capsys.readouterr().out)
        assert out["state"] == "confirmed" and out["detail"].startswith("run by hand by alice")
        assert fake.calls == [] and fake.connectors.get("Relay")["Enabled"] is True  # type: ignore[index]
    stored = ledger.get(req["id"])
    assert stored is not None and stored.state == "confirmed"
    assert stored.extra["approved_by"] == "alice" and stored.extra["run_by_hand"] is True
