"""A rule's own test cases (``<slug>.tests.yaml`` beside the rule), run on the local engine, once per
platform the rule must work on (Defender's table shapes, and Sentinel's through its prelude).

Each case gives input table rows and the exact set of requests the rule must produce, compared on
action plus the target's identifying fields (and any other target field or mode the case lists).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from core.request import ACTIONS, TARGET_FIELDS
from core.tenant import TenantConfig
from detections.catalog import DETECTIONS_DIR, Rule, RuleError, load_yaml, schema_error
from detections.params import ParamError
from detections.platforms import platforms_for, sentinel_rows

TESTS_SCHEMA_PATH = DETECTIONS_DIR / "rule-tests.schema.json"


@dataclass(frozen=True)
class Expected:
    action: str
    target: dict[str, str]
    mode: str | None = None

    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return identity(self.action, self.target)


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    now: datetime
    params: dict[str, Any]
    tables: dict[str, list[dict[str, Any]]]
    expect: list[Expected]
    index: int


@dataclass(frozen=True)
class RuleTests:
    rule: Rule
    path: Path
    cases: list[Case]


@dataclass
class CaseResult:
    rule: str
    case: str
    kind: str
    passed: bool
    missing: list[str] = field(default_factory=list)      # expected but not produced
    unexpected: list[str] = field(default_factory=list)   # produced but not expected
    mismatched: list[str] = field(default_factory=list)   # produced, but a listed field differs
    error: str | None = None

    def diff(self) -> str:
        lines = [f"  error: {self.error}"] if self.error else []
        lines += [f"  - missing:    {m}" for m in self.missing]
        lines += [f"  + unexpected: {u}" for u in self.unexpected]
        lines += [f"  ~ different:  {d}" for d in self.mismatched]
        return "\n".join(lines)


def identity(action: str, target: Mapping[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Action plus the target's identifying fields: what makes two requests the same request."""
    keys = TARGET_FIELDS.get(action) or tuple(sorted(target))
    return action, tuple((k, str(target.get(k, ""))) for k in keys)


def _show(key: tuple[str, tuple[tuple[str, str], ...]]) -> str:
    action, fields = key
    return f"{action} " + json.dumps(dict(fields), sort_keys=True)


def _plain(value: Any) -> Any:
    """YAML turns unquoted timestamps into datetimes; tests compare text, so make them ISO strings."""
    if isinstance(value, date):  # datetimes too; a naive one stays naive, so `now` can refuse it
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(TESTS_SCHEMA_PATH.read_text(encoding="utf-8")))


def _moment(path: Path, field: str, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RuleError(path, field, f"expected an ISO 8601 datetime, got {text!r}") from None
    if moment.tzinfo is None:
        raise RuleError(path, field, "give the time zone (e.g. 2026-11-20T12:00:00Z)")
    return moment.astimezone(UTC)


def load_tests(rule: Rule) -> RuleTests:
    """The rule's cases, validated; a missing file, unknown key or bad value is a RuleError."""
    path = rule.tests_path
    if not path.exists():
        raise RuleError(path, "(file)", f"rule {rule.slug} has no test cases: every rule needs a .tests.yaml")
    data = _plain(load_yaml(path))
    if not isinstance(data, dict):
        raise RuleError(path, "(top level)", "expected a mapping with now, params and cases")
    err = schema_error(path, _validator(), data)
    if err:
        raise err
    now = _moment(path, "now", data["now"])
    file_params = data.get("params", {})
    for name in file_params:
        if name not in rule.parameters:
            raise RuleError(path, f"params.{name}", f"rule {rule.slug} declares no such parameter")
    cases: list[Case] = []
    names: set[str] = set()
    for i, body in enumerate(data["cases"]):
        where = f"cases.{i}"
        if body["name"] in names:
            raise RuleError(path, f"{where}.name", f"duplicate case name {body['name']!r}")
        names.add(body["name"])
        for name in body.get("params", {}):
            if name not in rule.parameters:
                raise RuleError(path, f"{where}.params.{name}",
                                f"rule {rule.slug} declares no such parameter")
        expect: list[Expected] = []
        for j, exp in enumerate(body["expect"]):
            efield = f"{where}.expect.{j}"
            if exp["action"] not in ACTIONS:
                raise RuleError(path, f"{efield}.action", f"unknown action {exp['action']!r}")
            if exp["action"] not in {a.action for a in rule.actions}:
                raise RuleError(path, f"{efield}.action", f"rule {rule.slug} has no {exp['action']} action")
            target = {k: str(v) for k, v in exp["target"].items()}
            missing = [k for k in TARGET_FIELDS[exp["action"]] if k not in target]
            if missing:
                raise RuleError(path, f"{efield}.target",
                                f"list the identifying field(s): {', '.join(missing)}")
            expect.append(Expected(exp["action"], target, exp.get("mode")))
        if body["kind"] == "positive" and not expect:
            raise RuleError(path, f"{where}.expect", "a positive case must expect at least one request")
        if body["kind"] == "negative" and expect:
            raise RuleError(path, f"{where}.expect", "a negative case expects no requests ([])")
        cases.append(Case(name=body["name"], kind=body["kind"],
                          now=_moment(path, f"{where}.now", body["now"]) if "now" in body else now,
                          params={**file_params, **body.get("params", {})}, tables=body["tables"],
                          expect=expect, index=i))
    kinds = {c.kind for c in cases}
    for kind in ("positive", "negative"):
        if kind not in kinds:
            raise RuleError(path, "cases", f"needs at least one {kind} case")
    return RuleTests(rule=rule, path=path, cases=cases)


async def run_case(tests: RuleTests, case: Case) -> CaseResult:
    """Run one case on a fresh local engine for every platform the rule must work on, and compare what
    the rule asks for with what the case expects.

    A Defender-shaped rule runs twice: on the case's rows as given (advanced hunting), and on the same
    rows as Sentinel streams them (detections.platforms.sentinel_rows) with Sentinel's prelude; both must
    give the expected requests. A difference seen on only one platform is prefixed with its name.
    """
    result = CaseResult(rule=tests.rule.slug, case=case.name, kind=case.kind, passed=False)
    parts = {p: await _run_on(tests, case, p) for p in platforms_for(tests.rule.platform)}

    def merged(attr: str) -> list[str]:
        out: list[str] = []
        lists = {p: getattr(r, attr) for p, r in parts.items()}
        for platform, items in lists.items():
            for item in items:
                everywhere = all(item in other for other in lists.values())
                shown = item if everywhere or len(parts) == 1 else f"{platform}: {item}"
                if shown not in out:
                    out.append(shown)
        return out

    result.missing, result.unexpected, result.mismatched = (
        merged("missing"), merged("unexpected"), merged("mismatched"))
    errors = {p: r.error for p, r in parts.items() if r.error}
    if errors:
        same = len(set(errors.values())) == 1 and len(errors) == len(parts)
        result.error = (next(iter(errors.values())) if same or len(parts) == 1
                        else "; ".join(f"{p}: {e}" for p, e in errors.items()))
    result.passed = not (result.error or result.missing or result.unexpected or result.mismatched)
    return result


async def _run_on(tests: RuleTests, case: Case, platform: str) -> CaseResult:
    # Imported here: the local engine (duckdb) is a development dependency, not needed to load rules.
    from detections.backends.local import LocalBackend, TableError
    from detections.scan import scan

    rule = tests.rule
    result = CaseResult(rule=rule.slug, case=case.name, kind=case.kind, passed=False)
    tables = sentinel_rows(case.tables, case.now) if platform == "sentinel" else case.tables
    try:
        backend = LocalBackend.from_rows(tables, case.now, platform=platform,
                                         source=f"{tests.path}: cases.{case.index}.tables")
    except TableError as exc:
        result.error = str(exc)
        return result
    runs = await scan([rule], backend, tenant=TenantConfig(), overrides=case.params, now=case.now,
                      run_id=f"test-{case.index}")
    run = runs[0]
    if run.error:
        result.error = run.error
        return result
    compare_requests(result, case.expect, run.requests, run.problems)
    return result


def compare_requests(result: CaseResult, expect: Iterable[Expected], requests: Iterable[Mapping[str, Any]],
                     problems: Iterable[str]) -> None:
    """Fill ``result`` with how the produced ``requests`` (and their ``problems``) differ from a case's
    expectations: missing and unexpected requests (by :func:`identity`), then listed target fields and
    modes that differ; it passes when nothing does. The scheduled and the streaming form share it."""
    actual = {identity(r["action"], r["target"]): r for r in requests}
    expected = {e.key(): e for e in expect}
    result.missing = [_show(k) for k in expected if k not in actual]
    result.unexpected = [_show(k) for k in actual if k not in expected]
    for key, exp in expected.items():
        got = actual.get(key)
        if got is None:
            continue
        for k, v in exp.target.items():
            if got["target"].get(k) != v:
                result.mismatched.append(
                    f"{_show(key)}: target.{k} is {got['target'].get(k)!r}, expected {v!r}")
        if exp.mode and got["mode"] != exp.mode:
            result.mismatched.append(f"{_show(key)}: mode is {got['mode']!r}, expected {exp.mode!r}")
    result.mismatched.extend(problems)
    result.passed = not (result.missing or result.unexpected or result.mismatched)


async def run_rule_tests(rule: Rule) -> list[CaseResult]:
    tests = load_tests(rule)
    return [await run_case(tests, case) for case in tests.cases]


__all__ = ["Case", "CaseResult", "Expected", "ParamError", "RuleTests", "compare_requests", "load_tests",
           "run_case", "run_rule_tests"]
