"""Every test case of the two mail rules, through the streaming form (issue 15).

The scheduled KQL must pass these cases (tests/detections/test_rules.py runs them on the local engine);
here the same cases go through the push path's form, facts in time order with a fresh MemoryState, and
must make the requests the case expects (or the asserted streaming expectation of DEVIATIONS), and the
very same request ids as the KQL on the local engine.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from core.tenant import TenantConfig
from detections.backends.local import LocalBackend
from detections.ruletests import Case, Expected
from detections.scan import scan
from detections.streaming import conformance
from detections.streaming.conformance import (
    DEVIATIONS,
    Deviation,
    expectation,
    observe_case,
    run_streaming_case,
    streaming_tests,
)
from detections.streaming.registry import STREAMING

CASES = [(slug, case) for slug in STREAMING for case in streaming_tests(slug).cases]


def _id(item: tuple[str, Case]) -> str:
    return f"{item[0]}:{item[1].index}"


@pytest.mark.parametrize("item", CASES, ids=[_id(c) for c in CASES])
def test_the_streaming_form_passes_every_case(item: tuple[str, Case]) -> None:
    slug, case = item
    result = asyncio.run(run_streaming_case(streaming_tests(slug), case))
    assert result.passed, f"{slug}: {case.name}\n{result.diff()}"


async def _scheduled_ids(slug: str, case: Case) -> set[str]:
    tests = streaming_tests(slug)
    backend = LocalBackend.from_rows(case.tables, case.now, source=f"{slug}: {case.name}")
    runs = await scan([tests.rule], backend, tenant=TenantConfig(), overrides=case.params, now=case.now)
    assert runs[0].error is None, runs[0].error
    return {r["id"] for r in runs[0].requests}


AGREEING = [c for c in CASES if (c[0], c[1].name) not in DEVIATIONS]


@pytest.mark.parametrize("item", AGREEING, ids=[_id(c) for c in AGREEING])
def test_both_forms_make_the_same_request_ids(item: tuple[str, Case]) -> None:
    slug, case = item
    _, requests, problems = asyncio.run(observe_case(streaming_tests(slug), case))
    assert not problems
    assert {r["id"] for r in requests} == asyncio.run(_scheduled_ids(slug, case))


def test_the_streaming_rows_carry_the_kql_projection_columns() -> None:
    # A positive case of each rule: the rows have exactly the projection's columns, so evidence and
    # cards read the same fields whichever path found the mail.
    projections = {
        "consumer-sender-to-shared-mailboxes": [
            "Timestamp", "SenderMailFromAddress", "SenderFromAddress", "SenderKey", "RecipientEmailAddress",
            "RecipientObjectId", "Subject", "DistinctMailboxes", "Campaigns", "LatestDeliveryLocation",
            "LatestDeliveryAction", "NetworkMessageId", "InternetMessageId", "ReportId"],
        "consumer-reply-chain-file-link": [
            "Stage", "Timestamp", "NetworkMessageId", "InternetMessageId", "SenderMailFromAddress",
            "RecipientEmailAddress", "RecipientObjectId", "Subject", "LatestDeliveryLocation",
            "FileShareUrls", "FileShareHosts", "FirstReplyTime", "ChainMailbox", "ChainSender", "ReportId"],
    }
    for slug, columns in projections.items():
        tests = streaming_tests(slug)
        rows, _, _ = asyncio.run(observe_case(tests, tests.cases[0]))
        assert rows and all(list(r) == columns for r in rows)


def test_deviations_name_real_cases_and_really_differ() -> None:
    cases = {(slug, c.name): c for slug, c in CASES}
    for key, dev in DEVIATIONS.items():
        assert key in cases, f"DEVIATIONS names no case: {key}"
        assert dev.reason.strip() and "\n" not in dev.reason.strip()
        assert {e.key() for e in dev.expect} != {e.key() for e in cases[key].expect}


def test_a_streaming_expectation_replaces_the_case_expectation_and_is_asserted(monkeypatch) -> None:
    slug = "consumer-sender-to-shared-mailboxes"
    tests = streaming_tests(slug)
    case = next(c for c in tests.cases if c.name.startswith("copies already in Junk"))
    only_m4 = case.expect
    monkeypatch.setitem(conformance.DEVIATIONS, (slug, case.name), Deviation(
        reason="test: the push path would also have moved the two copies it saw in the Inbox",
        expect=(*only_m4,
                Expected("move_to_junk", {"network_message_id": "j1", "recipient": "support@contoso.com"}))))
    expect, reason = expectation(slug, case)
    assert reason and len(expect) == 2
    result = asyncio.run(run_streaming_case(tests, case))
    assert not result.passed
    assert result.missing == ['move_to_junk {"network_message_id": "j1", "recipient": "support@contoso.com"}']


def test_a_broken_streaming_form_fails_the_conformance_cases(monkeypatch) -> None:
    # The runner is not vacuous: a streaming form that forgets the Inbox check fails the Junk case.
    slug = "consumer-sender-to-shared-mailboxes"
    tests = streaming_tests(slug)
    case = next(c for c in tests.cases if c.name.startswith("copies already in Junk"))
    observe = STREAMING[slug]

    async def ignores_location(fact, params, state):
        return await observe(dataclasses.replace(fact, in_inbox=True), params, state)

    monkeypatch.setitem(STREAMING, slug, ignores_location)
    result = asyncio.run(run_streaming_case(tests, case))
    assert not result.passed and len(result.unexpected) == 2
