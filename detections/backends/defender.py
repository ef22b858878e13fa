"""Defender XDR advanced hunting through Graph ``runHuntingQuery``, rows as the service sent them.

The request goes through msgraph-sdk's request adapter (its auth, RetryHandler and base URL), but the
response is read as bytes and parsed here with ``json``: the SDK's own model parses result rows as open
types and turns strings that look like dates, GUIDs or times into Python objects (a Subject "10:30"
would become a ``time``), and rules must see what the service sent.

Values: only cells of datetime and dynamic columns are reshaped (detections.backends.values: the same
values the sentinel and local backends give); every other cell, strings above all, stays as sent.

Row cap: advanced hunting returns at most 100,000 rows per query ("Results can return up to 100,000
rows", https://learn.microsoft.com/defender-xdr/api-advanced-hunting, quotas; the same limit for the
Graph API, https://learn.microsoft.com/defender-endpoint/api/run-advanced-query-api, limitations), and
says nothing when it cut. A result of that many rows is therefore marked partial, with the reason.

Errors: a 429 (the ~45 calls/minute quota or the 15-minute CPU budget; the message says which) and
5xx/timeouts raise ``BackendError(transient=True, retry_after=...)`` carrying the service's message;
400 (a KQL error) and 401/403 (missing ThreatHunting.Read.All) raise a permanent ``BackendError``.
Nothing is swallowed. The SDK's RetryHandler may already have retried a 429/503 below this code
(honouring Retry-After) before the error reaches here.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
from kiota_abstractions.api_error import APIError
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from core.retry_after import parse_retry_after
from detections.backends.base import BackendError, QueryResult
from detections.backends.values import normalise_rows

# The documented path (the SDK's own builder posts to .../microsoft.graph.security.runHuntingQuery;
# Graph accepts both).
URL_TEMPLATE = "{+baseurl}/security/runHuntingQuery"
# Most rows one hunting result holds (module docstring); a result this long may have been cut.
MAX_ROWS = 100_000


def iso_duration(span: timedelta) -> str:
    """A timedelta as an ISO 8601 duration (``PT1H``, ``P1DT2H30M``), what ``Timespan`` expects."""
    total = int(span.total_seconds())
    if total <= 0 or span != timedelta(seconds=total):
        raise ValueError(f"timespan must be a positive whole number of seconds, not {span!r}")
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")


def _retry_after(headers: Any) -> float | None:
    return parse_retry_after(headers.get("retry-after") if headers is not None else None)


def parse_response(body: bytes) -> QueryResult:
    """``{"schema": [{name,type}|{Name,Type}], "results": [{...}]}`` -> QueryResult.

    Only datetime and dynamic cells are reshaped (detections.backends.values)."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BackendError(f"defender: hunting response is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BackendError("defender: hunting response is not a JSON object")
    schema = data.get("schema", data.get("Schema"))
    rows = data.get("results", data.get("Results"))
    if not isinstance(schema, list) or not isinstance(rows, list):
        raise BackendError("defender: hunting response lacks `schema` or `results`")
    columns: list[tuple[str, str]] = []
    for col in schema:
        name = col.get("name", col.get("Name")) if isinstance(col, dict) else None
        ctype = col.get("type", col.get("Type")) if isinstance(col, dict) else None
        if not isinstance(name, str) or not isinstance(ctype, str):
            raise BackendError(f"defender: schema entry without name/type: {col!r}")
        columns.append((name, ctype))
    if not all(isinstance(r, dict) for r in rows):
        raise BackendError("defender: a result row is not a JSON object")
    result = QueryResult(columns=columns, rows=normalise_rows(columns, rows))
    if len(rows) >= MAX_ROWS:
        result.partial = True
        result.partial_reason = (f"{len(rows):,} rows: advanced hunting returns at most {MAX_ROWS:,} rows "
                                 "per query, so rows beyond that were probably left out; narrow the query "
                                 "or shorten its window")
    return result


class DefenderBackend:
    name = "defender"

    def __init__(self, graph_client: Any):
        self._adapter = graph_client.request_adapter

    def request(self, query: str, timespan: timedelta) -> RequestInformation:
        if not query.strip():
            raise ValueError("the query is empty")
        info = RequestInformation(Method.POST, URL_TEMPLATE, {})
        info.headers.try_add("Accept", "application/json")
        body = {"Query": query, "Timespan": iso_duration(timespan)}
        info.set_stream_content(json.dumps(body).encode("utf-8"), "application/json")
        return info

    async def run(self, query: str, *, timespan: timedelta, shape: str = "defender") -> QueryResult:
        info = self.request(query, timespan)
        try:
            body = await self._adapter.send_primitive_async(info, "bytes", {"XXX": ODataError})
        except APIError as exc:
            status = exc.response_status_code
            err = getattr(exc, "error", None)
            message = getattr(err, "message", None) or exc.message or type(exc).__name__
            code = getattr(err, "code", None)
            transient = status is None or status == 429 or status >= 500
            raise BackendError(f"defender: HTTP {status}" + (f" {code}" if code else "") + f": {message}",
                               transient=transient, retry_after=_retry_after(exc.response_headers)) from None
        except httpx.TimeoutException:
            raise BackendError("defender: hunting query timed out", transient=True) from None
        except httpx.TransportError as exc:
            raise BackendError(f"defender: connection failed: {type(exc).__name__}", transient=True) from None
        if not body:
            raise BackendError("defender: empty hunting response")
        return parse_response(body)
