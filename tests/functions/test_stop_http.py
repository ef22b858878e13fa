"""POST /api/stop and /api/stop/clear, and the stop on /api/health (issue 14, the emergency stop)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from core.request import make_request
from devtools.fakegraph import FakeGraph
from remediation.stop import read_stop
from tests.functions.conftest import NOW, PROTECTED, RULE, Env, http

pytestmark = pytest.mark.azurite


def stop(env: Env, name: str, body: Any = b"", **kw: Any) -> tuple[int, dict[str, Any]]:
    path = "stop" if name == "stop" else "stop/clear"
    resp = env.call(name, http("POST", f"http://localhost/api/{path}", body, **kw))
    return resp.status_code, json.loads(resp.get_body())


def health(env: Env) -> dict[str, Any]:
    return json.loads(env.call("health", http("GET", "http://localhost/api/health")).get_body())


@pytest.mark.parametrize(("name", "body", "params", "field"), [
    ("stop", b"", None, "reason"),                             # on needs a reason
    ("stop", {"reason": " "}, None, "reason"),
    ("stop", {"reason": 7}, None, "reason"),
    ("stop", {"reason": "x" * 501}, None, "reason"),
    ("stop", {"reason": "x", "on": False}, None, "on"),
    ("stop", {"reason": "x", "by": ""}, None, "by"),
    ("stop", {"reason": "x", "by": ["a"]}, None, "by"),
    ("stop", b"[1]", None, "body"),
    ("stop", b"{", None, "body"),
    ("stop", {"reason": "x"}, {"force": "1"}, "query.force"),
    ("stop_clear", {"reason": 3}, None, "reason"),
    ("stop_clear", {"force": True}, None, "force"),
])
def test_bad_input_is_a_400_naming_the_field(env: Env, name: str, body: Any, params: Any, field: str) -> None:
    status, doc = stop(env, name, body, params=params)
    assert (status, doc["field"]) == (400, field), doc
    assert read_stop(env.rt.ledger()).on is False


def test_stop_is_recorded_as_the_function_key_and_shown_by_health(env: Env) -> None:
    status, doc = stop(env, "stop", {"reason": "rule misfires", "by": "alice@contoso.com"})
    assert status == 200 and doc["emergency_stop"]["on"] is True
    state = read_stop(env.rt.ledger())
    assert (state.by, state.claimed_by, state.reason) == (
        "function-key", "alice@contoso.com", "rule misfires")
    # Anonymous health says on and since when, never who or why (an operator's name, free text).
    assert health(env)["emergency_stop"] == {"on": True, "at": state.at}
    status, doc = stop(env, "stop_clear", b"")
    assert status == 200 and doc["emergency_stop"]["on"] is False
    assert health(env)["emergency_stop"]["on"] is False


def test_an_auto_run_while_stopped_through_the_worker_function_calls_nothing(make_env: Any) -> None:
    with FakeGraph() as fake:
        env = make_env(graph_base_url=fake.base_url)
        env.rt.stop_switch().current()       # cached "off" before the flip: the flip must still count
        assert stop(env, "stop", {"reason": "incident"})[0] == 200
        req = make_request(rule=RULE, action="move_to_junk", mode="auto",
                           target={"network_message_id": "nm-1", "recipient": PROTECTED[0]},
                           evidence={"SenderMailFromAddress": "bad@gmail.com"}, detected_at=NOW,
                           run={"id": "run-1", "index": 0, "total": 1}, severity="Medium", rule_name="r")
        env.call("worker", QueueMessage(id="q", body=json.dumps(req).encode(), dequeue_count=1))
        row = env.rt.ledger().read(RULE, req["id"])
        assert (row.state, row.hold_reason) == ("held", "emergency_stop")
        assert fake.calls == [] and fake.remediations == []
        # The run's outcome card (an approval card: everything is held) says the stop is on, and why.
        (card,) = env.notifier.cards
        text = json.dumps(card)
        assert "EMERGENCY STOP is on" in text and "incident" in text
        assert "Held by the emergency stop" in text


def test_the_scan_card_shows_the_stop_only_while_it_is_on() -> None:
    from notifications.cards import scan_card
    from notifications.reports import RunReport

    report = RunReport(rule=RULE, rule_name="r", severity="Medium", rows=1)
    assert "EMERGENCY STOP" not in json.dumps(scan_card(report))
    report.emergency_stop = "EMERGENCY STOP is on (set by alice at 2026-11-20T12:00:00Z: misfire)"
    assert "EMERGENCY STOP is on (set by alice" in json.dumps(scan_card(report))
