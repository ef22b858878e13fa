"""The function app writes its telemetry records: timer, worker, poison and card failures, through the real
functions (Azurite ledger, loopback fake Graph; fixtures of tests/functions), and the alerts fire on them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from app.schedules import function_name
from devtools.fakegraph import FakeGraph, GraphFault
from devtools.telemetry_file import read_rows, telemetry_to_file
from tests.functions.conftest import PROTECTED, RULE, Out, SpyBackend, fa, inbox_row, make_env, tenant_file
from tests.telemetry.monitoring import alert_queries, record, run, stamp_of

__all__ = ["fa", "make_env", "tenant_file"]   # fixtures shared with tests/functions
TIMER = function_name(RULE)


@pytest.fixture
def fake() -> Iterator[FakeGraph]:
    with FakeGraph() as graph:
        yield graph


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Path]:
    with telemetry_to_file(tmp_path / "telemetry.jsonl") as sink:
        yield sink.path


def _records(path: Path, event: str | None = None) -> list[dict[str, Any]]:
    return [r for r in map(record, read_rows(path)) if event is None or r["event"] == event]


def _timer(env: Any) -> list[str]:
    out = Out()
    env.call(TIMER, TimerRequest(past_due=False), out)
    return list(out.value)


def test_timer_and_worker_write_one_record_each(make_env: Any, fake: FakeGraph, records: Path) -> None:
    env = make_env(backend=SpyBackend([inbox_row(f"m{i}", PROTECTED[i]) for i in range(2)]),
                   graph_base_url=fake.base_url)
    bodies = _timer(env)
    (scan,) = _records(records, "scan_run")
    assert (scan["rule"], scan["state"], scan["trigger"], scan["error_class"]) == (RULE, "ok", "timer", None)
    assert scan["counts"] == {"rows": 2, "requests": 2, "queued": 2, "settled": 0, "in_flight": 0}
    for body in bodies:
        env.call("worker", QueueMessage(id="m", body=body.encode(), dequeue_count=1))
    outcomes = _records(records, "request")
    assert sorted(r["request_id"] for r in outcomes) == sorted(json.loads(b)["id"] for b in bodies)
    assert {(r["state"], r["run_id"], r["action"]) for r in outcomes} == {("submitted", scan["run_id"],
                                                                          "move_to_junk")}
    assert {r["mailbox"] for r in outcomes} == set(PROTECTED[:2])
    assert all(r["detect_to_state_s"] is not None for r in outcomes)


def test_poison_writes_a_poison_record_and_the_alert_fires(make_env: Any, fake: FakeGraph,
                                                           records: Path) -> None:
    env = make_env(backend=SpyBackend([inbox_row("m0", PROTECTED[0])]), graph_base_url=fake.base_url)
    (body,) = _timer(env)
    env.call("poison", QueueMessage(id="p", body=body.encode(), dequeue_count=5))
    (rec,) = _records(records, "poison")
    assert (rec["state"], rec["error_class"], rec["rule"]) == ("failed", "poison", RULE)
    rows = read_rows(records)
    assert run(alert_queries()["poison"], max(map(stamp_of, rows)) + timedelta(minutes=1), rows)


class BrokenNotifier:
    async def send(self, card: dict[str, Any]) -> bool:
        raise RuntimeError("webhook down")


def test_an_undelivered_card_writes_a_record_and_the_alert_fires(make_env: Any, records: Path) -> None:
    env = make_env(backend=SpyBackend([inbox_row("m0", PROTECTED[0])]), notifier=BrokenNotifier())
    _timer(env)
    (rec,) = _records(records, "notify_failed")
    assert (rec["rule"], rec["trigger"], rec["error_class"]) == (RULE, "scan", "webhook")
    rows = read_rows(records)
    assert run(alert_queries()["webhook-failing"], max(map(stamp_of, rows)) + timedelta(minutes=1), rows)


def test_three_throttled_runs_fire_the_backend_errors_alert(make_env: Any, records: Path) -> None:
    def throttled(query: str, timespan: str | None) -> Any:
        raise GraphFault(429, "Query execution has exceeded the allowed limits (CPU)", retry_after=120)

    with FakeGraph(hunting=throttled) as graph:
        env = make_env(backend="real", graph_base_url=graph.base_url)
        _timer(env)
        _timer(env)
    rows = read_rows(records)
    assert [(r["state"], r["error_class"]) for r in map(record, rows)] == [("error", "quota")] * 2
    now = max(map(stamp_of, rows)) + timedelta(minutes=1)
    assert run(alert_queries()["backend-errors"], now, rows) == []      # two in a row: not yet
    third = {**rows[-1], "timestamp": (now - timedelta(seconds=30)).isoformat()}
    (fired,) = run(alert_queries()["backend-errors"], now, [*rows, third])
    assert (fired["rule"], fired["error_class"], fired["failed_runs"]) == (RULE, "quota", 3)


def test_approval_and_expiry_write_records_so_a_decided_request_no_longer_waits(make_env: Any,
                                                                               records: Path) -> None:
    from tests.functions.conftest import NOW
    from tests.functions.test_decide_health_http import decide, held_request

    env = make_env()
    approved, expiring = held_request(env, "held-a"), held_request(env, "held-b")
    held = {r["request_id"] for r in _records(records, "request") if r["state"] == "held"}
    assert held == {approved, expiring}
    decide(env, "reject", approved, {"by": "oncall@contoso.com"})
    env.clock.now = NOW + timedelta(days=7, minutes=1)
    env.call("verify", TimerRequest())
    states = {r["request_id"]: r["state"] for r in _records(records, "request")}
    assert states == {approved: "rejected", expiring: "expired"}
    # Four hours after being held, only a request still waiting fires the alert: none here.
    rows = read_rows(records)
    assert run(alert_queries()["held-too-long"], max(map(stamp_of, rows)) + timedelta(hours=5), rows) == []
