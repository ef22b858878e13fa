"""SentinelBackend through the real azure-monitor-query async client against a loopback Log Analytics."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.pipeline.policies import HeadersPolicy
from azure.monitor.query.aio import LogsQueryClient

from detections.backends.base import BackendError, QueryResult
from detections.backends.sentinel import SentinelBackend
from detections.platforms import SENTINEL_EMAILEVENTS_VIEW

WORKSPACE = "5d3c1c0a-2b4e-4f6a-9c8d-7e6f5a4b3c2d"
TOKEN = "test-token-not-real"


class FakeLogAnalytics:
    """POST /v1/workspaces/{id}/query on 127.0.0.1: records requests, answers from a queue."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[tuple[int, dict[str, Any], dict[str, str]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append({"path": self.path, "json": json.loads(body),
                                      "authorization": self.headers.get("Authorization")})
                status, payload, headers = fake.answers.pop(0)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class LoopbackHeaders(HeadersPolicy):
    """Test only: the real bearer-token policy refuses plain http; allow it for the loopback server."""

    def on_request(self, request: Any) -> None:
        super().on_request(request)
        request.context["enforce_https"] = False


SCOPES: list[tuple[str, ...]] = []


class Credential:
    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        SCOPES.append(scopes)
        return AccessToken(TOKEN, 4_102_444_800)

    async def close(self) -> None:
        return

    async def __aenter__(self) -> Credential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return


@pytest.fixture
def la() -> Iterator[FakeLogAnalytics]:
    server = FakeLogAnalytics()
    SCOPES.clear()
    yield server
    server.close()


def run(la: FakeLogAnalytics, query: str = "EmailEvents | take 1",
        span: timedelta = timedelta(hours=1)) -> QueryResult:
    async def go() -> QueryResult:
        client = LogsQueryClient(Credential(), endpoint=la.url, headers_policy=LoopbackHeaders(),
                                 retry_total=0)
        async with client:
            return await SentinelBackend(client, WORKSPACE).run(query, timespan=span)
    return asyncio.run(go())


TABLE = {"name": "PrimaryResult",
         "columns": [{"name": "TimeGenerated", "type": "datetime"}, {"name": "Subject", "type": "string"},
                     {"name": "NetworkMessageId", "type": "string"}, {"name": "Count", "type": "long"}],
         "rows": [["2026-11-20T11:50:00Z", "10:30", "0c2c7bd4-9a5e-4d1b-a2a5-08dc18c52e6d", 3],
                  ["2026-11-20T11:51:02.5Z", "2026-11-20", "x", None]]}


def test_query_timespan_token_and_rows_as_sent(la: FakeLogAnalytics) -> None:
    la.answers.append((200, {"tables": [TABLE]}, {}))
    result = run(la, "CloudAppEvents | where ObjectName == '10:30'", timedelta(hours=1))
    [req] = la.requests
    assert req["path"] == f"/v1/workspaces/{WORKSPACE}/query"
    assert req["json"]["query"] == "CloudAppEvents | where ObjectName == '10:30'"  # no prelude needed
    assert req["json"]["timespan"] == "PT3600.0S"   # azure-monitor-query's own ISO 8601 rendering
    assert list(SCOPES) == [(f"{la.url}/.default",)]
    assert req["authorization"] == f"Bearer {TOKEN}"
    assert result.columns == [("TimeGenerated", "datetime"), ("Subject", "string"),
                              ("NetworkMessageId", "string"), ("Count", "long")]
    assert result.rows == [
        {"TimeGenerated": "2026-11-20T11:50:00Z", "Subject": "10:30",
         "NetworkMessageId": "0c2c7bd4-9a5e-4d1b-a2a5-08dc18c52e6d", "Count": 3},
        {"TimeGenerated": "2026-11-20T11:51:02.500000Z", "Subject": "2026-11-20", "NetworkMessageId": "x",
         "Count": None}]
    assert (result.partial, result.partial_reason) == (False, None)


def test_partial_result_is_reported_as_partial(la: FakeLogAnalytics) -> None:
    la.answers.append((200, {"tables": [TABLE], "error": {
        "code": "PartialError", "message": "There were some errors when processing your query.",
        "details": [{"code": "EngineError", "message": "Query exceeded memory limits."}]}}, {}))
    result = run(la)
    assert result.partial is True
    assert result.partial_reason == "PartialError: There were some errors when processing your query."
    assert len(result.rows) == 2


@pytest.mark.parametrize(("status", "transient", "retry_after"), [
    (429, True, 20.0), (503, True, None), (400, False, None), (403, False, None)])
def test_errors_become_backend_errors(la: FakeLogAnalytics, status: int, transient: bool,
                                      retry_after: float | None) -> None:
    headers = {"Retry-After": str(int(retry_after))} if retry_after else {}
    la.answers.append((status, {"error": {"code": "BadArgumentError", "message": f"said {status}"}}, headers))
    with pytest.raises(BackendError) as info:
        run(la)
    assert (info.value.transient, info.value.retry_after) == (transient, retry_after)
    assert str(info.value).startswith(f"sentinel: HTTP {status}: ") and f"said {status}" in str(info.value)


def test_bad_input_is_refused_before_any_call(la: FakeLogAnalytics) -> None:
    with pytest.raises(ValueError, match="empty"):
        run(la, " ")
    with pytest.raises(ValueError, match="positive"):
        run(la, "T", timedelta(0))
    with pytest.raises(ValueError, match="workspace"):
        SentinelBackend(object(), "")
    assert la.requests == []


def test_emailevents_queries_are_sent_behind_the_sentinel_prelude(la: FakeLogAnalytics) -> None:
    # Sentinel's streamed EmailEvents has no Latest* columns and a row per location change: the query
    # goes out behind the view that gives it advanced hunting's shape (detections/platforms.py).
    la.answers.append((200, {"tables": [TABLE]}, {}))
    query = 'EmailEvents | where LatestDeliveryLocation =~ "Inbox/folder"'
    run(la, query)
    sent = la.requests[0]["json"]["query"]
    assert sent == SENTINEL_EMAILEVENTS_VIEW + "\n" + query
    assert "arg_max(TimeGenerated, *)" in sent and "by NetworkMessageId, RecipientEmailAddress" in sent
