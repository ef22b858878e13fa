"""Ingestion delay and overlapping runs for the connector and account rules.

Each run reads the rule's lookback (`window`), which is longer than its correlation window, so an
event that reaches the hunting tables late is still read by the next run (Sentinel documents the
same need: https://learn.microsoft.com/azure/sentinel/detect-threats-custom, "Ingestion delay"),
and the repeats of a finding across overlapping runs carry the same request id (one ledger row).
The cases are the rules' own positive cases; the simulation holds back the last event as late.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from core.tenant import TenantConfig
from detections.backends.local import LocalBackend, parse_datetime
from detections.catalog import load_catalog
from detections.ruletests import Case, load_tests
from detections.scan import scan

CASES = [
    ("admin-logon-failures-then-success", "rotation: four failures from four IPs"),
    ("password-spray-then-success", "clock-bin evasion: three accounts before 11:00"),
    ("outbound-external-burst", "a compromised mailbox at the default threshold"),
    ("connector-mail-volume", "relay spam at the default threshold"),
    ("connector-sender-mismatch", "P1 = P2 relay abuse: a connector created an hour ago"),
    ("exchange-connector-created-or-modified", "a new inbound connector is found"),
    # The late event names the connector in another case: the request id must not change between runs
    ("exchange-connector-created-or-modified", "ingestion delay: a re-enable that arrives late"),
]


def _case(slug: str, prefix: str) -> tuple[Any, Case]:
    rule = load_catalog()[slug]
    matches = [c for c in load_tests(rule).cases if c.name.startswith(prefix)]
    assert len(matches) == 1, (slug, prefix)
    return rule, matches[0]


def _absolute(case: Case) -> dict[str, list[dict[str, Any]]]:
    return {t: [{**r, "Timestamp": parse_datetime(r["Timestamp"], case.now)} for r in rows]
            for t, rows in case.tables.items()}


def _ids(rule: Any, case: Case, tables: dict[str, list[dict[str, Any]]], minutes: int) -> set[str]:
    now = case.now + timedelta(minutes=minutes)
    backend = LocalBackend.from_rows(tables, now, source=case.name)
    runs = asyncio.run(scan([rule], backend, tenant=TenantConfig(), overrides=case.params, now=now))
    assert runs[0].error is None, runs[0].error
    return {r["id"] for r in runs[0].requests}


@pytest.mark.parametrize(("slug", "prefix"), CASES, ids=[c[0] for c in CASES])
def test_late_event_is_found_by_the_next_run_and_repeats_keep_one_request_id(slug: str, prefix: str) -> None:
    rule, case = _case(slug, prefix)
    tables = _absolute(case)
    # The event with the latest time reaches the tables only after the first run.
    late_table, late_index = max(((t, i) for t, rows in tables.items() for i in range(len(rows))),
                                 key=lambda ti: tables[ti[0]][ti[1]]["Timestamp"])
    early = {t: [r for i, r in enumerate(rows) if (t, i) != (late_table, late_index)]
             for t, rows in tables.items()}
    first = _ids(rule, case, early, 0)
    second = _ids(rule, case, tables, 10)
    third = _ids(rule, case, tables, 20)
    assert second, "the run after the late event arrived finds the attack"
    assert third == second, "overlapping runs give the same request ids"
    assert first <= second, "a finding already made by the first run keeps its id"
