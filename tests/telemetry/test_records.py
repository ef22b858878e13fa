"""The telemetry records: their shape from a real demo run, what they never carry, and how they are made.

docs/telemetry.schema.json is the contract the alerts and the workbook read (docs/monitoring.md).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from app import telemetry
from core import logsafe
from core.settings import ROOT, ConfigError
from detections.catalog import load_catalog
from detections.scan import RuleRun
from devtools.telemetry_file import read_rows, telemetry_to_file
from remediation.outcome import Outcome
from tests.telemetry.monitoring import record

SCHEMA = json.loads((ROOT / "docs" / "telemetry.schema.json").read_text(encoding="utf-8"))
# The traces row as the Functions host writes it to Application Insights (columns: apptraces reference).
TRACES_ROW = {
    "type": "object",
    "required": ["timestamp", "message", "severityLevel", "customDimensions"],
    "properties": {
        "timestamp": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"},
        "message": {"type": "string", "pattern": "^xdr-telemetry \\{"},
        "severityLevel": {"enum": [0, 1, 2, 3, 4]},
        "customDimensions": {"type": "object"},
    },
}


def _validator() -> jsonschema.Validator:
    cls = jsonschema.validators.validator_for(SCHEMA)
    cls.check_schema(SCHEMA)
    return cls(SCHEMA)


def test_every_demo_record_matches_the_schema(demo: dict[str, Any]) -> None:
    rows = demo["rows"]
    assert rows, "the demo wrote no telemetry"
    validator = _validator()
    for n, row in enumerate(rows):
        jsonschema.validate(row, TRACES_ROW)
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(record(row))]
        assert not errors, f"telemetry.jsonl line {n + 1}: {errors}"


def test_the_demo_records_each_rule_run_and_each_request(demo: dict[str, Any]) -> None:
    records = [record(r) for r in demo["rows"]]
    runs = {r["rule"] for r in records if r["event"] == "scan_run" and r["run_id"] == "demo-scan-1"}
    rules_run = {slug for slug, d in demo["summary"]["rule_details"].items() if d["ran"]}
    assert runs == rules_run
    assert all(r["period_s"] and r["duration_ms"] is not None for r in records if r["event"] == "scan_run")
    requests = {r["request_id"]: r for r in records if r["event"] == "request"}
    ledger = {row["request_id"]: row for row in demo["ledger"]}
    assert set(requests) == set(ledger)
    for rid, rec in requests.items():   # the record says what the ledger says
        assert (rec["rule"], rec["action"], rec["state"]) == (ledger[rid]["rule"], ledger[rid]["action"],
                                                               ledger[rid]["state"])
        assert rec["run_id"] == "demo-scan-1" and rec["detect_to_state_s"] is not None


def test_the_demo_says_where_the_records_went(demo: dict[str, Any]) -> None:
    where = demo["summary"]["environment"]["telemetry"]
    assert str(demo["out"] / "telemetry.jsonl") in where and "Application Insights traces" in where


def test_records_carry_ids_not_mail_content(demo: dict[str, Any]) -> None:
    text = (demo["out"] / "telemetry.jsonl").read_text(encoding="utf-8")
    emails = Path(demo["out"] / "tenant" / "tables" / "EmailEvents.jsonl")
    subjects = {json.loads(line).get("Subject") for line in emails.read_text(encoding="utf-8").splitlines()}
    leaked = sorted(s for s in subjects if s and len(s) > 8 and s in text)
    assert not leaked, f"mail subjects in telemetry: {leaked[:3]}"
    assert "http" not in text.lower() and "InternetMessageId" not in text


def _rule_run(error: str | None = None, **kw: Any) -> RuleRun:
    rule = load_catalog()["consumer-sender-to-shared-mailboxes"]
    return RuleRun(rule=rule, params={}, query="EmailEvents", rows=[], requests=[], partial=False,
                   error=error, run_id="run-1", **kw)


def _capture(tmp_path: Path) -> Any:
    return telemetry_to_file(tmp_path / "t.jsonl")


def test_a_record_goes_through_logsafe(tmp_path: Path) -> None:
    logsafe.install()
    secret = "AbCdEf0123456789"
    outcome = Outcome(request_id="a" * 32, rule="r", action="notify", target={}, mode="auto", state="failed",
                      error="x")
    request = {"run": {"id": "run-1"}, "target": {"recipient": f"https://evil.example/x?sig={secret}"}}
    with _capture(tmp_path) as sink:
        telemetry.outcomes(request, [outcome])
    line = sink.path.read_text(encoding="utf-8")
    assert secret not in line and "redacted" in line
    jsonschema.validate(read_rows(sink.path)[0], TRACES_ROW)


@pytest.mark.parametrize(("error", "cls"), [
    ("defender: HTTP 429 TooManyRequests: quota exceeded", "quota"),
    ("defender: HTTP 403 Forbidden: missing ThreatHunting.Read.All", "permission"),
    ("sentinel: HTTP 401: token rejected", "permission"),
    ("sentinel: HTTP 504: gateway timeout", "timeout"),
    ("defender: HTTP 400 BadRequest: syntax", "backend"),
])
def test_error_classes(error: str, cls: str, tmp_path: Path) -> None:
    now = datetime(2026, 12, 2, tzinfo=UTC)
    with _capture(tmp_path) as sink:
        rec = telemetry.scan_run(_rule_run(error), None, "defender", started=now,
                                 finished=now + timedelta(seconds=2), trigger="timer")
    assert (rec["state"], rec["error_class"], rec["duration_ms"]) == ("error", cls, 2000)
    assert record(read_rows(sink.path)[0]) == rec
    assert error not in sink.path.read_text(encoding="utf-8"), "the error text stays out of the record"


def test_every_record_has_every_field_and_unknown_ones_are_refused() -> None:
    assert list(telemetry.record("notify_failed")) == list(telemetry.FIELDS)
    assert set(SCHEMA["required"]) == set(telemetry.FIELDS)
    with pytest.raises(ValueError, match="subject"):
        telemetry.record("request", subject="hello")


class _Config:
    def __init__(self) -> None:
        catalog = load_catalog()
        self.catalog = catalog
        self.settings = type("S", (), {"backend": "defender"})()
        self.timers = [type("T", (), {"slug": s})() for s in sorted(catalog)[:2]]


def test_startup_records_a_failure_with_its_class_and_lets_it_raise(tmp_path: Path) -> None:
    @telemetry.startup
    def load() -> Any:
        raise ConfigError("app setting RESPONDER_BACKEND: unknown")

    with _capture(tmp_path) as sink, pytest.raises(ConfigError):
        load()
    (row,) = read_rows(sink.path)
    assert row["severityLevel"] == 3
    assert record(row)["event"] == "startup" and record(row)["error_class"] == "config"
    assert "RESPONDER_BACKEND" not in row["message"]


def test_startup_records_ok_then_one_scheduled_record_per_timer(tmp_path: Path) -> None:
    config = _Config()
    with _capture(tmp_path) as sink:
        assert telemetry.startup(lambda: config)() is config
    recs = [record(r) for r in read_rows(sink.path)]
    assert [r["state"] for r in recs] == ["ok", "scheduled", "scheduled"]
    assert [r["rule"] for r in recs[1:]] == [t.slug for t in config.timers]
    periods = {s: int(r.query_frequency.total_seconds()) for s, r in config.catalog.items()}
    assert all(r["period_s"] == periods[r["rule"]] for r in recs[1:])


def test_records_are_info_even_when_the_root_logger_is_at_warning(tmp_path: Path) -> None:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        with _capture(tmp_path) as sink:
            telemetry.notify_failed("some-rule outcome")
            telemetry.emit(telemetry.record("startup", state="ok"))
    finally:
        root.setLevel(level)
    assert len(read_rows(sink.path)) == 2


def test_a_bug_in_telemetry_costs_a_record_never_the_invocation(tmp_path: Path) -> None:
    with _capture(tmp_path) as sink:
        assert telemetry.scan_run(object(), None, "defender", started=datetime.now(UTC),
                                  finished=datetime.now(UTC), trigger="timer") is None
        assert telemetry.outcomes({"run": {}}, [object()]) is None
        config = object()
        assert telemetry.startup(lambda: config)() is config   # an odd config: start-up still returns it
    messages = [r["message"] for r in read_rows(sink.path)]
    assert [m for m in messages if m.startswith("telemetry record not written")] == [
        "telemetry record not written (scan_run)", "telemetry record not written (outcomes)"]
    assert [record({"message": m})["state"] for m in messages if m.startswith("xdr-telemetry")] == ["ok"]


@pytest.mark.parametrize(("what", "rule", "card"), [("consumer-sender-to-shared-mailboxes outcome",
                                                     "consumer-sender-to-shared-mailboxes", "outcome"),
                                                    ("held expiry", None, "held expiry")])
def test_an_undelivered_card_names_its_rule_only_when_it_has_one(what: str, rule: str | None, card: str,
                                                                 tmp_path: Path) -> None:
    with _capture(tmp_path):
        rec = telemetry.notify_failed(what)
    assert (rec["rule"], rec["trigger"], rec["error_class"]) == (rule, card, "webhook")
    assert not list(_validator().iter_errors(rec))
