"""POST /api/scan: every input error is a 400 naming the field, and no query runs; the quota guard."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from app.runtime import Runtime
from detections.catalog import load_catalog
from tests.functions.conftest import PROTECTED, RULE, Env, Out, SpyBackend, http, inbox_row

URL = "http://localhost/api/scan"


def post(env: Env, body: Any, **kw: Any) -> tuple[int, dict[str, Any], Out, Any]:
    out = Out()
    resp = env.call("scan", http("POST", URL, body, **kw), out)
    return resp.status_code, json.loads(resp.get_body()), out, resp


BAD = [
    ({"rule": [RULE]}, "rule", "unknown key"),
    ({"rules": [RULE], "extra": 1}, "extra", "unknown key"),
    ({"rules": RULE}, "rules", "is not of type 'array'"),
    ({"rules": []}, "rules", "should be non-empty"),
    ({"rules": ["no-such-rule"]}, "rules[0]", "unknown rule"),
    ({"rules": [RULE, "nope-2"]}, "rules[1]", "unknown rule"),
    ({"rules": [RULE, RULE]}, "rules", "non-unique"),
    ({"rules": [7]}, "rules[0]", "is not of type 'string'"),
    ({"rules": ["Bad Slug"]}, "rules[0]", "does not match"),
    ({"lookback": "PT721H"}, "lookback", "at most P30D"),
    ({"lookback": "P31D"}, "lookback", "at most P30D"),
    ({"lookback": "two hours"}, "lookback", "expected a timespan"),
    ({"lookback": "-PT1H"}, "lookback", "expected a timespan"),
    ({"lookback": 7200}, "lookback", "is not of type 'string'"),
    ({"dry_run": "yes"}, "dry_run", "is not of type 'boolean'"),
    ({"params": []}, "params", "is not of type 'object'"),
    ({"params": {"nosuch": 1}}, "params.nosuch", "no selected rule declares"),
    ({"rules": [RULE], "params": {"threshold": "3"}}, "params.threshold", "declares it as int"),
    ({"rules": [RULE], "params": {"threshold": 2.5}}, "params.threshold", "declares it as int"),
    ({"rules": [RULE], "params": {"threshold": True}}, "params.threshold", "declares it as int"),
    ({"rules": [RULE], "params": {"threshold": -1}}, "params.threshold", "at least 0"),
    ({"rules": [RULE], "params": {"sender_domains": "gmail.com"}}, "params.sender_domains",
     "declares it as string_list"),
    ({"rules": [RULE], "params": {"sender_domains": ["gmail.com", 3]}}, "params.sender_domains",
     "declares it as string_list"),
    ({"rules": [RULE], "params": {"protected_recipients": ["a@contoso.com\x01"]}},
     "params.protected_recipients", "control character"),
    ({"rules": [RULE], "params": {"window": "forever"}}, "params.window", "expected a timespan"),
    ({"rules": [RULE], "params": {"window": "P40D"}}, "params.window", "at most P30D"),
    ({"rules": [RULE], "lookback": "PT2H", "params": {"window": "PT2H"}}, "params.window", "lookback once"),
    ({"params": {"Bad-Name": 1}}, "params.Bad-Name", "not a valid parameter name"),
    ([RULE], "body", "must be a JSON object"),
]


@pytest.mark.parametrize(("body", "field", "message"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_body_is_a_400_naming_the_field_and_runs_no_query(env: Env, body: Any, field: str,
                                                              message: str) -> None:
    status, doc, out, _ = post(env, body)
    assert status == 400, doc
    assert doc["field"] == field
    assert message in doc["message"]
    assert env.backend.queries == []
    assert out.value is None


def test_malformed_json_and_unknown_query_parameter_are_400s(env: Env) -> None:
    status, doc, _, _ = post(env, b'{"rules": [')
    assert (status, doc["field"]) == (400, "body")
    assert "not valid JSON" in doc["message"]
    status, doc, _, _ = post(env, {}, params={"rules": RULE})
    assert (status, doc["field"]) == (400, "query.rules")
    status, doc, _, _ = post(env, b"x" * (64 * 1024 + 1))
    assert (status, doc["field"]) == (400, "body")
    assert env.backend.queries == []


def test_injection_attempt_in_a_string_list_stays_a_literal(make_env: Any) -> None:
    env = make_env(backend=SpyBackend())
    evil = 'x@contoso.com"]) | take 1000 //'
    body = {"rules": [RULE], "params": {"protected_recipients": [evil]}, "dry_run": True}
    status, doc, _, _ = post(env, body)
    assert status == 200, doc
    (query, _), = env.backend.queries
    lines = [ln for ln in query.splitlines() if ln.startswith("let protected_recipients")]
    assert lines == ['let protected_recipients = dynamic(["x@contoso.com\\"]) | take 1000 //"]);'], lines


def test_scan_runs_now_queues_new_requests_and_summarises(make_env: Any) -> None:
    rows = [inbox_row("m1", PROTECTED[0]), inbox_row("m2", PROTECTED[1]), inbox_row("m3", PROTECTED[2])]
    env = make_env(backend=SpyBackend(rows))
    status, doc, out, _ = post(env, {"rules": [RULE], "lookback": "PT2H", "params": {"threshold": 1}})
    assert status == 200, doc
    (query, span), = env.backend.queries
    assert span == timedelta(hours=2)
    assert "let threshold = 1;" in query and "let window = 2h;" in query
    assert doc["queued"] == 3 and doc["lookback"] == "PT2H"
    (summary,) = doc["rules"]
    assert summary | {"problems": []} == {"rule": RULE, "rows": 3, "requests": 3, "queued": 3,
                                          "already_handled": 0, "in_flight": 0, "partial": False,
                                          "error": None, "problems": []}
    messages = [json.loads(m) for m in out.value]
    assert sorted(m["target"]["network_message_id"] for m in messages) == ["m1", "m2", "m3"]
    assert {m["run"]["total"] for m in messages} == {3}
    ledger = env.rt.ledger()
    assert {ledger.read(RULE, m["id"]).state for m in messages} == {"received"}
    # The same scan again: everything is in flight already, nothing is queued twice.
    status, doc, out, _ = post(env, {"rules": [RULE], "lookback": "PT2H", "params": {"threshold": 1}})
    assert (status, doc["queued"], doc["rules"][0]["in_flight"], out.value) == (200, 0, 3, [])
    # The timer's card went out once, for the first run.
    assert [c["body"][0]["id"] for c in env.notifier.cards] == ["xdr-scan"]


def test_dry_run_records_and_queues_nothing(make_env: Any) -> None:
    env = make_env(backend=SpyBackend([inbox_row("m1", PROTECTED[0])]))
    status, doc, out, _ = post(env, {"rules": [RULE], "params": {"threshold": 0}, "dry_run": True})
    assert status == 200, doc
    assert out.value == [] and doc["queued"] == 0 and doc["dry_run"] is True
    (would,) = doc["rules"][0]["would_queue"]
    assert would["target"]["network_message_id"] == "m1"
    assert env.rt.ledger().read(RULE, would["id"]) is None
    assert env.notifier.cards == []


def test_empty_body_runs_every_enabled_rule(make_env: Any) -> None:
    env = make_env()
    status, doc, _, _ = post(env, b"")
    assert status == 200, doc
    assert [r["rule"] for r in doc["rules"]] == list(load_catalog())
    assert len(env.backend.queries) == len(load_catalog())


def test_backend_error_is_reported_per_rule(make_env: Any) -> None:
    from detections.backends.base import BackendError

    env = make_env(backend=SpyBackend(error=BackendError("HTTP 429: too many requests", transient=True,
                                                         retry_after=30)))
    status, doc, out, _ = post(env, {"rules": [RULE]})
    assert status == 200
    assert "429" in doc["rules"][0]["error"] and doc["queued"] == 0 and out.value == []
    (card,) = env.notifier.cards
    assert card["body"][0]["id"] == "xdr-failure"


def test_rescans_faster_than_the_rate_get_429_with_retry_after(make_env: Any) -> None:
    env = make_env(scan_rate_per_hour=2)
    for _ in range(2):
        assert post(env, {"rules": [RULE], "dry_run": True})[0] == 200
    status, doc, out, resp = post(env, {"rules": [RULE], "dry_run": True})
    assert status == 429
    assert 1 <= int(resp.headers["Retry-After"]) <= 3600
    assert doc["retry_after"] == int(resp.headers["Retry-After"])
    assert len(env.backend.queries) == 2 and out.value is None
    # The state is in Table storage: another instance (another Runtime) sees the same spent quota.
    other = Runtime(env.rt.config, clock=env.rt.clock, notifier=env.notifier)
    assert other.quota().acquire() == 3600
    # A rejected (400) request does not use up quota and is still a 400 when the quota is spent.
    assert post(env, {"rules": ["nope"]})[0] == 400


def test_a_rule_the_tenant_disabled_is_refused_when_named(make_env: Any, fa: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 13: an explicit rule list does not run a disabled rule (400 naming it, no query run)
    import dataclasses

    from core.tenant import TenantConfig
    config = fa.runtime.config
    disabled = config.tenant.merged(TenantConfig.from_mapping({"rules": {RULE: {"enabled": False}}},
                                                              source="test"))
    monkeypatch.setattr(fa.runtime, "config", dataclasses.replace(config, tenant=disabled))
    env = make_env(backend=SpyBackend([inbox_row("m1", PROTECTED[0])]))
    status, doc, out, _ = post(env, {"rules": [RULE], "params": {"threshold": 0}})
    assert (status, doc["field"]) == (400, "rules[0]") and "disabled" in doc["message"]
    assert env.backend.queries == [] and out.value is None
