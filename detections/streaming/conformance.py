"""Run a rule's own test cases (``<slug>.tests.yaml``) through its streaming form.

The same cases the scheduled KQL must pass (detections/ruletests.py) are turned into the facts the push
path would see (detections/streaming/tables.py), observed one by one in time order with a fresh
MemoryState, and the rows made into requests by ``requests_from_rows``; the requests are compared with
the case's expectations exactly as ruletests.py compares the KQL's: action plus identifying target
fields, listed target fields and modes. So the two forms are checked against each other on every case.

Where the two forms legitimately differ, the case gets an explicit streaming expectation in
:data:`DEVIATIONS` (with its reason), asserted like any other; the list is kept short on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Any

from core.tenant import TenantConfig
from detections.findings import effective_mode, requests_from_rows
from detections.params import ParamError, resolve_params
from detections.ruletests import Case, CaseResult, Expected, RuleTests, compare_requests, load_tests
from detections.streaming import MemoryState
from detections.streaming.registry import STREAMING, streaming_rule
from detections.streaming.tables import facts_from_tables


@dataclass(frozen=True)
class Deviation:
    """The streaming form's expected requests for one case, where they differ from the KQL's."""

    reason: str
    expect: tuple[Expected, ...]


# (rule slug, case name) -> what the streaming form must produce instead. Empty: on every case of both
# rules the streaming form makes exactly the scheduled path's requests (and request ids). The known
# differences outside the cases, at the window edges (the streaming window ends at the newest mail seen,
# the KQL's lookback at the run time), are asserted in tests/detections/test_streaming_rules.py.
DEVIATIONS: dict[tuple[str, str], Deviation] = {}


def expectation(slug: str, case: Case) -> tuple[list[Expected], str | None]:
    """The requests the streaming form must make for ``case``, and the reason when they are not the
    case's own."""
    dev = DEVIATIONS.get((slug, case.name))
    return (list(dev.expect), dev.reason) if dev else (list(case.expect), None)


async def observe_case(tests: RuleTests, case: Case) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                              list[str]]:
    """(rows, requests, problems) of the streaming form on the case's tables."""
    rule = tests.rule
    observe = STREAMING[rule.slug]
    params = resolve_params(rule, TenantConfig(), case.params)
    facts = facts_from_tables(case.tables, case.now, params[rule.recipients_param or "protected_recipients"])
    state = MemoryState()
    rows: list[dict[str, Any]] = []
    for fact in facts:
        rows += await observe(fact, params, state)
    modes = {i: effective_mode(rule, a, tenant_mode=None, dry_run=False) for i, a in enumerate(rule.actions)}
    found = requests_from_rows(rule, rows, modes=modes, detected_at=case.now.astimezone(UTC),
                               run_id=f"stream-{case.index}")
    return rows, found.requests, found.problems


async def run_streaming_case(tests: RuleTests, case: Case) -> CaseResult:
    """The case through the streaming form, compared with :func:`expectation` as ruletests.py compares."""
    result = CaseResult(rule=tests.rule.slug, case=case.name, kind=case.kind, passed=False)
    try:
        _, requests, problems = await observe_case(tests, case)
    except (ParamError, ValueError) as exc:
        result.error = str(exc)
        return result
    expect, _ = expectation(tests.rule.slug, case)
    compare_requests(result, expect, requests, problems)
    return result


def streaming_tests(slug: str) -> RuleTests:
    return load_tests(streaming_rule(slug))


async def run_streaming_rule_tests(slug: str) -> list[CaseResult]:
    tests = streaming_tests(slug)
    return [await run_streaming_case(tests, case) for case in tests.cases]
