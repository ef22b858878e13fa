"""Parameters: types, timespans, precedence, and that no value can change a query's structure."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.settings import ConfigError
from core.tenant import DEFAULT_TENANT_CONFIG, TenantConfig, load_tenant_config
from detections.backends.local import LocalBackend
from detections.catalog import load_catalog
from detections.kqlcheck import check_queries
from detections.params import (
    ParamError,
    bind_query,
    check_param_names,
    coerce,
    iso_timespan,
    kql_string,
    kql_timespan,
    parse_timespan,
    resolve_params,
)
from tests.detections.helpers import MODEL

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def rule():
    return load_catalog()[MODEL]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("7d", timedelta(days=7)),
        ("10s", timedelta(seconds=10)),
        ("2000ms", timedelta(seconds=2)),
        ("PT2H", timedelta(hours=2)),
        ("P1DT30M", timedelta(days=1, minutes=30)),
        ("PT1.000S", timedelta(seconds=1)),
        ("pt15m", timedelta(minutes=15)),
    ],
)
def test_timespans_in_kql_and_iso_style(text: str, expected: timedelta) -> None:
    assert parse_timespan(text) == expected


@pytest.mark.parametrize("text", ["", "1", "h", "1w", "-1h", "0m", "PT", "P", "1.5h", "PT1H30", "1h;", "P1Y",
                                  "1500ms", "250ms", "PT1.5S", "PT0.001S"])
def test_bad_timespans_are_refused(text: str) -> None:
    # Sub-second spans too: the backends send whole seconds (Graph's Timespan), so they are refused here.
    with pytest.raises(ValueError, match="timespan"):
        parse_timespan(text)


@pytest.mark.parametrize(
    ("span", "literal", "iso"),
    [
        (timedelta(hours=1), "1h", "PT1H"),
        (timedelta(minutes=90), "90m", "PT1H30M"),
        (timedelta(days=7), "7d", "P7D"),
        (timedelta(seconds=10), "10s", "PT10S"),
        (timedelta(milliseconds=1500), "1500ms", "PT1.500S"),
        (timedelta(days=1, hours=2), "26h", "P1DT2H"),
    ],
)
def test_timespan_literals(span: timedelta, literal: str, iso: str) -> None:
    assert kql_timespan(span) == literal
    assert iso_timespan(span) == iso
    if span % timedelta(seconds=1):
        return   # rendered exactly, but never accepted as a parameter (whole seconds only)
    assert parse_timespan(literal) == span
    assert parse_timespan(iso) == span


def test_timespan_literal_means_the_same_on_the_engine() -> None:
    backend = LocalBackend(None, NOW)
    for span in (timedelta(minutes=90), timedelta(milliseconds=1500), timedelta(days=3)):
        q = f"print s = tolong({kql_timespan(span)} / 1ms)"
        rows = asyncio.run(backend.run(q, timespan=timedelta(hours=1))).rows
        assert rows == [{"s": span // timedelta(milliseconds=1)}]


@pytest.mark.parametrize(
    ("ptype", "raw", "expected"),
    [
        ("int", "5", 5),
        ("int", 7, 7),
        ("bool", "true", True),
        ("bool", False, False),
        ("string", "x", "x"),
        ("string_list", "a@x.com, b@x.com", ["a@x.com", "b@x.com"]),
        ("string_list", ["a"], ["a"]),
        ("string_list", "", []),
        ("timespan", "PT2H", timedelta(hours=2)),
    ],
)
def test_coerce_accepts(ptype: str, raw: object, expected: object) -> None:
    assert coerce(ptype, raw) == expected


@pytest.mark.parametrize(
    ("ptype", "raw"),
    [
        ("int", "5x"),
        ("int", True),
        ("int", 1.5),
        ("bool", "maybe"),
        ("string", 5),
        ("string_list", "a,,b"),
        ("string_list", [1]),
        ("string_list", {"a": 1}),
        ("timespan", 5),
        ("string", "a\x00b"),
    ],
)
def test_coerce_refuses(ptype: str, raw: object) -> None:
    with pytest.raises(ValueError):
        coerce(ptype, raw)


def test_int_minimum() -> None:
    with pytest.raises(ValueError, match="at least 0"):
        coerce("int", -1, minimum=0)


def test_precedence_default_then_tenant_then_rule_section_then_override(rule) -> None:
    base = {"protected_recipients": ["a@contoso.com"]}
    assert resolve_params(rule, TenantConfig(), base)["threshold"] == 2
    tenant = TenantConfig.from_mapping({"params": {"threshold": 5}}, source="t")
    assert resolve_params(rule, tenant, base)["threshold"] == 5
    tenant = TenantConfig.from_mapping(
        {"params": {"threshold": 5}, "rules": {MODEL: {"params": {"threshold": 6}}}}, source="t"
    )
    assert resolve_params(rule, tenant, base)["threshold"] == 6
    assert resolve_params(rule, tenant, {**base, "threshold": "9"})["threshold"] == 9


def test_required_parameter_without_value_refuses(rule) -> None:
    with pytest.raises(ParamError, match=r"protected_recipients.*required") as exc:
        resolve_params(rule, TenantConfig(), {})
    assert exc.value.rule == MODEL
    with pytest.raises(ParamError, match="required"):
        resolve_params(rule, TenantConfig(), {"protected_recipients": ""})


def test_tenant_param_list_from_app_setting_style_string(rule) -> None:
    tenant = TenantConfig.from_mapping(
        {"params": {"protected_recipients": "a@contoso.com,b@contoso.com"}}, source="t"
    )
    assert resolve_params(rule, tenant, {})["protected_recipients"] == ["a@contoso.com", "b@contoso.com"]


def test_wrong_type_names_rule_parameter_and_source(rule) -> None:
    tenant = TenantConfig.from_mapping({"params": {"threshold": "lots"}}, source="t")
    with pytest.raises(ParamError) as exc:
        resolve_params(rule, tenant, {"protected_recipients": "a@x.com"})
    assert str(exc.value).startswith(f"rule {MODEL}: parameter threshold:")
    assert "tenant config params" in str(exc.value)


def test_unknown_names_are_errors(rule) -> None:
    with pytest.raises(ParamError, match="no selected rule declares"):
        check_param_names([rule], {"treshold": "3"})
    tenant = TenantConfig.from_mapping({"params": {"nonsense": 1}}, source="t")
    with pytest.raises(ParamError, match="no rule declares"):
        check_param_names([rule], {}, all_rules=[rule], tenant=tenant)
    tenant = TenantConfig.from_mapping({"rules": {MODEL: {"params": {"nonsense": 1}}}}, source="t")
    with pytest.raises(ParamError, match="declares no such parameter"):
        check_param_names([rule], {}, all_rules=[rule], tenant=tenant)
    with pytest.raises(ParamError, match="declares no such parameter"):
        resolve_params(rule, tenant, {"protected_recipients": "a@x.com"})
    tenant = TenantConfig.from_mapping({"rules": {"no-such-rule": {"mode": "auto"}}}, source="t")
    with pytest.raises(ParamError, match=r"tenant config rules\.no-such-rule: no such rule"):
        check_param_names([rule], {}, all_rules=[rule], tenant=tenant)


def test_bind_query_puts_one_let_per_parameter_before_the_query(rule) -> None:
    values = resolve_params(rule, TenantConfig(), {"protected_recipients": "a@contoso.com"})
    bound = bind_query(rule, values)
    lines = bound.splitlines()
    assert lines[:3] == ["let window = 2h;", "let correlation_window = 1h;", "let threshold = 2;"]
    assert lines[len(rule.parameters) - 1] == 'let protected_recipients = dynamic(["a@contoso.com"]);'
    assert bound.endswith(rule.query.strip())


HOSTILE = [
    'x" | take 0 //',
    "x' | where 1 == 0",
    'a\\" ; print "pwned',
    "line1\nEmailEvents | take 0",
    "// everything after is a comment",
    'tab\tand "quotes" and \\backslash\\ and \r return',
    "ünïcödé ✓ | ;",
    "unicode line\u2028separator\u0085next line",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_string_is_one_literal_on_the_engine(value: str) -> None:
    # Round trip through the real engine: the query prints exactly the value, as one row.
    backend = LocalBackend(None, NOW)
    q = f"let v = {kql_string(value)};\nprint v = v, n = 1"
    assert asyncio.run(backend.run(q, timespan=timedelta(hours=1))).rows == [{"v": value, "n": 1}]


@pytest.mark.node
def test_hostile_values_do_not_change_the_statement_structure(rule) -> None:
    clean = bind_query(rule, resolve_params(rule, TenantConfig(), {"protected_recipients": "a@contoso.com"}))
    hostile = [
        bind_query(
            rule,
            resolve_params(
                rule, TenantConfig(), {"protected_recipients": [v, "b@contoso.com"], "sender_domains": [v]}
            ),
        )
        for v in HOSTILE
    ]
    checks = check_queries([clean, *hostile, *(f"let v = {kql_string(v)};\nprint v" for v in HOSTILE)])
    shape = [(s["kind"], s.get("name"), s.get("value_kind")) for s in checks[0].statements]
    assert [name for _, name, _ in shape[: len(rule.parameters)]] == list(rule.parameters)
    assert shape[-1][0] == "ExpressionStatement"
    for check in checks[1 : 1 + len(HOSTILE)]:
        assert check.errors == []
        assert [(s["kind"], s.get("name"), s.get("value_kind")) for s in check.statements] == shape
        assert check.columns == checks[0].columns
    # Microsoft's parser decodes each literal back to exactly the value.
    for value, check in zip(HOSTILE, checks[1 + len(HOSTILE) :], strict=True):
        assert check.statements[0]["value"] == value
        assert len(check.statements) == 2


def test_hostile_value_cannot_widen_what_the_rule_matches(rule) -> None:
    # Three copies to protected mailboxes; a recipient value crafted to close the list and add
    # "or true" must match nothing, exactly like any other unknown address.
    rows = [
        {
            "Timestamp": f"now-{m}m",
            "NetworkMessageId": f"m{m}",
            "SenderMailFromAddress": "eve@gmail.com",
            "SenderMailFromDomain": "gmail.com",
            "RecipientEmailAddress": f"r{m}@contoso.com",
            "LatestDeliveryLocation": "Inbox/folder",
        }
        for m in (5, 6, 7)
    ]
    backend = LocalBackend.from_rows({"EmailEvents": rows}, NOW, source="test")
    evil = 'x"]) or true or RecipientEmailAddress in~ (dynamic(["'
    q = bind_query(rule, resolve_params(rule, TenantConfig(), {"protected_recipients": [evil]}))
    assert asyncio.run(backend.run(q, timespan=timedelta(hours=1))).rows == []
    good = bind_query(
        rule,
        resolve_params(
            rule, TenantConfig(), {"protected_recipients": "r5@contoso.com,r6@contoso.com,r7@contoso.com"}
        ),
    )
    assert len(asyncio.run(backend.run(good, timespan=timedelta(hours=1))).rows) == 3


def test_yaml_boolean_rule_key_is_explained(rule) -> None:
    tenant = TenantConfig.from_mapping({"rules": {False: {"mode": "auto"}}}, source="t")
    with pytest.raises(ParamError, match="YAML read this key as False: quote it"):
        check_param_names([rule], {}, all_rules=[rule], tenant=tenant)


def test_an_explicit_tenant_config_path_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "tennant.yaml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_tenant_config(missing)
    with pytest.raises(ConfigError, match=re.escape("no-such-dir/tenant.yaml")):
        load_tenant_config("no-such-dir/tenant.yaml")   # relative to the app root, not the default


def test_only_the_default_tenant_config_name_may_be_absent(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.setattr("core.settings.ROOT", tmp_path)   # an app root without tenant.yaml
    assert load_tenant_config(DEFAULT_TENANT_CONFIG) == TenantConfig()
    assert load_tenant_config(None) == TenantConfig()
    (tmp_path / "tenant.yaml").write_text("allowlist:\n  senders: [a@contoso.com]\n", encoding="utf-8")
    assert load_tenant_config(DEFAULT_TENANT_CONFIG).allow_senders == {"a@contoso.com"}
