"""A local scan says which tables had no file, and the documented example runs every rule."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.tenant import TenantConfig
from detections.backends.local import LocalBackend, referenced_tables
from detections.catalog import load_catalog
from detections.scan import scan
from responder.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
NOW = "2026-11-20T12:00:00Z"
NOW_DT = datetime(2026, 11, 20, 12, tzinfo=UTC)
# The command README.md and docs/rules.md give, word for word (every rule: no --rule).
DOCUMENTED = "python -m responder scan --tables docs/examples/tables --config docs/examples/tenant.yaml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "no-tenant.yaml").write_text("{}\n", encoding="utf-8")
    monkeypatch.setenv("RESPONDER_TENANT_CONFIG", str(tmp_path / "no-tenant.yaml"))
    monkeypatch.delenv("RESPONDER_PARAMS", raising=False)
    monkeypatch.delenv("RESPONDER_DRY_RUN", raising=False)


def email_only(tmp_path: Path) -> Path:
    folder = tmp_path / "tables"
    folder.mkdir()
    row = {"Timestamp": "now-5m", "NetworkMessageId": "m1"}
    (folder / "EmailEvents.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    return folder


def run(backend: LocalBackend, query: str) -> list[str]:
    return asyncio.run(backend.run(query, timespan=timedelta(hours=1))).notes


def test_a_table_without_a_file_is_named_in_the_result(tmp_path: Path) -> None:
    backend = LocalBackend(email_only(tmp_path), NOW_DT)
    [note] = run(backend, "CloudAppEvents | join kind=inner (EmailEvents) on ReportId | count")
    assert "CloudAppEvents" in note and "EmailEvents" not in note and "read as empty" in note
    assert run(backend, "EmailEvents | where Subject != 'CloudAppEvents' | count") == []


def test_tables_given_as_rows_are_empty_on_purpose(tmp_path: Path) -> None:
    # Rule test cases leave out tables that should be empty: no note there.
    assert run(LocalBackend(None, NOW_DT), "CloudAppEvents | count") == []


def test_names_in_strings_and_comments_are_not_tables() -> None:
    query = 'let x = "IdentityLogonEvents"; // CloudAppEvents\nEmailEvents | extend y = \'EmailUrlInfo\''
    assert referenced_tables(query, ["EmailEvents", "CloudAppEvents", "IdentityLogonEvents",
                                     "EmailUrlInfo"]) == {"EmailEvents"}


def test_scan_reports_the_missing_table_as_a_problem_of_the_rule(tmp_path: Path) -> None:
    rule = load_catalog()["exchange-connector-created-or-modified"]
    [run_] = asyncio.run(scan([rule], LocalBackend(email_only(tmp_path), NOW_DT), tenant=TenantConfig(),
                              overrides={}, now=NOW_DT))
    assert run_.error is None and run_.rows == []
    assert any("CloudAppEvents" in p and "no file" in p for p in run_.problems), run_.problems


def test_the_documented_command_runs_every_rule(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for doc in (ROOT / "README.md", ROOT / "docs" / "rules.md"):
        text = " ".join(doc.read_text(encoding="utf-8").replace("\\\n", " ").split())
        assert DOCUMENTED in text, f"{doc.name} no longer shows the example command"
    monkeypatch.chdir(ROOT)
    args = ["scan", "--tables", "docs/examples/tables", "--config", "docs/examples/tenant.yaml",
            "--now", NOW, "--json"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    requests = json.loads(out)   # stdout is the array and nothing else
    assert {r["rule"] for r in requests} == {"consumer-sender-to-shared-mailboxes"} and len(requests) == 3
    # Rules over tables the example has no file for say so, on stderr.
    assert "no file for table CloudAppEvents" in err and "no file for table IdentityLogonEvents" in err
