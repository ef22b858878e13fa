"""Check KQL with Microsoft's own parser and binder (npm ``@kusto/language-service-next``, via node).

The local engine proves a rule's logic; this proves the same text is valid KQL for the real service:
it parses, every table and column exists in ``detections/schemas``, and the result has the columns
the rule's remediation reads. Each rule is bound for every platform it must run on
(detections.platforms): on Sentinel, tables also have ``TimeGenerated``, EmailEvents lacks the Latest*
columns, and the query goes in behind Sentinel's prelude, exactly as the Sentinel backend sends it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detections.catalog import DETECTIONS_DIR, SCHEMAS_DIR, Rule
from detections.params import bind_query
from detections.platforms import PLATFORMS, for_platform, platforms_for, sentinel_columns

SCRIPT = DETECTIONS_DIR / "kqlcheck.js"
ROOT = DETECTIONS_DIR.parent
_KQL_TYPES = {"String": "string", "DateTime": "datetime", "Int": "int", "Long": "long", "Real": "real",
              "Bool": "bool", "Dynamic": "dynamic", "Guid": "guid"}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Placeholder values for required parameters that have no default: only their type matters here.
_SAMPLES: dict[str, Any] = {"string": "example", "string_list": ["someone@example.com"], "int": 1,
                            "bool": True}


class KqlCheckUnavailable(RuntimeError):
    """node or the npm package is missing: run `make install` (npm ci)."""


@dataclass(frozen=True)
class Diagnostic:
    severity: str
    code: str
    message: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.line}:{self.column}: {self.code} {self.message}"


@dataclass
class KqlCheck:
    diagnostics: list[Diagnostic]
    columns: list[tuple[str, str]] | None  # None when the query's result is not a table
    statements: list[dict[str, Any]] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "Error"]


def table_schemas(platform: str = "defender", schemas_dir: Path = SCHEMAS_DIR) -> dict[str, list[list[str]]]:
    """Table -> [[column, KQL type]] as ``platform`` has them (the Sentinel flavour: TimeGenerated added,
    no Latest* columns in EmailEvents; see detections.platforms)."""
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r} (expected one of {', '.join(PLATFORMS)})")
    tables: dict[str, list[list[str]]] = {}
    for path in sorted(Path(schemas_dir).glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        cols: list[tuple[str, str]] = []
        for prop in data["Properties"]:
            if not _IDENT.match(prop["Name"]) or prop["Type"] not in _KQL_TYPES:
                raise ValueError(f"{path}: Properties: bad column {prop!r}")
            cols.append((prop["Name"], _KQL_TYPES[prop["Type"]]))
        if platform == "sentinel":
            cols = sentinel_columns(data["Name"], cols)
        tables[data["Name"]] = [[c, t] for c, t in cols]
    return tables


def check_queries(queries: Sequence[str], *, platform: str = "defender",
                  tables: Mapping[str, list[list[str]]] | None = None) -> list[KqlCheck]:
    """Parse and bind each query against the table schemas (one node process for the batch)."""
    node = shutil.which("node")
    if node is None:
        raise KqlCheckUnavailable("node is not installed; the KQL parser check needs it")
    if not (ROOT / "node_modules" / "@kusto" / "language-service-next").is_dir():
        raise KqlCheckUnavailable("npm package @kusto/language-service-next is missing: run `npm ci`")
    payload = {"tables": tables if tables is not None else table_schemas(platform), "queries": list(queries)}
    proc = subprocess.run([node, str(SCRIPT)], input=json.dumps(payload), capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False)
    if proc.returncode != 0:
        raise KqlCheckUnavailable(f"kqlcheck.js failed: {proc.stderr.strip()[:500]}")
    out = []
    for item in json.loads(proc.stdout):
        diags = [Diagnostic(d["severity"], d["code"], d["message"], d["line"], d["column"])
                 for d in item["diagnostics"]]
        cols = [(c[0], c[1]) for c in item["columns"]] if item["columns"] is not None else None
        out.append(KqlCheck(diagnostics=diags, columns=cols, statements=item["statements"]))
    return out


def check_query(query: str, *, platform: str = "defender") -> KqlCheck:
    return check_queries([query], platform=platform)[0]


def sample_values(rule: Rule) -> dict[str, Any]:
    """Defaults, plus a placeholder of the right type for each required parameter without one."""
    return {n: s.default if s.default is not None else _SAMPLES[s.type] for n, s in rule.parameters.items()}


def rule_problems(rule: Rule, check: KqlCheck, *, prelude_lines: int = 0) -> list[str]:
    """What is wrong with a rule's bound query, as seen by the parser and binder.

    ``prelude_lines``: lines of platform prelude (detections.platforms) in front of the bound query."""
    # Positions are in the sent query: the prelude, then one `let` line per parameter, then the rule's text.
    offset = prelude_lines + len(rule.parameters)
    problems = []
    for d in check.errors:
        if d.line > offset:
            where = f"line {d.line - offset}"
        elif d.line > prelude_lines:
            where = f"parameter let statement {d.line - prelude_lines}"
        else:
            where = f"platform prelude line {d.line}"
        problems.append(f"{rule.path}: query: {where}, column {d.column}: {d.code} {d.message}")
    if check.columns is None:
        problems.append(f"{rule.path}: query: the result is not a table")
        return problems
    have = {c for c, _ in check.columns}
    for i, action in enumerate(rule.actions):
        for col in action.columns():
            if col not in have:
                problems.append(f"{rule.path}: responder.remediation.{i}: reads column {col}, which the "
                                f"query's result does not have (it has: {', '.join(sorted(have))})")
    for i, entity in enumerate(rule.raw.get("entityMappings", [])):
        for mapping in entity["fieldMappings"]:
            if mapping["columnName"] not in have:
                problems.append(f"{rule.path}: entityMappings.{i}: column {mapping['columnName']} is not "
                                "in the query's result")
    return problems


def check_rules(rules: Sequence[Rule]) -> dict[str, list[str]]:
    """Rule slug -> problems (empty when the bound query passes on every platform it must run on),
    batching per platform. A problem seen on only some of a rule's platforms names them."""
    found: dict[str, dict[str, list[str]]] = {r.slug: {} for r in rules}
    for platform in PLATFORMS:
        group = [r for r in rules if platform in platforms_for(r.platform)]
        if not group:
            continue
        bound = [bind_query(r, sample_values(r)) for r in group]
        sent = [for_platform(q, platform, r.platform) for q, r in zip(bound, group, strict=True)]
        checks = check_queries(sent, platform=platform)
        for rule, q, full, check in zip(group, bound, sent, checks, strict=True):
            lines = full.count("\n") - q.count("\n")
            found[rule.slug][platform] = rule_problems(rule, check, prelude_lines=lines)
    out: dict[str, list[str]] = {}
    for slug, per in found.items():
        problems: list[str] = []
        for platform, items in per.items():
            for item in items:
                everywhere = all(item in other for other in per.values())
                shown = item if everywhere or len(per) == 1 else f"on {platform}: {item}"
                if shown not in problems:
                    problems.append(shown)
        out[slug] = problems
    return out
