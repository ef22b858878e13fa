"""DefenderBackend through the real msgraph-sdk adapter against the loopback fake Graph."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from core.graph import make_graph_client
from detections.backends.base import BackendError, QueryResult
from detections.backends.defender import DefenderBackend, iso_duration
from devtools.fakegraph import FakeGraph, GraphFault

ROW = {"Timestamp": "2026-11-20T11:50:00Z", "NetworkMessageId": "0c2c7bd4-9a5e-4d1b-a2a5-08dc18c52e6d",
       "Subject": "10:30", "RecipientEmailAddress": "support@contoso.com", "AttachmentCount": 0,
       "AdditionalFields": {"a": [1, 2]}, "SenderObjectId": None}


def run(fake: FakeGraph, query: str = "EmailEvents | take 1", span: timedelta = timedelta(hours=1),
        max_retries: int = 0) -> QueryResult:
    async def go() -> QueryResult:
        backend = DefenderBackend(make_graph_client(base_url=fake.base_url, max_retries=max_retries))
        return await backend.run(query, timespan=span)
    return asyncio.run(go())


def test_sends_query_and_iso_timespan_and_keeps_values_as_sent() -> None:
    types = (("Timestamp", "DateTime"), ("NetworkMessageId", "String"), ("Subject", "String"),
             ("RecipientEmailAddress", "String"), ("AttachmentCount", "Int32"),
             ("AdditionalFields", "Object"), ("SenderObjectId", "String"))
    schema = [{"name": k, "type": t} for k, t in types]
    with FakeGraph(hunting=lambda q, t: (schema, [ROW])) as fake:
        result = run(fake, "EmailEvents | where Subject == '10:30'", timedelta(hours=1))
        [call] = fake.calls
    assert (call.method, call.path, call.query) == ("POST", "/v1.0/security/runHuntingQuery", {})
    assert call.json == {"Query": "EmailEvents | where Subject == '10:30'", "Timespan": "PT1H"}
    assert call.headers["content-type"].startswith("application/json")
    assert result.rows == [ROW]
    row = result.rows[0]
    assert type(row["Subject"]) is str and type(row["NetworkMessageId"]) is str
    assert type(row["Timestamp"]) is str
    assert result.columns[0] == ("Timestamp", "DateTime") and result.partial is False


def test_accepts_capitalised_schema_keys() -> None:
    schema = [{"Name": "Subject", "Type": "String"}]
    with FakeGraph(hunting=lambda q, t: (schema, [{"Subject": "x"}])) as fake:
        result = run(fake)
    assert result.columns == [("Subject", "String")]


@pytest.mark.parametrize(("span", "iso"), [
    (timedelta(minutes=5), "PT5M"), (timedelta(days=1), "P1D"), (timedelta(days=30), "P30D"),
    (timedelta(days=1, hours=2, minutes=3, seconds=4), "P1DT2H3M4S")])
def test_iso_duration(span: timedelta, iso: str) -> None:
    assert iso_duration(span) == iso


def test_bad_timespan_and_empty_query_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        iso_duration(timedelta(0))
    with pytest.raises(ValueError, match="positive"):
        iso_duration(timedelta(seconds=1.5))
    with FakeGraph() as fake, pytest.raises(ValueError, match="empty"):
        run(fake, "  ")


def _quota(q: str, t: str | None) -> tuple[list, list]:
    raise GraphFault(429, "Query was throttled: exceeded the allowed limits (CPU resources).", retry_after=37)


def test_quota_429_is_transient_with_retry_after_and_the_services_message() -> None:
    with FakeGraph(hunting=_quota) as fake, pytest.raises(BackendError) as info:
        run(fake)
    err = info.value
    assert (err.transient, err.retry_after) == (True, 37.0)
    assert str(err) == ("defender: HTTP 429 TooManyRequests: Query was throttled: exceeded the allowed "
                        "limits (CPU resources).")


@pytest.mark.parametrize(("status", "transient"), [(503, True), (504, True), (400, False), (403, False)])
def test_errors_are_raised_never_swallowed(status: int, transient: bool) -> None:
    with FakeGraph(hunting=lambda q, t: ([], [])) as fake, pytest.raises(BackendError) as info:
        fake.inject("POST", "runHuntingQuery$", status, message=f"service said {status}")
        run(fake)
    assert info.value.transient is transient and f"service said {status}" in str(info.value)


def test_sdk_retry_then_success() -> None:
    with FakeGraph(hunting=lambda q, t: ([("A", "String")], [{"A": "1"}])) as fake:
        fake.inject("POST", "runHuntingQuery$", 429, retry_after=1)
        result = run(fake, max_retries=1)
        assert [c.status for c in fake.calls] == [429, 200]
    assert result.rows == [{"A": "1"}]


@pytest.mark.parametrize("payload", [{"schema": [{"name": "A"}], "results": []}, {"results": []},
                                     {"schema": [], "results": ["x"]}])
def test_malformed_responses_are_clear_errors(payload: dict[str, Any]) -> None:
    raises = pytest.raises(BackendError, match="defender: ")
    with FakeGraph(hunting=lambda q, t: payload) as fake, raises as info:
        run(fake)
    assert info.value.transient is False


def test_unreachable_graph_is_transient() -> None:
    with FakeGraph() as fake:
        base = fake.base_url

    async def go() -> QueryResult:
        return await DefenderBackend(make_graph_client(base_url=base, max_retries=0)).run(
            "T", timespan=timedelta(hours=1))

    with pytest.raises(BackendError, match="connection failed") as info:
        asyncio.run(go())
    assert info.value.transient is True
