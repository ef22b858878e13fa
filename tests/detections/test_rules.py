"""One suite over every rule file in detections/rules (the elastic/detection-rules pattern)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from detections.catalog import RULES_DIR, Rule, load_catalog, load_rule
from detections.kqlcheck import check_rules
from detections.ruletests import load_tests, run_case

RULE_FILES = sorted(p for p in RULES_DIR.glob("*.yaml") if not p.name.endswith(".tests.yaml"))
IDS = [p.stem for p in RULE_FILES]


def test_there_are_rules() -> None:
    assert "consumer-sender-to-shared-mailboxes" in IDS


def test_catalog_loads_with_unique_ids_and_slugs() -> None:
    catalog = load_catalog()
    rules = list(catalog.values())
    assert len(rules) == len(RULE_FILES)
    assert len({r.id for r in rules}) == len(rules)
    assert len({r.slug for r in rules}) == len(rules)


@pytest.mark.parametrize("path", RULE_FILES, ids=IDS)
def test_rule_is_schema_valid_and_has_a_window(path: Path) -> None:
    rule = load_rule(path)
    assert rule.slug == path.stem
    assert rule.parameters["window"].type == "timespan"
    assert rule.query_period == rule.parameters["window"].default
    assert rule.actions


@pytest.mark.parametrize("path", RULE_FILES, ids=IDS)
def test_rule_has_positive_and_negative_cases(path: Path) -> None:
    tests = load_tests(load_rule(path))
    kinds = [c.kind for c in tests.cases]
    assert "positive" in kinds and "negative" in kinds
    assert all(c.expect for c in tests.cases if c.kind == "positive")


@pytest.mark.parametrize("path", RULE_FILES, ids=IDS)
def test_rule_passes_its_own_cases_on_the_local_engine(path: Path) -> None:
    tests = load_tests(load_rule(path))

    async def run_all() -> list:
        return [await run_case(tests, c) for c in tests.cases]

    results = asyncio.run(run_all())
    failures = [f"{r.case}\n{r.diff()}" for r in results if not r.passed]
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def parser_problems() -> dict[str, list[str]]:
    rules: list[Rule] = [load_rule(p) for p in RULE_FILES]
    return check_rules(rules)


@pytest.mark.node
@pytest.mark.parametrize("path", RULE_FILES, ids=IDS)
def test_bound_query_passes_microsofts_parser_and_binder(
    path: Path, parser_problems: dict[str, list[str]]
) -> None:
    # Also checks the result columns include every column the remediation target/evidence/when reads.
    assert parser_problems[path.stem] == []
