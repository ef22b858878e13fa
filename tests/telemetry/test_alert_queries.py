"""Each alert's query, as infra/app/monitoring.bicep deploys it: Microsoft's parser accepts it against the
Application Insights tables, and on the local KQL engine it stays quiet over a healthy demo run and fires
on a planted failure (records made by app/telemetry.py itself, then placed in time).

The local engine (duckdb-kql) has limits the queries respect: no make-series, no percentiles() (two
percentile() calls instead), no maxif() (max(iff(...))), names such as ``latest`` and ``kind`` bracketed or
avoided. It applies no outer time range, so every query filters its own (``lookback``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app import telemetry
from core.settings import ConfigError
from detections.catalog import load_catalog
from detections.kqlcheck import check_queries
from detections.scan import RuleRun
from devtools.telemetry_file import read_rows, telemetry_to_file, traces_row
from remediation.outcome import Outcome
from tests.telemetry.monitoring import alert_queries, at, record, run, stamp_of, tables, workbook_queries

QUERIES = alert_queries()
ALERTS = ("dead-man", "startup-failure", "backend-errors", "poison", "held-too-long", "webhook-failing",
          "push-rejected")
RULE = "consumer-sender-to-shared-mailboxes"


def test_the_six_alerts_of_issue_16_and_the_push_paths_are_deployed() -> None:
    assert set(QUERIES) == set(ALERTS)


def test_every_alert_and_workbook_query_passes_microsofts_parser() -> None:
    queries = {**QUERIES, **{f"workbook {k}": q for k, q in workbook_queries().items()}}
    checks = check_queries(list(queries.values()), tables=tables())
    problems = {name: [str(d) for d in c.diagnostics if d.severity in ("Error", "Warning")]
                for name, c in zip(queries, checks, strict=True)}
    assert not any(problems.values()), problems
    for name, c in zip(queries, checks, strict=True):
        assert c.columns, f"{name}: the result is not a table"
        if name in QUERIES:   # the alert counts result rows: no time column for Azure to bin on
            assert "timestamp" not in {col for col, _ in c.columns}, name


def test_the_parser_check_catches_a_wrong_column() -> None:
    (check,) = check_queries([QUERIES["poison"].replace("operation_Name", "operationName")], tables=tables())
    assert any("operationName" in d.message for d in check.errors)


# --- the records ---------------------------------------------------------------------------------


def _made(tmp_path: Path, make: Callable[[], Any]) -> list[dict[str, Any]]:
    """The traces rows app/telemetry.py writes while ``make`` runs."""
    path = tmp_path / f"t{len(list(tmp_path.iterdir()))}.jsonl"
    with telemetry_to_file(path):
        make()
    return read_rows(path)


def _now(rows: list[dict[str, Any]]) -> datetime:
    return max(stamp_of(r) for r in rows) + timedelta(minutes=1)


def _fired(alert: str, now: datetime, traces: list[dict[str, Any]],
           requests: list[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    return run(QUERIES[alert], now, traces, requests)


def _run(error: str | None, slug: str = RULE) -> RuleRun:
    rule = load_catalog()[slug]
    return RuleRun(rule=rule, params={}, query="q", rows=[], requests=[], partial=False, error=error,
                   run_id="r", transient=error is not None)


def _scan(error: str | None = None, slug: str = RULE) -> Callable[[], Any]:
    now = datetime.now(UTC)
    return lambda: telemetry.scan_run(_run(error, slug), None, "defender", started=now, finished=now,
                                      trigger="timer")


@pytest.mark.parametrize("alert", ALERTS)
def test_a_healthy_demo_run_keeps_every_alert_quiet(alert: str, demo: dict[str, Any]) -> None:
    assert _fired(alert, _now(demo["rows"]), demo["rows"]) == []


# dead-man's switch ---------------------------------------------------------------------------------

def _history(demo: dict[str, Any], end: datetime, *, stop: dict[str, datetime] | None = None) -> list[dict]:
    """Every demo rule's scan_run record repeated at its period over the 6 hours before ``end``; a rule in
    ``stop`` has no run after its time."""
    stop = stop or {}
    out = []
    for row in demo["rows"]:
        rec = record(row)
        if rec["event"] != "scan_run":
            continue
        t = end - timedelta(hours=6)
        while t <= end:
            if t <= stop.get(rec["rule"], end):
                out += at([row], t)
            t += timedelta(seconds=rec["period_s"])
    return out


def _periods(demo: dict[str, Any]) -> dict[str, int]:
    runs = [record(r) for r in demo["rows"] if record(r)["event"] == "scan_run"]
    return {r["rule"]: r["period_s"] for r in runs}


def test_dead_man_fires_for_the_rule_that_stopped_and_only_for_it(demo: dict[str, Any]) -> None:
    end = datetime(2026, 12, 2, 12, tzinfo=UTC)
    periods = _periods(demo)
    rows = _history(demo, end, stop={RULE: end - timedelta(seconds=4 * periods[RULE])})
    assert [r["rule"] for r in _fired("dead-man", end, rows)] == [RULE]
    # two periods without a run is within the threshold of three
    rows = _history(demo, end, stop={RULE: end - timedelta(seconds=2 * periods[RULE])})
    assert _fired("dead-man", end, rows) == []


def test_dead_man_fires_when_the_whole_app_stopped(demo: dict[str, Any]) -> None:
    end = datetime(2026, 12, 2, 12, tzinfo=UTC)
    rows = _history(demo, end - timedelta(hours=5))
    assert {r["rule"] for r in _fired("dead-man", end, rows)} == set(_periods(demo))


def test_dead_man_ignores_a_rule_disabled_since_the_last_start(demo: dict[str, Any], tmp_path: Path) -> None:
    end = datetime(2026, 12, 2, 12, tzinfo=UTC)
    periods = _periods(demo)
    stopped = end - timedelta(seconds=4 * periods[RULE])
    rows = _history(demo, end, stop={RULE: stopped})

    class Config:   # what app.bootstrap.load returns, with RULE no longer scheduled
        catalog = load_catalog()
        timers = [type("T", (), {"slug": s})() for s in periods if s != RULE]

    start = at(_made(tmp_path, lambda: telemetry.startup(lambda: Config())()), stopped + timedelta(minutes=1))
    assert _fired("dead-man", end, rows + start) == []
    # ...but a start-up that still schedules it keeps it watched
    Config.timers = [type("T", (), {"slug": s})() for s in periods]
    start = at(_made(tmp_path, lambda: telemetry.startup(lambda: Config())()), stopped + timedelta(minutes=1))
    assert [r["rule"] for r in _fired("dead-man", end, rows + start)] == [RULE]


# start-up ------------------------------------------------------------------------------------------

def test_startup_failure_fires_on_the_apps_record(tmp_path: Path, demo: dict[str, Any]) -> None:
    def failing() -> None:
        raise ConfigError("tenant config: unknown rule")

    def start() -> None:
        with pytest.raises(ConfigError):
            telemetry.startup(failing)()

    rows = _made(tmp_path, start)
    fired = _fired("startup-failure", _now(rows), demo["rows"] + rows)
    assert [(r["what"], r["failures"]) for r in fired] == [("start-up failed: config", 1)]


def test_startup_failure_fires_on_the_hosts_indexing_error(demo: dict[str, Any]) -> None:
    # The host's words when the Python worker cannot index function_app.py (azure-functions-host,
    # GrpcWorkerChannel: "Worker failed to index functions").
    row = {**demo["rows"][0], "message": "Worker failed to index functions", "severityLevel": 3}
    assert _fired("startup-failure", _now([row]), [row])
    assert _fired("startup-failure", _now([row]) + timedelta(hours=2), [row]) == []   # outside the hour


# backend errors ------------------------------------------------------------------------------------

def _spaced(rows: list[dict[str, Any]], end: datetime, step: timedelta) -> list[dict[str, Any]]:
    return [r for i, row in enumerate(rows) for r in at([row], end - step * (len(rows) - i))]


@pytest.mark.parametrize(("error", "cls"), [("defender: HTTP 429 TooManyRequests", "quota"),
                                            ("defender: HTTP 403 Forbidden", "permission")])
def test_backend_errors_fire_on_three_failed_runs_in_a_row(error: str, cls: str, tmp_path: Path) -> None:
    end = datetime(2026, 12, 2, 12, tzinfo=UTC)
    step = timedelta(minutes=5)
    ok, bad = _made(tmp_path, _scan()), _made(tmp_path, _scan(error))
    rows = _spaced(ok + bad * 3, end, step)
    assert [(r["rule"], r["error_class"], r["failed_runs"]) for r in _fired("backend-errors", end, rows)] == [
        (RULE, cls, 3)]
    assert _fired("backend-errors", end, _spaced(ok + bad * 2, end, step)) == []          # two: not yet
    assert _fired("backend-errors", end, _spaced(bad * 2 + ok + bad, end, step)) == []    # a good run between


# poison --------------------------------------------------------------------------------------------

def _outcome(state: str, **kw: Any) -> Outcome:
    return Outcome(request_id="b" * 32, rule=RULE, action="move_to_junk",
                   target={"network_message_id": "n", "recipient": "jobs@contoso.com"}, mode="auto",
                   state=state, **kw)


def test_poison_fires_on_a_poisoned_request(tmp_path: Path, demo: dict[str, Any]) -> None:
    body = {"run": {"id": "r"}, "detected_at": "2026-12-02T10:00:00Z"}
    rows = _made(tmp_path, lambda: telemetry.outcomes(body, [_outcome("failed", error="x")], event="poison"))
    fired = _fired("poison", _now(rows), demo["rows"] + rows)
    assert [(r["rule"], r["messages"]) for r in fired] == [(RULE, 1)]


def test_poison_fires_when_the_poison_function_fails(demo: dict[str, Any]) -> None:
    now = _now(demo["rows"])
    failed = {"timestamp": (now - timedelta(minutes=5)).isoformat(), "name": "poison",
              "operation_Name": "poison", "success": "False", "resultCode": "0"}
    assert len(_fired("poison", now, demo["rows"], [failed])) == 1
    assert _fired("poison", now, demo["rows"], [{**failed, "success": "True"}]) == []


# push path rejected --------------------------------------------------------------------------------

def _push_poisoned(body: bytes, deliveries: int = 1) -> Callable[[], Any]:
    """What push_poison records for a message it takes off the push poison queue (it reads no runtime)."""
    import asyncio

    from azure.functions.queue import QueueMessage

    from app import push_worker

    msg = QueueMessage(id="m", body=body, dequeue_count=deliveries)
    no_table = SimpleNamespace(config=SimpleNamespace(push=None))   # nothing to keep the body in here
    return lambda: asyncio.run(push_worker.on_push_poison(no_table, msg))   # type: ignore[arg-type]


_VALID_PUSH = json.dumps({
    "schema": "push-notification/1", "kind": "lifecycle",
    "subscription_id": "7d1c0a1e-1111-4222-8333-000000000001", "lifecycle_event": "missed",
    "tenant_id": "00000000-0000-0000-0000-00000000abcd",
    "received_at": "2026-12-02T04:00:00Z"}).encode()


@pytest.mark.parametrize(("body", "what"), [(b'{"schema":"push-notification/1","kind":"delete"}', "invalid"),
                                            (_VALID_PUSH, "poison")])
def test_push_rejected_fires_on_a_message_push_poison_took(body: bytes, what: str, tmp_path: Path,
                                                           demo: dict[str, Any]) -> None:
    rows = _made(tmp_path, _push_poisoned(body, 5 if what == "poison" else 1))
    assert [(record(r)["event"], record(r)["state"]) for r in rows] == [("push", what)]
    fired = _fired("push-rejected", _now(rows), demo["rows"] + rows)
    assert [(r["what"], r["events"]) for r in fired] == [(what, 1)]
    # Many messages are one alert row (one notification), not one per message.
    many = _fired("push-rejected", _now(rows), demo["rows"] + rows * 40)
    assert [(r["what"], r["events"]) for r in many] == [(what, 40)]
    # An hour later (the lookback) it is quiet again: the alert resolves itself.
    assert _fired("push-rejected", _now(rows) + timedelta(hours=1), demo["rows"] + rows) == []


def test_push_rejected_fires_on_forged_notifications_from_the_threshold(tmp_path: Path,
                                                                        demo: dict[str, Any]) -> None:
    from app import push_worker

    rows = _made(tmp_path, lambda: push_worker._record(None, "forged", delivery=1))
    assert [record(r)["state"] for r in rows] == ["forged"]
    now = _now(rows)
    # Four: a removed subscription's stragglers, as likely as forgery; five: someone should look.
    assert _fired("push-rejected", now, demo["rows"] + rows * 4) == []
    assert [(r["what"], r["events"]) for r in _fired("push-rejected", now, demo["rows"] + rows * 5)] == [
        ("forged", 5)]


def test_push_rejected_fires_when_the_subscription_timer_fails_for_a_mailbox(tmp_path: Path,
                                                                           demo: dict[str, Any]) -> None:
    from push.subscriptions import ReconcileSummary

    ok = _made(tmp_path, lambda: telemetry.push_subscriptions(ReconcileSummary(unchanged=6), None))
    assert _fired("push-rejected", _now(ok), demo["rows"] + ok) == []
    failed = ReconcileSummary(unchanged=4, failed=[("sales@contoso.com/inbox", "HTTP 403 Forbidden")])
    bad = _made(tmp_path, lambda: telemetry.push_subscriptions(failed, None))
    fired = _fired("push-rejected", _now(bad), demo["rows"] + ok + bad)
    assert [(r["what"], r["events"]) for r in fired] == [("subscriptions: permission", 1)]
    config = _made(tmp_path, lambda: telemetry.push_subscriptions(None, None, cls="config"))
    assert [r["what"] for r in _fired("push-rejected", _now(config), config)] == ["subscriptions: config"]


@pytest.mark.parametrize("function", ["push_poison", "push_subscriptions"])
def test_push_rejected_fires_when_a_push_function_fails(function: str, demo: dict[str, Any]) -> None:
    now = _now(demo["rows"])
    failed = {"timestamp": (now - timedelta(minutes=5)).isoformat(), "name": function,
              "operation_Name": function, "success": "False", "resultCode": "0"}
    assert [r["what"] for r in _fired("push-rejected", now, demo["rows"], [failed])] == [
        f"{function} function failing"]
    assert _fired("push-rejected", now, demo["rows"], [{**failed, "success": "True"}]) == []
    assert _fired("push-rejected", now, demo["rows"], [{**failed, "operation_Name": "push_worker"}]) == []


# held too long -------------------------------------------------------------------------------------

def test_held_fires_for_each_request_still_held_after_four_hours(demo: dict[str, Any],
                                                                  tmp_path: Path) -> None:
    held = {record(r)["request_id"] for r in demo["rows"] if record(r)["state"] == "held"}
    assert held, "the demo holds connector and account actions for approval"
    later = _now(demo["rows"]) + timedelta(hours=4, minutes=5)
    assert {r["request_id"] for r in _fired("held-too-long", later, demo["rows"])} == held
    # one of them approved since: no longer waiting
    approved = sorted(held)[0]
    decided = Outcome(request_id=approved, rule=RULE, action="disable_connector", target={}, mode="approval",
                      state="approved")
    rows = at(_made(tmp_path, lambda: telemetry.outcomes(None, [decided])), later - timedelta(hours=1))
    assert {r["request_id"] for r in _fired("held-too-long", later, demo["rows"] + rows)} == held - {approved}


# Teams webhook -------------------------------------------------------------------------------------

def test_webhook_fires_on_an_undelivered_card(tmp_path: Path, demo: dict[str, Any]) -> None:
    rows = _made(tmp_path, lambda: telemetry.notify_failed(f"{RULE} outcome"))
    assert _fired("webhook-failing", _now(rows), demo["rows"] + rows)[0]["failures"] == 1


def test_webhook_fires_on_the_notifiers_own_line(demo: dict[str, Any]) -> None:
    import logging

    # notifications/teams.py's words when a worker card fails (the app's own record covers the run cards)
    line = logging.LogRecord("notifications.teams", logging.ERROR, __file__, 1,
                             "Teams card (%s) not delivered after %d attempt(s): %s",
                             ("failure", 3, "HTTP 404"), None)
    row = traces_row(line)
    assert _fired("webhook-failing", _now([row]), demo["rows"] + [row])


# workbook ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(set(workbook_queries()) - {"failures-by-class"}))
def test_every_workbook_query_shows_the_demo_records(name: str, demo: dict[str, Any]) -> None:
    assert run(workbook_queries()[name], _now(demo["rows"]), demo["rows"]), f"{name}: nothing to show"


def test_failures_by_class_is_empty_for_the_healthy_demo_and_counts_a_failure(demo: dict[str, Any],
                                                                               tmp_path: Path) -> None:
    query = workbook_queries()["failures-by-class"]
    assert run(query, _now(demo["rows"]), demo["rows"]) == []
    rows = demo["rows"] + _made(tmp_path, _scan("defender: HTTP 429 TooManyRequests"))
    assert [(r["event"], r["error_class"], r["failures"]) for r in run(query, _now(rows), rows)] == [
        ("scan_run", "quota", 1)]


def test_detection_to_done_takes_the_detection_time_from_the_workers_record(tmp_path: Path) -> None:
    # The worker's record carries detected_at (through detect_to_state_s); verify's later "confirmed" record
    # has no request at hand and carries none.
    t0 = datetime(2026, 12, 2, 10, tzinfo=UTC)
    body = {"run": {"id": "r"}, "detected_at": t0.isoformat()}
    submitted = _made(tmp_path, lambda: telemetry.outcomes(body, [_outcome("submitted")],
                                                           now=t0 + timedelta(minutes=2)))
    confirmed = _made(tmp_path, lambda: telemetry.outcomes(None, [_outcome("confirmed")]))
    rows = at(submitted, t0 + timedelta(minutes=2)) + at(confirmed, t0 + timedelta(minutes=9))
    (row,) = run(workbook_queries()["detection-to-done"], t0 + timedelta(hours=1), rows)
    assert (row["action"], row["requests"], row["max_minutes"]) == ("move_to_junk", 1, 9.0)
