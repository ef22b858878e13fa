"""A rule as it runs elsewhere: its query with the parameters bound, alone or as a Sentinel rule file.

In the app a rule's parameters become ``let`` statements at run time (detections/params.py), so the
query in the file does not run on its own. ``bound_query`` writes those statements (and the platform's
prelude, detections/platforms.py) in front of it: the result runs as-is in Defender advanced hunting or
Sentinel Logs. ``sentinel_yaml`` is the rule file Sentinel imports: the same keys, in the order
Microsoft's own files use (Azure/Azure-Sentinel Solutions/*/Analytic Rules/*.yaml), with that query and
without the ``responder`` extension.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from detections.catalog import Rule
from detections.params import bind_query, kql_timespan
from detections.platforms import PLATFORMS, for_platform

# Key order of Microsoft's analytics-rule files; every key the rule schema allows except `responder`.
SENTINEL_KEY_ORDER = (
    "id", "name", "description", "severity", "status", "requiredDataConnectors", "queryFrequency",
    "queryPeriod", "triggerOperator", "triggerThreshold", "tactics", "relevantTechniques", "subTechniques",
    "tags", "query", "entityMappings", "customDetails", "alertDetailsOverride", "eventGroupingSettings",
    "incidentConfiguration", "suppressionDuration", "suppressionEnabled", "sentinelEntitiesMappings",
    "version", "kind", "metadata",
)


def bound_query(rule: Rule, values: Mapping[str, Any], platform: str) -> str:
    """The platform's prelude, one ``let`` per parameter, then the rule's query: a self-contained query."""
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r} (known: {', '.join(PLATFORMS)})")
    # The same prelude the backend sends (detections/platforms.py): one meaning on every path.
    return for_platform(bind_query(rule, values), platform, rule.platform) + "\n"


class _Dumper(yaml.SafeDumper):
    """Block style, lists indented under their key and multi-line strings as ``|`` literals: how
    Sentinel's files are written."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def sentinel_document(rule: Rule, values: Mapping[str, Any]) -> dict[str, Any]:
    """The Sentinel rule file's content: the rule's Sentinel keys, the query bound for Sentinel."""
    data = {k: v for k, v in rule.raw.items() if k != "responder"}
    unknown = set(data) - set(SENTINEL_KEY_ORDER)
    if unknown:  # the schema refuses these; a new schema key must get its place in the order
        raise ValueError(f"{rule.path}: no Sentinel position for key(s) {', '.join(sorted(unknown))}")
    data["query"] = bound_query(rule, values, "sentinel")
    if "tactics" in data:
        data["tactics"] = list(rule.tactics)
    if rule.kind == "Scheduled":
        # Sentinel's lookback is queryPeriod: it follows the bound window (a tenant may lengthen it).
        data["queryPeriod"] = kql_timespan(values["window"])
    return {k: data[k] for k in SENTINEL_KEY_ORDER if k in data}


def sentinel_yaml(rule: Rule, values: Mapping[str, Any]) -> str:
    return yaml.dump(sentinel_document(rule, values), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     width=1_000_000)
