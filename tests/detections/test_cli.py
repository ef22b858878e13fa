"""``python -m responder scan`` and ``rules``: exit codes 0/1/2, one-line errors, pure JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.request import validate_request
from responder.cli import main
from tests.detections.helpers import MODEL, write_rule

ROOT = Path(__file__).resolve().parents[2]
NOW = "2026-11-20T12:00:00Z"
PROTECTED = "protected_recipients=support@contoso.com,sales@contoso.com,info@contoso.com"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No tenant.yaml or RESPONDER_PARAMS from the machine may leak into these tests: an empty tenant
    # config (a named file must exist: a missing one is an error, see load_tenant_config).
    (tmp_path / "no-tenant.yaml").write_text("{}\n", encoding="utf-8")
    monkeypatch.setenv("RESPONDER_TENANT_CONFIG", str(tmp_path / "no-tenant.yaml"))
    monkeypatch.delenv("RESPONDER_PARAMS", raising=False)
    monkeypatch.delenv("RESPONDER_DRY_RUN", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps tables to the terminal width


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    folder = tmp_path / "tables"
    folder.mkdir()
    rows = [
        {
            "Timestamp": f"now-{m}m",
            "NetworkMessageId": f"m{i}",
            "SenderMailFromAddress": "eve@gmail.com",
            "SenderMailFromDomain": "gmail.com",
            "RecipientEmailAddress": rcpt,
            "Subject": "10:30",
            "LatestDeliveryLocation": "Inbox/folder",
        }
        for i, (m, rcpt) in enumerate(
            [(20, "support@contoso.com"), (15, "sales@contoso.com"), (10, "info@contoso.com")]
        )
    ]
    (folder / "EmailEvents.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def scan_args(tables: Path, *extra: str) -> list[str]:
    return ["scan", "--rule", MODEL, "--tables", str(tables), "--now", NOW, "--param", PROTECTED, *extra]


def test_json_output_is_only_an_array_of_requests(tables: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(scan_args(tables, "--json")) == 0
    out = capsys.readouterr()
    requests = json.loads(out.out)
    assert isinstance(requests, list) and len(requests) == 3
    for req in requests:
        assert validate_request(req)["schema"] == "remediation-request/1"
        assert req["mode"] == "auto" and req["action"] == "move_to_junk"
        assert req["evidence"]["Subject"] == "10:30"
    assert {r["target"]["network_message_id"] for r in requests} == {"m0", "m1", "m2"}
    assert out.err == ""


def test_table_output(tables: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(scan_args(tables)) == 0
    out = capsys.readouterr().out
    assert "Remediation requests" in out and "move_to_junk" in out and "m2" in out


def test_no_findings_is_success_and_an_empty_array(tables: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(scan_args(tables, "--param", "threshold=3", "--json")) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_dry_run_setting_overrides_modes(tables: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONDER_DRY_RUN", "true")
    assert main(scan_args(tables, "--json")) == 0
    assert {r["mode"] for r in json.loads(capsys.readouterr().out)} == {"dry_run"}


def test_tenant_config_file_supplies_parameters(tables: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "tenant.yaml"
    config.write_text(
        f"rules:\n  {MODEL}:\n    mode: approval\n    params:\n      protected_recipients: "
        "[support@contoso.com, sales@contoso.com, info@contoso.com]\n",
        encoding="utf-8",
    )
    args = ["scan", "--rule", MODEL, "--tables", str(tables), "--now", NOW, "--config", str(config), "--json"]
    assert main(args) == 0
    assert {r["mode"] for r in json.loads(capsys.readouterr().out)} == {"approval"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--param", "nonsense=1"], "parameter nonsense: no selected rule declares this parameter"),
        (["--param", "threshold=many"], "parameter threshold: expected a whole number"),
        (["--param", "window=soon"], "parameter window: expected a timespan"),
        (["--param", "threshold"], "--param 'threshold': expected NAME=VALUE"),
        (["--rule", "no-such-rule"],
         "unknown rule 'no-such-rule' (known: admin-logon-failures-then-success, "),
        (["--rule", "nope"], "unknown rule 'nope' (known: "),
        # The backends send whole seconds (Graph's Timespan): refused before anything runs.
        (["--param", "window=1500ms"], "parameter window: a timespan must be a whole number of seconds"),
        (["--param", "window=PT0.5S"], "parameter window: a timespan must be a whole number of seconds"),
        (["--config", "/nonexistent/tenant.yaml"], "no such file"),
    ],
)
def test_bad_input_exits_2_with_one_line(tables: Path, capsys, extra: list[str], message: str) -> None:
    assert main(scan_args(tables, *extra)) == 2
    err = capsys.readouterr()
    assert err.out == ""
    assert err.err.count("\n") == 1 and err.err.startswith("error: ") and message in err.err


def test_missing_required_parameter_refuses(tables: Path, capsys) -> None:
    args = ["scan", "--rule", MODEL, "--tables", str(tables), "--now", NOW, "--json"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "protected_recipients: is required and has no value" in err


def test_malformed_table_exits_2(tables: Path, capsys) -> None:
    (tables / "EmailEvents.jsonl").write_text('{"Subject": "ok"}\n{"Subject": \n', encoding="utf-8")
    assert main(scan_args(tables, "--json")) == 2
    err = capsys.readouterr().err
    assert f"{tables / 'EmailEvents.jsonl'}: line 2: not valid JSON" in err


def test_now_without_tables_is_bad_input(capsys) -> None:
    assert main(["scan", "--rule", MODEL, "--now", NOW, "--param", PROTECTED]) == 2
    assert "--now needs --tables" in capsys.readouterr().err


def test_backend_failure_exits_1(
    tables: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, "broken", lambda d: d.update(query=d["query"] + "| project-reorder Subject\n"))
    monkeypatch.setattr("detections.catalog.RULES_DIR", rules)
    assert (
        main(
            [
                "scan",
                "--rule",
                "broken",
                "--tables",
                str(tables),
                "--now",
                NOW,
                "--param",
                PROTECTED,
                "--json",
            ]
        )
        == 1
    )
    out = capsys.readouterr()
    assert json.loads(out.out) == []
    assert "broken: local backend: local engine: duckdb-kql does not support" in out.err


def test_rules_list(capsys) -> None:
    assert main(["rules", "list"]) == 0
    out = capsys.readouterr().out
    assert "consumer-sender-to" in out and "move_to_junk/auto" in out


def test_rules_test_passes_and_fails(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["rules", "test", "--rule", MODEL]) == 0
    assert "0 failed" in capsys.readouterr().out
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, "loose", lambda d: d.update(query=d["query"].replace("> threshold", ">= threshold")))
    monkeypatch.setattr("detections.catalog.RULES_DIR", rules)
    assert main(["rules", "test"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  loose  [negative] exactly `threshold` copies is not enough" in out
    assert "+ unexpected: move_to_junk" in out


def test_rules_test_with_a_broken_file_exits_2(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, "typo", lambda d: d.update(sevrity="High"))
    monkeypatch.setattr("detections.catalog.RULES_DIR", rules)
    assert main(["rules", "test"]) == 2
    assert "typo.yaml: sevrity: unknown key" in capsys.readouterr().err


def test_python_dash_m_entry_point(tables: Path, tmp_path: Path) -> None:
    (tmp_path / "none.yaml").write_text("{}\n", encoding="utf-8")
    env = {**os.environ, "RESPONDER_TENANT_CONFIG": str(tmp_path / "none.yaml")}
    env.pop("RESPONDER_PARAMS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "responder", *scan_args(tables, "--json")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 3
    proc = subprocess.run(
        [sys.executable, "-m", "responder", "scan", "--bogus"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1


def test_the_documented_example_folder(capsys) -> None:
    # docs/rules.md tells SOC engineers to run exactly this; keep it true.
    args = [
        "scan",
        "--tables",
        str(ROOT / "docs/examples/tables"),
        "--now",
        NOW,
        "--rule",
        MODEL,
        "--config",
        str(ROOT / "docs/examples/tenant.yaml"),
        "--json",
    ]
    assert main(args) == 0
    requests = json.loads(capsys.readouterr().out)
    assert sorted((r["target"]["network_message_id"][-2:], r["target"]["recipient"]) for r in requests) == [
        ("01", "support@contoso.com"),
        ("02", "sales@contoso.com"),
        ("04", "support@contoso.com"),
    ]


def test_disabled_rules_run_only_when_named(tables: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, "kept")
    write_rule(rules, "dropped", lambda d: d.update(id="00000000-0000-4000-8000-000000000002"))
    monkeypatch.setattr("detections.catalog.RULES_DIR", rules)
    config = tmp_path / "tenant.yaml"
    config.write_text("rules:\n  dropped:\n    enabled: false\n", encoding="utf-8")
    base = [
        "scan",
        "--tables",
        str(tables),
        "--now",
        NOW,
        "--param",
        PROTECTED,
        "--config",
        str(config),
        "--json",
    ]
    assert main(base) == 0
    assert {r["rule"] for r in json.loads(capsys.readouterr().out)} == {"kept"}
    assert main([*base, "--rule", "dropped"]) == 0
    assert {r["rule"] for r in json.loads(capsys.readouterr().out)} == {"dropped"}


def test_scan_against_a_loopback_fake_graph_needs_no_credential(monkeypatch: pytest.MonkeyPatch,
                                                                capsys) -> None:
    from devtools.fakegraph import FakeGraph

    # Nothing to sign in with: a credential would fail to get a token, so none may be built.
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "IDENTITY_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    row = {"Timestamp": "2026-11-20T11:50:00Z", "NetworkMessageId": "m1",
           "SenderMailFromAddress": "eve@gmail.com",
           "SenderFromAddress": "eve@gmail.com", "RecipientEmailAddress": "support@contoso.com",
           "Subject": "10:30", "TotalEmailCount": 3, "LatestDeliveryLocation": "Inbox/folder",
           "LatestDeliveryAction": "Delivered", "InternetMessageId": "<1@x>", "ReportId": "r1"}
    schema = [{"name": k, "type": "String"} for k in row]

    with FakeGraph(hunting=lambda query, timespan: (schema, [row])) as fake:
        monkeypatch.setenv("RESPONDER_GRAPH_BASE_URL", fake.base_url)
        code = main(["scan", "--rule", MODEL, "--param", PROTECTED, "--json"])
        hunting_calls = len(fake.calls_to("POST", "runHuntingQuery$"))
    out = capsys.readouterr()
    assert code == 0, out.err
    assert hunting_calls == 1
    [req] = json.loads(out.out)
    assert req["target"]["network_message_id"] == "m1"


class FailingCredential:
    """What DefaultAzureCredential does when nothing can sign in: a many-line error."""

    def __init__(self) -> None:
        self.closed = False

    async def get_token(self, *scopes: str, **_: object) -> object:
        from azure.core.exceptions import ClientAuthenticationError

        raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token from the included "
                                        "credentials.\nAttempted credentials:\n\tManagedIdentityCredential: "
                                        "no endpoint\n\tAzureCliCredential: Please run 'az login'")

    async def close(self) -> None:
        self.closed = True


def test_a_token_failure_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    cred = FailingCredential()
    monkeypatch.setattr("responder.commands.scan.cli_credential", lambda client_id: cred)
    monkeypatch.setenv("RESPONDER_GRAPH_BASE_URL", "https://graph.microsoft.com/v1.0")
    assert main(["scan", "--rule", MODEL, "--param", PROTECTED, "--json"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.count("\n") == 1 and out.err.startswith("error: cannot get a token for "
                                                            "https://graph.microsoft.com/.default: ")
    assert "DefaultAzureCredential failed to retrieve a token" in out.err
    assert cred.closed


def test_the_cli_credential_never_uses_a_client_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from azure.identity import EnvironmentCredential
    from azure.identity.aio import EnvironmentCredential as AioEnvironmentCredential
    from azure.identity.aio import ManagedIdentityCredential

    from responder.commands import cli_credential

    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001")
    monkeypatch.setenv("AZURE_CLIENT_ID", "11111111-1111-1111-1111-111111111111")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-a-real-secret")
    monkeypatch.delenv("IDENTITY_ENDPOINT", raising=False)
    cred = cli_credential("11111111-1111-1111-1111-111111111111")
    assert cred.credentials and not any(isinstance(c, AioEnvironmentCredential) for c in cred.credentials)
    asyncio.run(cred.close())
    sync = cli_credential("11111111-1111-1111-1111-111111111111", aio=False)
    assert sync.credentials and not any(isinstance(c, EnvironmentCredential) for c in sync.credentials)
    sync.close()
    # In Azure (the host sets IDENTITY_ENDPOINT) with a client id: the managed identity alone.
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "x")
    mi = cli_credential("11111111-1111-1111-1111-111111111111")
    assert isinstance(mi, ManagedIdentityCredential)
    asyncio.run(mi.close())
