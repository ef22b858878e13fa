"""The monitoring a deployment creates (issue 16): log alerts, their action group, the workbook.

Checks run over the Bicep model (tests/infra/bicepmodel.py) as the other infra tests do, and each one is
shown to fail on a copy of the file with the property it checks removed. The alert queries themselves
are tested against demo records in tests/telemetry/test_alert_queries.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest

from core.settings import ROOT
from tests.infra import bicepmodel as bm
from tests.telemetry.monitoring import alert_rules, monitoring_file, workbook, workbook_queries

RUNBOOK = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
# alert -> (parameter holding its threshold, the let statement it becomes, the default)
THRESHOLDS = {
    "dead-man": ("deadManPeriods", "dead_after_periods", 3),
    "backend-errors": ("consecutiveErrors", "consecutive_errors", 3),
    "held-too-long": ("heldAlertHours", "held_for", 4),
    "webhook-failing": ("webhookFailures", "webhook_failures", 1),
    "push-rejected": ("pushForgedNotifications", "push_forged", 5),
}


def _must_fail(check: Callable[[bm.BicepFile], None], mutated: bytes) -> None:
    copy = monitoring_file(mutated)
    assert not copy.errors, copy.errors
    with pytest.raises(AssertionError):
        check(copy)


def check_alerts(file: bm.BicepFile) -> None:
    (decl,) = file.resources("Microsoft.Insights/scheduledQueryRules")
    assert bm.text(decl.prop("kind")) == "'LogAlert'"
    assert bm.text(decl.prop("properties", "scopes")).split() == ["[", "applicationInsights.id", "]"], (
        "log alerts on the component read traces/requests by their classic names")
    assert "actionGroup.id" in bm.text(decl.prop("properties", "actions", "actionGroups"))
    for name, p in alert_rules(file).items():
        assert p["enabled"] is True and p["severity"] in range(5), name
        assert p["evaluationFrequency"] == "PT15M" and p["windowSize"] == "PT15M", name
        (criterion,) = p["criteria"]["allOf"]
        assert (criterion["timeAggregation"], criterion["operator"], criterion["threshold"]) == (
            "Count", "GreaterThan", 0), f"{name}: the query returns offending rows only; any row fires"
        hours = int(re.search(r"let lookback = (\d+)h;", criterion["query"]).group(1))
        assert p.get("overrideQueryTimeRange") == f"PT{hours}H", f"{name}: the range the query filters"
        assert p.get("autoMitigate") is True, name
        anchor = p["actions"]["customProperties"]["runbook"].split("#")[1]
        assert f"docs/runbook.md#{anchor}" in p["description"], name


def test_alerts() -> None:
    file = monitoring_file()
    check_alerts(file)
    (decl,) = file.resources("Microsoft.Insights/scheduledQueryRules")
    for path in (("properties", "actions"), ("properties", "scopes"),
                 ("properties", "overrideQueryTimeRange"), ("properties", "autoMitigate")):
        _must_fail(check_alerts, bm.without_property(file, decl, *path))


@pytest.mark.parametrize("alert", sorted(THRESHOLDS))
def test_each_threshold_is_a_parameter_that_reaches_the_query_and_the_runbook(alert: str) -> None:
    param, let, default = THRESHOLDS[alert]
    file = monitoring_file()
    assert file.evaluate(file.params[param].value) == default
    unit = "h" if let == "held_for" else ""
    assert f"let {let} = {default}{unit};" in alert_rules()[alert]["criteria"]["allOf"][0]["query"]
    changed = alert_rules(**{param: default + 2})[alert]["criteria"]["allOf"][0]["query"]
    assert f"let {let} = {default + 2}{unit};" in changed
    assert re.search(rf"\b{let}\b", (bm.INFRA / "app" / "monitoring" / "alerts" / f"{alert}.kql").read_text())
    assert f"`{param}`" in RUNBOOK, f"docs/runbook.md does not document {param}"


def _action_group(file: bm.BicepFile, **params: object) -> dict:
    decl = file.resource("Microsoft.Insights/actionGroups")
    env = file.environment({"logAnalyticsName": "l", "applicationInsightsName": "a", **params})
    return env.eval(decl.prop("properties"))


def check_action_group(file: bm.BicepFile) -> None:
    quiet = _action_group(file)
    assert quiet.get("emailReceivers") == [] and quiet.get("webhookReceivers") == []
    both = _action_group(file, alertEmails=["soc@contoso.com", "lead@contoso.com"],
                         alertTeamsWorkflowUrl="https://prod.example/workflows/1?sig=x")
    emails = [r["emailAddress"] for r in both.get("emailReceivers", [])]
    assert emails == ["soc@contoso.com", "lead@contoso.com"]
    assert len({r["name"] for r in both["emailReceivers"]}) == 2
    (hook,) = both.get("webhookReceivers", [])
    assert hook["serviceUri"] == "https://prod.example/workflows/1?sig=x"
    assert all(r["useCommonAlertSchema"] is True for r in [*both["emailReceivers"], hook])
    assert len(both["groupShortName"]) <= 12   # the service's limit
    assert file.params["alertTeamsWorkflowUrl"].decorator("secure") is not None


def test_action_group_emails_and_posts_to_the_teams_workflow() -> None:
    file = monitoring_file()
    check_action_group(file)
    decl = file.resource("Microsoft.Insights/actionGroups")
    _must_fail(check_action_group, bm.without_property(file, decl, "properties", "webhookReceivers"))
    _must_fail(check_action_group, bm.without_property(file, decl, "properties", "emailReceivers"))


def test_main_passes_the_alert_receivers_to_monitoring() -> None:
    main = bm.load("infra/main.bicep")
    env = main.environment(bm.coerce_to_param_types(main, {**bm.azd_parameter_values(),
                                                           "alertEmails": ["soc@contoso.com"]}))
    params = bm.module_params(main, "monitoring", env)
    assert params["alertEmails"] == ["soc@contoso.com"]
    assert "alertTeamsWorkflowUrl" in params
    assert main.params["alertTeamsWorkflowUrl"].decorator("secure") is not None


# The figures issue 16 asks the workbook for, and the query that shows each.
FIGURES = {
    "runs per rule over time": "runs-per-rule",
    "findings and actions by state": "findings-by-state",
    "time from detection to done": "detection-to-done",
    "held requests waiting": "held-waiting",
    "failures by class": "failures-by-class",
    "top senders": "top-senders",
    "top mailboxes and connectors": "top-targets",
}


def check_workbook(file: bm.BicepFile) -> None:
    decl = file.resource("Microsoft.Insights/workbooks")
    assert bm.text(decl.prop("kind")) == "'shared'"
    assert bm.text(decl.prop("properties", "sourceId")) == "applicationInsights.id"
    assert bm.text(decl.prop("properties", "category")) == "'workbook'"
    data = workbook(file)
    assert data["version"] == "Notebook/1.0"
    queries = workbook_queries(file)
    assert set(FIGURES.values()) <= set(queries)
    for item in data["items"]:
        if item["type"] == 3:
            assert item["content"]["resourceType"] == "microsoft.insights/components"
            assert item["content"]["query"].lstrip().startswith("// The app's telemetry records")


def test_workbook_shows_the_figures_on_call_wants() -> None:
    file = monitoring_file()
    check_workbook(file)
    decl = file.resource("Microsoft.Insights/workbooks")
    _must_fail(check_workbook, bm.without_property(file, decl, "properties", "sourceId"))
    _must_fail(check_workbook, bm.without_property(file, decl, "kind"))
    mutated = file.source.replace(b"loadTextContent('monitoring/workbook/held-waiting.kql')",
                                  b"loadTextContent('monitoring/workbook/top-senders.kql')")
    assert mutated != file.source
    # the held-waiting item then shows another query: the name is still there, so check the text too
    copy = monitoring_file(mutated)
    assert "state == \"held\"" not in workbook_queries(copy)["held-waiting"]


def test_telemetry_traces_are_not_sampled_away() -> None:
    # Adaptive sampling drops a share of traces under load; a dropped scan_run record would look like a
    # run that did not happen (the dead-man's switch) (host.json reference, samplingSettings).
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    sampling = host["logging"]["applicationInsights"]["samplingSettings"]
    assert not sampling.get("isEnabled") or "Trace" in sampling["excludedTypes"].split(";")


def test_runbook_has_a_section_per_alert() -> None:
    for name, p in alert_rules().items():
        anchor = p["actions"]["customProperties"]["runbook"].split("#")[1]
        heading = next((h for h in re.findall(r"^## (.+)$", RUNBOOK, re.M) if _anchor(h) == anchor), None)
        assert heading, f"docs/runbook.md has no section for {name} (#{anchor})"
        section = RUNBOOK.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
        for part in ("**What it means**", "**What to do**", "**Threshold**"):
            assert part in section, f"docs/runbook.md#{anchor} lacks {part}"


def _anchor(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
