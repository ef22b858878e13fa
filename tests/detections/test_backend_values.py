"""One logical row through both service backends: the same Python values reach findings and cards.

Defender (loopback fake Graph, real msgraph-sdk adapter) sends datetimes with 7 fractional digits and
dynamic columns as JSON arrays/objects (the runHuntingQuery example response); Log Analytics (loopback,
real azure-monitor-query client) sends dynamic columns as JSON text, and the client parses datetimes to
6 digits. Both must come out the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.monitor.query.aio import LogsQueryClient

from core.graph import make_graph_client
from detections.backends.base import QueryResult
from detections.backends.defender import MAX_ROWS, DefenderBackend
from detections.backends.sentinel import SentinelBackend
from detections.backends.values import datetime_value, dynamic_value
from detections.catalog import load_rule
from detections.findings import requests_from_rows
from devtools.fakegraph import FakeGraph
from notifications.card_approval import approval_card
from notifications.card_scan import scan_card
from notifications.reports import RunReport
from tests.detections.helpers import write_rule
from tests.detections.test_backend_sentinel import WORKSPACE, Credential, FakeLogAnalytics, LoopbackHeaders
from tests.notify.test_cards import all_text

SUBJECTS = ["Question about my order", "Re: here is the form"]
# The same row as each service spells it.
DEFENDER_SCHEMA = [{"name": n, "type": t} for n, t in (
    ("Timestamp", "DateTime"), ("NetworkMessageId", "String"), ("RecipientEmailAddress", "String"),
    ("Subject", "String"), ("SubjectList", "Dynamic"), ("AdditionalFields", "Dynamic"))]
DEFENDER_ROW = {"Timestamp": "2026-11-20T11:51:02.1234567Z", "NetworkMessageId": "m1",
                "RecipientEmailAddress": "support@contoso.com", "Subject": "2026-11-20T11:00:00Z",
                "SubjectList": SUBJECTS, "AdditionalFields": {"Stage": ["a", 1]}}
SENTINEL_TABLE = {"name": "PrimaryResult",
                  "columns": [{"name": c["name"], "type": c["type"].lower()} for c in DEFENDER_SCHEMA],
                  "rows": [["2026-11-20T11:51:02.1234567Z", "m1", "support@contoso.com",
                            "2026-11-20T11:00:00Z", '["Question about my order","Re: here is the form"]',
                            '{"Stage":["a",1]}']]}
EXPECTED = {"Timestamp": "2026-11-20T11:51:02.123456Z", "NetworkMessageId": "m1",
            "RecipientEmailAddress": "support@contoso.com", "Subject": "2026-11-20T11:00:00Z",
            "SubjectList": SUBJECTS, "AdditionalFields": {"Stage": ["a", 1]}}


def defender_result(rows: list[dict], schema: list[dict] = DEFENDER_SCHEMA) -> QueryResult:
    async def go() -> QueryResult:
        backend = DefenderBackend(make_graph_client(base_url=fake.base_url, max_retries=0))
        return await backend.run("EmailEvents | take 1", timespan=timedelta(hours=1))
    with FakeGraph(hunting=lambda q, t: (schema, rows)) as fake:
        return asyncio.run(go())


@pytest.fixture
def la() -> Iterator[FakeLogAnalytics]:
    server = FakeLogAnalytics()
    yield server
    server.close()


def sentinel_result(la: FakeLogAnalytics) -> QueryResult:
    la.answers.append((200, {"tables": [SENTINEL_TABLE]}, {}))

    async def go() -> QueryResult:
        client = LogsQueryClient(Credential(), endpoint=la.url, headers_policy=LoopbackHeaders(),
                                 retry_total=0)
        async with client:
            return await SentinelBackend(client, WORKSPACE).run("EmailEvents | take 1",
                                                                 timespan=timedelta(hours=1))
    return asyncio.run(go())


def test_the_same_row_gives_the_same_values_from_both_backends(la: FakeLogAnalytics) -> None:
    d, s = defender_result([DEFENDER_ROW]), sentinel_result(la)
    assert d.rows == [EXPECTED]
    assert s.rows == [EXPECTED]
    # A string column that looks like a date stays the text the service sent.
    assert d.rows[0]["Subject"] == s.rows[0]["Subject"] == "2026-11-20T11:00:00Z"


def test_findings_and_cards_get_lists_from_both_backends(tmp_path, la: FakeLogAnalytics) -> None:
    def edit(data: dict) -> None:
        data["responder"]["remediation"][0]["mode"] = "approval"
        data["responder"]["remediation"][0]["evidence"] = ["Timestamp", "SubjectList", "AdditionalFields"]
    rule = load_rule(write_rule(tmp_path, "lists", edit, with_tests=False))
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    evidences = []
    for result in (defender_result([DEFENDER_ROW]), sentinel_result(la)):
        found = requests_from_rows(rule, result.rows, modes={0: "approval"}, detected_at=now, run_id="r")
        [req] = found.requests
        evidences.append(req["evidence"])
        text = all_text(approval_card([req]))
        assert "Question about my order, Re: here is the form" in text
        assert "['" not in text and '"Stage": ["a", 1]' in text
    assert evidences[0] == evidences[1]
    assert evidences[0]["SubjectList"] == SUBJECTS
    assert evidences[0]["Timestamp"] == "2026-11-20T11:51:02.123456Z"


def test_a_result_at_the_row_cap_is_partial_and_the_card_says_so() -> None:
    schema = [{"name": "NetworkMessageId", "type": "String"}]
    capped = defender_result([{"NetworkMessageId": f"m{i}"} for i in range(MAX_ROWS)], schema)
    assert capped.partial is True and len(capped.rows) == MAX_ROWS
    assert "at most 100,000 rows" in (capped.partial_reason or "")
    under = defender_result([{"NetworkMessageId": f"m{i}"} for i in range(MAX_ROWS - 1)], schema)
    assert (under.partial, under.partial_reason) == (False, None)
    report = RunReport(rule="r", rule_name="R", severity="Medium", rows=len(capped.rows), partial=True,
                       partial_reason=capped.partial_reason, backend="defender")
    text = all_text(scan_card(report))
    assert "Partial result" in text and "at most 100,000 rows" in text


def test_the_fake_graph_caps_hunting_results_like_the_service() -> None:
    schema = [{"name": "n", "type": "Int32"}]
    result = defender_result([{"n": i} for i in range(MAX_ROWS + 5)], schema)
    assert len(result.rows) == MAX_ROWS and result.partial is True


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-11-20T11:51:02.1234567Z", "2026-11-20T11:51:02.123456Z"),
    ("2026-11-20T11:51:02Z", "2026-11-20T11:51:02Z"),
    ("2026-11-20T11:51:02.5Z", "2026-11-20T11:51:02.500000Z"),
    ("2026-11-20T12:51:02+01:00", "2026-11-20T11:51:02Z"),
    (datetime(2026, 11, 20, 11, 51, 2, 123456, tzinfo=UTC), "2026-11-20T11:51:02.123456Z"),
    ("not a date", "not a date"),
    (None, None),
])
def test_datetime_values(value, expected) -> None:
    assert datetime_value(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ('["a","b"]', ["a", "b"]), ('{"k": 1}', {"k": 1}), (["a"], ["a"]),
    ("123", "123"), ("plain", "plain"), ("[not json", "[not json"), (None, None),
])
def test_dynamic_values(value, expected) -> None:
    assert dynamic_value(value) == expected
