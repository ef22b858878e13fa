"""The rule test harness fails when a rule does not do what its cases say."""

from __future__ import annotations

import asyncio
from pathlib import Path

from detections.catalog import load_rule
from detections.ruletests import load_tests, run_case
from tests.detections.helpers import write_rule


def results_for(tmp_path: Path, edit=None, tests_edit=None):
    path = write_rule(tmp_path, "r", edit)
    if tests_edit:
        tp = path.with_name("r.tests.yaml")
        tp.write_text(tests_edit(tp.read_text(encoding="utf-8")), encoding="utf-8")
    tests = load_tests(load_rule(path))

    async def go():
        return [await run_case(tests, c) for c in tests.cases]

    return {r.case: r for r in asyncio.run(go())}


def test_the_model_rule_cases_pass_as_shipped(tmp_path: Path) -> None:
    results = results_for(tmp_path)
    assert results and all(r.passed for r in results.values())


def test_a_changed_threshold_comparison_is_caught(tmp_path: Path) -> None:
    # ">=" instead of the seed's strict ">" must fail the "exactly threshold" negative case.
    results = results_for(
        tmp_path, lambda d: d.update(query=d["query"].replace("> threshold", ">= threshold"))
    )
    bad = results["exactly `threshold` copies is not enough (strictly greater)"]
    assert not bad.passed
    assert sorted(bad.unexpected) == [
        'move_to_junk {"network_message_id": "m1", "recipient": "support@contoso.com"}',
        'move_to_junk {"network_message_id": "m2", "recipient": "sales@contoso.com"}',
    ]
    assert "+ unexpected: move_to_junk" in bad.diff()


def test_dropping_the_inbox_filter_is_caught(tmp_path: Path) -> None:
    results = results_for(
        tmp_path,
        lambda d: d.update(
            query=d["query"].replace('| where LatestDeliveryLocation =~ "Inbox/folder"', "| where true")
        ),
    )
    bad = results["copies already in Junk count toward the threshold but are not moved again"]
    assert not bad.passed and len(bad.unexpected) == 2


def test_missing_requests_and_field_or_mode_differences_are_reported(tmp_path: Path) -> None:
    def tests_edit(text: str) -> str:
        return (
            text.replace("mode: auto,", "mode: approval,", 1)
            .replace('internet_message_id: "<a1@mail.gmail.com>"', 'internet_message_id: "<other@x>"', 1)
            .replace(
                "{network_message_id: m9, recipient: info@contoso.com}",
                "{network_message_id: m10, recipient: info@contoso.com}",
                1,
            )
        )

    results = results_for(tmp_path, tests_edit=tests_edit)
    first = results["one gmail sender mails three shared mailboxes, separate messages, all in the Inbox"]
    assert not first.passed
    assert any("mode is 'auto', expected 'approval'" in m for m in first.mismatched)
    assert any("target.internet_message_id is '<a1@mail.gmail.com>'" in m for m in first.mismatched)
    second = results[
        "one message to three mailboxes (one NetworkMessageId, three rows) gives one request per copy"
    ]
    assert second.missing == ['move_to_junk {"network_message_id": "m10", "recipient": "info@contoso.com"}']
    assert second.unexpected == ['move_to_junk {"network_message_id": "m9", "recipient": "info@contoso.com"}']


def test_a_query_the_engine_refuses_fails_every_case_with_the_reason(tmp_path: Path) -> None:
    results = results_for(tmp_path, lambda d: d.update(query=d["query"] + "| project-reorder Subject\n"))
    assert all(not r.passed and "does not support" in r.error for r in results.values())


def test_bad_case_rows_fail_the_case_naming_the_row(tmp_path: Path) -> None:
    results = results_for(tmp_path, tests_edit=lambda t: t.replace("Subject: q,", "Sbject: q,", 1))
    bad = [r for r in results.values() if not r.passed]
    assert len(bad) == 1
    assert "cases.4.tables.EmailEvents[0]: unknown column 'Sbject'" in bad[0].error
