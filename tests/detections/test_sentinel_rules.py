"""Rule files in and out of Sentinel: Sentinel's keys load, and `rules export` gives a query that runs alone.

Fixtures: three of Microsoft's own analytics rules from Azure/Azure-Sentinel (tests/fixtures/sentinel-rules,
sources in SOURCES.md there). Microsoft's KQL parser (detections/kqlcheck.py) judges every exported query.
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.tenant import TenantConfig
from detections.catalog import RULES_DIR, Rule, RuleError, load_catalog, load_rule
from detections.export import SENTINEL_KEY_ORDER, bound_query, sentinel_yaml
from detections.kqlcheck import check_queries, sample_values, table_schemas
from detections.params import bind_query, resolve_params
from detections.platforms import SENTINEL_EMAILEVENTS_VIEW, for_platform, reads_emailevents
from detections.scan import triggered
from responder.cli import main
from tests.detections.helpers import MODEL, write_rule

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sentinel-rules"
LATEST = ("LatestDeliveryLocation", "LatestDeliveryAction")


def _kql_type(t: str) -> str:
    return {"String": "string", "DateTime": "datetime", "Int": "int", "Real": "real", "Bool": "bool",
            "Dynamic": "dynamic"}[t]


def ti_table() -> list[list[str]]:
    ti = json.loads((FIXTURES / "ThreatIntelIndicators.json").read_text(encoding="utf-8"))
    return [[p["Name"], _kql_type(p["Type"])] for p in ti["Properties"]]


def sentinel_schema() -> dict[str, list[list[str]]]:
    tables = table_schemas("sentinel")
    tables["EmailEvents"] = [c for c in tables["EmailEvents"] if c[0] not in LATEST]
    tables["ThreatIntelIndicators"] = ti_table()
    return tables


# --- Microsoft's rules with only our extension block added -----------------------------------------

# What a SOC engineer adds to use each rule here: a window equal to its queryPeriod, and what to do
# with a row (tell on-call; these are threat-intelligence matches, not proof enough to act alone).
EXTENSIONS: dict[str, dict[str, Any]] = {
    "EmailEntity_EmailEvents_Updated.yaml": {
        "target": {"recipient": "RecipientEmailAddress"},
        "evidence": ["TI_EmailAddress", "SenderFromAddress"]},
    "EmailEntity_CloudAppEvents_Updated.yaml": {
        "target": {"user": "User_Id"}, "evidence": ["IndicatorId", "CloudAppEvents_TimeGenerated"]},
    "URLEntity_EmailUrlInfo_Updated.yaml": {
        "target": {"network_message_id": "NetworkMessageId", "recipient": "RecipientEmailAddress"},
        "evidence": ["Url", "IndicatorId"]},
}


def extension(target: dict[str, str], evidence: list[str], window: str = "14d") -> dict[str, Any]:
    return {"platform": "sentinel",
            "parameters": {"window": {"type": "timespan", "default": window, "description": "Lookback."}},
            "remediation": [{"action": "notify", "mode": "dry_run", "target": target, "evidence": evidence}],
            "max_targets": 50}


def with_extension(source_text: str, folder: Path, slug: str, ext: dict[str, Any]) -> Path:
    data = yaml.safe_load(source_text)
    assert "responder" not in data
    data["responder"] = ext
    path = folder / f"{slug}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def microsoft_rules(tmp_path_factory: pytest.TempPathFactory) -> list[Rule]:
    folder = tmp_path_factory.mktemp("microsoft-rules")
    rules = []
    for i, (name, ext) in enumerate(EXTENSIONS.items()):
        text = (FIXTURES / name).read_text(encoding="utf-8")
        rules.append(load_rule(with_extension(text, folder, f"microsoft-rule-{i}", extension(**ext))))
    return rules


def test_microsoft_rules_load_with_only_the_extension_block(microsoft_rules: list[Rule]) -> None:
    assert [r.name for r in microsoft_rules] == [
        "TI Map Email entity to EmailEvents", "TI map Email entity to Cloud App Events",
        "TI Map URL Entity to EmailUrlInfo"]
    for rule in microsoft_rules:
        assert rule.kind == "Scheduled"
        assert rule.query_frequency == timedelta(hours=1) and rule.query_period == timedelta(days=14)
        assert rule.raw["query"] == rule.query  # the query is Microsoft's, untouched


def test_microsoft_rules_bind_and_pass_microsofts_parser(microsoft_rules: list[Rule]) -> None:
    texts = [bound_query(r, resolve_params(r, TenantConfig(), {}), "sentinel") for r in microsoft_rules]
    checks = check_queries(texts, tables=sentinel_schema())
    for rule, text, check in zip(microsoft_rules, texts, checks, strict=True):
        assert text.startswith("let window = 14d;\n"), text[:80]
        assert check.errors == [], (rule.path, [str(d) for d in check.errors])
        have = {c for c, _ in check.columns or []}
        mapped = {m["columnName"] for e in rule.raw["entityMappings"] for m in e["fieldMappings"]}
        acted = {c for a in rule.actions for c in a.columns()}
        assert mapped | acted <= have


def test_microsoft_rules_export_as_sentinel_files_without_our_block(microsoft_rules: list[Rule]) -> None:
    for rule, name in zip(microsoft_rules, EXTENSIONS, strict=True):
        out = yaml.safe_load(sentinel_yaml(rule, resolve_params(rule, TenantConfig(), {})))
        original = yaml.safe_load((FIXTURES / name).read_text(encoding="utf-8"))
        assert set(out) == set(original)
        assert {k: v for k, v in out.items() if k != "query"} == {k: v for k, v in original.items()
                                                                   if k != "query"}
        assert out["query"] == "let window = 14d;\n" + original["query"]


def test_a_microsoft_rule_with_carried_keys_loads_and_exports_them(tmp_path: Path) -> None:
    name = "Power Apps - Multiple apps deleted.yaml"
    text = (FIXTURES / name).read_text(encoding="utf-8")
    ext = extension({"user": "ActorName"}, ["AppCount", "EnvCount"], window="7d")
    rule = load_rule(with_extension(text, tmp_path, "power-apps-deleted", ext))
    original = yaml.safe_load(text)
    for key in ("status", "eventGroupingSettings", "alertDetailsOverride", "customDetails"):
        assert rule.raw[key] == original[key]
    out = yaml.safe_load(sentinel_yaml(rule, resolve_params(rule, TenantConfig(), {})))
    assert {k: v for k, v in out.items() if k != "query"} == {k: v for k, v in original.items()
                                                               if k != "query"}
    assert list(out) == [k for k in SENTINEL_KEY_ORDER if k in original]


# --- every key of Sentinel's analytics-rule YAML --------------------------------------------------

SENTINEL_EXTRAS: dict[str, Any] = {
    "status": "Available",
    "subTechniques": ["T1566.002"],
    "tags": ["BEC", {"id": "x", "version": "1.0.0"}],
    "metadata": {"source": {"kind": "Community"}, "author": {"name": "SOC"}, "support": {"tier": "Community"},
                 "categories": {"domains": ["Security - Threat Protection"]}},
    "customDetails": {"Sender": "SenderMailFromAddress", "Copies": "TotalEmailCount"},
    "alertDetailsOverride": {"alertDisplayNameFormat": "Consumer sender {{SenderMailFromAddress}}",
                             "alertDescriptionFormat": "{{TotalEmailCount}} copies",
                             "alertTacticsColumnName": None, "alertSeverityColumnName": None},
    "eventGroupingSettings": {"aggregationKind": "AlertPerResult"},
    "incidentConfiguration": {"createIncident": True, "groupingConfiguration": {
        "enabled": True, "reopenClosedIncident": False, "lookbackDuration": "PT5H",
        "matchingMethod": "Selected", "groupByEntities": ["Mailbox"], "groupByAlertDetails": [],
        "groupByCustomDetails": ["Sender"]}},
    "suppressionDuration": "PT1H",
    "suppressionEnabled": False,
    "sentinelEntitiesMappings": None,
}


def test_every_sentinel_key_is_accepted_and_carried(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        data.update(copy.deepcopy(SENTINEL_EXTRAS))

    rule = load_rule(write_rule(tmp_path, "all-keys", edit))
    for key, value in SENTINEL_EXTRAS.items():
        assert rule.raw[key] == value
    exported = yaml.safe_load(sentinel_yaml(rule, sample_values(rule)))
    assert {k: exported[k] for k in SENTINEL_EXTRAS} == SENTINEL_EXTRAS


@pytest.mark.parametrize(
    ("edits", "expect"),
    [
        ({"tactics": ["Initial Access", "Command and Control", "defense evasion"]},
         ("InitialAccess", "CommandAndControl", "DefenseEvasion")),
        ({"tactics": ["InitialAccess", "Initial Access"]}, ("InitialAccess",)),
        ({"tactics": []}, ()),
    ],
)
def test_tactics_with_spaces_become_canonical(tmp_path: Path, edits: dict, expect: tuple) -> None:
    rule = load_rule(write_rule(tmp_path, "tactics", lambda d: d.update(edits)))
    assert rule.tactics == expect
    assert yaml.safe_load(sentinel_yaml(rule, sample_values(rule)))["tactics"] == list(expect)


def test_optional_sentinel_keys_may_be_left_out(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        for key in ("relevantTechniques", "tactics", "requiredDataConnectors", "version", "entityMappings"):
            del data[key]

    rule = load_rule(write_rule(tmp_path, "minimal", edit))
    assert rule.tactics == ()
    assert "relevantTechniques" not in yaml.safe_load(sentinel_yaml(rule, sample_values(rule)))


@pytest.mark.parametrize(
    ("frequency", "period", "window", "expect"),
    [
        ("PT5M", "PT1H", "1h", (timedelta(minutes=5), timedelta(hours=1))),
        ("PT1H", "P1D", "1d", (timedelta(hours=1), timedelta(days=1))),
        ("P1D", "P14D", "14d", (timedelta(days=1), timedelta(days=14))),
        ("PT1H30M", "PT2H", "PT2H", (timedelta(minutes=90), timedelta(hours=2))),
        ("15m", "1d", "24h", (timedelta(minutes=15), timedelta(days=1))),
    ],
)
def test_iso_durations_are_accepted_and_normalised(tmp_path: Path, frequency: str, period: str, window: str,
                                                   expect: tuple) -> None:
    def edit(data: dict) -> None:
        data.update(queryFrequency=frequency, queryPeriod=period)
        data["responder"]["parameters"]["window"]["default"] = window

    rule = load_rule(write_rule(tmp_path, "iso", edit))
    assert (rule.query_frequency, rule.query_period) == expect


def nrt(data: dict) -> None:
    for key in ("queryFrequency", "queryPeriod", "triggerOperator", "triggerThreshold"):
        del data[key]
    data["kind"] = "NRT"


def test_nrt_rules_run_every_five_minutes_over_their_window_and_any_row_triggers(tmp_path: Path) -> None:
    rule = load_rule(write_rule(tmp_path, "near-real-time", nrt))
    assert rule.kind == "NRT"
    assert rule.query_frequency == timedelta(minutes=5)
    assert rule.query_period == timedelta(hours=2)  # the window parameter's default
    assert "triggerOperator" not in rule.raw
    assert triggered(rule, 1) and not triggered(rule, 0)
    exported = yaml.safe_load(sentinel_yaml(rule, sample_values(rule)))
    assert exported["kind"] == "NRT" and "queryFrequency" not in exported and "queryPeriod" not in exported


def _error(tmp_path: Path, edit) -> RuleError:
    path = write_rule(tmp_path, "bad", edit)
    with pytest.raises(RuleError) as exc:
        load_rule(path)
    assert str(exc.value).startswith(f"{path}: {exc.value.field}: ")
    return exc.value


def _nrt_with(key: str, value: Any):
    def edit(data: dict) -> None:
        nrt(data)
        data[key] = value
    return edit


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (lambda d: d.update(colour="red"), "colour", "unknown key"),
        (lambda d: d.update(incidentconfiguration={}), "incidentconfiguration", "unknown key"),
        (lambda d: d.update(tactics=["Initial Acces"]), "tactics.0", "unknown tactic 'Initial Acces'"),
        (lambda d: d.update(kind="Fusion"), "kind", "is not one of"),
        (lambda d: d.update(queryFrequency="PT5"), "queryFrequency", "does not match"),
        (lambda d: d.update(queryFrequency="1m"), "queryFrequency", "Sentinel takes 5m to 14d, got 1m"),
        (lambda d: d.update(queryFrequency="3h"), "queryPeriod", "must be at least queryFrequency (3h)"),
        (lambda d: d.update(customDetails={"Sender": "not a column"}), "customDetails.Sender",
         "does not match"),
        (lambda d: d.update(eventGroupingSettings={"aggregationKind": "OneAlert"}),
         "eventGroupingSettings.aggregationKind", "is not one of"),
        (lambda d: d.update(suppressionEnabled="no"), "suppressionEnabled", "is not of type 'boolean'"),
        (lambda d: d.update(suppressionDuration="an hour"), "suppressionDuration", "does not match"),
        (lambda d: d.update(relevantTechniques=["Phishing"]), "relevantTechniques.0", "does not match"),
        (lambda d: d.pop("queryFrequency"), "(top level)", "'queryFrequency' is a required property"),
        (_nrt_with("queryFrequency", "5m"), "queryFrequency", "an NRT rule has no queryFrequency"),
        (_nrt_with("triggerThreshold", 0), "triggerThreshold", "an NRT rule has no triggerThreshold"),
    ],
)
def test_wrong_sentinel_keys_name_file_and_field(tmp_path: Path, edit, field: str, message: str) -> None:
    err = _error(tmp_path, edit)
    assert err.field == field
    assert message in err.message


# --- rules export -----------------------------------------------------------------------------------

def shipped_rules() -> list[Rule]:
    return list(load_catalog().values())


@pytest.mark.parametrize("platform", ["defender", "sentinel"])
def test_every_shipped_rule_exports_a_query_microsofts_parser_accepts(platform: str) -> None:
    rules = shipped_rules()
    texts = [bound_query(r, sample_values(r), platform) for r in rules]
    tables = sentinel_schema() if platform == "sentinel" else table_schemas("defender")
    for rule, check in zip(rules, check_queries(texts, tables=tables), strict=True):
        assert check.errors == [], (rule.slug, platform, [str(d) for d in check.errors])
        have = {c for c, _ in check.columns or []}
        assert {c for a in rule.actions for c in a.columns()} <= have, rule.slug


def test_the_defender_export_is_exactly_what_the_app_runs() -> None:
    for rule in shipped_rules():
        values = sample_values(rule)
        assert bound_query(rule, values, "defender") == bind_query(rule, values) + "\n"


def test_sentinel_gets_the_latest_row_view_only_where_emailevents_is_read() -> None:
    rules = {r.slug: r for r in shipped_rules()}
    mail = rules[MODEL]
    assert "LatestDeliveryLocation" in mail.query
    text = bound_query(mail, sample_values(mail), "sentinel")
    assert text.startswith(SENTINEL_EMAILEVENTS_VIEW + "\n")
    assert "arg_max(TimeGenerated, *)" in text and "by NetworkMessageId, RecipientEmailAddress" in text
    # Without the view Sentinel's EmailEvents has no Latest* columns: the parser refuses the plain form.
    plain = check_queries([bind_query(mail, sample_values(mail))], tables=sentinel_schema())[0]
    assert any("LatestDeliveryLocation" in d.message for d in plain.errors)
    for rule in rules.values():
        if not reads_emailevents(rule.query):
            assert not bound_query(rule, sample_values(rule), "sentinel").startswith("let EmailEvents")


def test_a_query_written_for_sentinels_own_table_gets_no_view() -> None:
    # Microsoft's analytics rules read Sentinel's row-per-change EmailEvents as it is.
    q = "EmailEvents | where TimeGenerated > ago(1h) | count"
    assert for_platform(q, "sentinel", "sentinel") == q
    assert for_platform(q, "sentinel", "defender").startswith(SENTINEL_EMAILEVENTS_VIEW)
    assert not reads_emailevents('CloudAppEvents // EmailEvents\n| where ActionType == "EmailEvents"')


@pytest.fixture
def tenant_file(tmp_path: Path) -> Path:
    path = tmp_path / "tenant.yaml"
    path.write_text(yaml.safe_dump({
        "params": {"protected_recipients": ["support@contoso.com", 'quote"d@contoso.com']},
        "rules": {MODEL: {"params": {"threshold": 5}}},
    }), encoding="utf-8")
    return path


def test_cli_export_binds_defaults_then_config_then_param(tenant_file: Path, capsys) -> None:
    assert main(["rules", "export", MODEL, "--config", str(tenant_file)]) == 0
    out = capsys.readouterr().out
    assert "let threshold = 5;\n" in out  # from the config, over the default 2
    assert "let window = 2h;\n" in out  # the default
    assert 'let protected_recipients = dynamic(["support@contoso.com", "quote\\"d@contoso.com"]);' in out
    assert not out.startswith("let EmailEvents")  # defender, the rule's own platform
    assert main(["rules", "export", MODEL, "--config", str(tenant_file), "--param", "threshold=7"]) == 0
    assert "let threshold = 7;\n" in capsys.readouterr().out


def test_cli_export_for_sentinel_passes_the_parser(tenant_file: Path, capsys) -> None:
    assert main(["rules", "export", MODEL, "--platform", "sentinel", "--config", str(tenant_file)]) == 0
    out = capsys.readouterr().out
    check = check_queries([out], tables=sentinel_schema())[0]
    assert check.errors == []


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in _keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _keys(v)}
    return set()


@pytest.mark.parametrize("slug", sorted(p.name.removesuffix(".yaml") for p in RULES_DIR.glob("*.yaml")
                                        if not p.name.endswith(".tests.yaml")))
def test_sentinel_yaml_round_trips(slug: str, tmp_path: Path, tenant_file: Path, capsys) -> None:
    assert main(["rules", "export", slug, "--format", "sentinel-yaml", "--config", str(tenant_file)]) == 0
    text = capsys.readouterr().out
    assert "responder" not in _keys(yaml.safe_load(text))
    data = yaml.safe_load(text)
    order = [k for k in SENTINEL_KEY_ORDER if k in data]
    assert list(data) == order
    original = load_catalog()[slug]
    # Adding our block back makes it a rule again, with the same Sentinel fields.
    path = tmp_path / f"{slug}.yaml"
    path.write_text(text + yaml.safe_dump({"responder": original.raw["responder"]}, sort_keys=False),
                    encoding="utf-8")
    again = load_rule(path)
    assert (again.id, again.name, again.tactics, again.query_frequency, again.query_period) == (
        original.id, original.name, original.tactics, original.query_frequency, original.query_period)
    # ... and its query is the Sentinel form of the original, which Microsoft's parser accepts alone.
    values = resolve_params(original, _tenant(tenant_file), {})
    assert again.query == bound_query(original, values, "sentinel")
    assert check_queries([again.query], tables=sentinel_schema())[0].errors == []


def _tenant(path: Path) -> TenantConfig:
    from core.tenant import load_tenant_config
    return load_tenant_config(path)


def test_sentinel_yaml_follows_a_longer_window_from_the_config(tmp_path: Path, capsys) -> None:
    config = tmp_path / "t.yaml"
    config.write_text(yaml.safe_dump({"params": {"protected_recipients": ["a@contoso.com"]},
                                      "rules": {MODEL: {"params": {"window": "3h"}}}}), encoding="utf-8")
    assert main(["rules", "export", MODEL, "--format", "sentinel-yaml", "--config", str(config)]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["queryPeriod"] == "3h" and "let window = 3h;\n" in data["query"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rules", "export", "no-such-rule"], "no such rule"),
        (["rules", "export", MODEL], "protected_recipients: is required"),
        (["rules", "export", MODEL, "--param", "protected_recipients=a@b.c", "--param", "treshold=3"],
         "parameter treshold: no selected rule declares this parameter"),
        (["rules", "export", MODEL, "--config", "/nonexistent/tenant.yaml"], "no such file"),
        (["rules", "export", MODEL, "--format", "sentinel-yaml", "--platform", "defender"],
         "--format sentinel-yaml writes the Sentinel form"),
        (["rules", "export", MODEL, "--param", 'protected_recipients=a@b.c\x01'], "control character"),
    ],
)
def test_cli_export_bad_input_exits_2_with_one_line(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_export_usage_errors_and_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["rules", "export", MODEL, "--platform", "splunk"])
    assert exc.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["rules", "export", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "exit codes: 0 printed 2 bad input" in out and "--format {kql,sentinel-yaml}" in out



def _documented_exports() -> list[list[str]]:
    root = Path(__file__).resolve().parents[2]
    commands = []
    for doc in (root / "README.md", root / "docs" / "rules.md"):
        text = doc.read_text(encoding="utf-8").replace("\\\n", " ")
        for line in text.splitlines():
            if line.startswith("python -m responder rules export "):
                words = line.split("#")[0].split(">")[0].split()
                commands.append(words[3:])
    return commands


def test_the_documented_export_commands_run(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    commands = _documented_exports()
    assert len(commands) == 4
    for argv in commands:
        assert main(argv) == 0, argv
        assert "let protected_recipients = dynamic([" in capsys.readouterr().out
