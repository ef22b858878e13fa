"""Microsoft Sentinel (Log Analytics) through azure-monitor-query's async ``LogsQueryClient``.

``query_workspace(workspace_id, query, timespan=...)`` returns a ``LogsQueryResult`` or, when the
service ran out of time or memory part-way, a ``LogsQueryPartialResult``: that is reported as
``partial=True`` with the service's reason, never passed off as complete. Only the first table
(``PrimaryResult``) is used: a rule's query yields one result set.

Values: azure-monitor-query turns ``datetime`` cells into ``datetime`` objects (6 fractional digits)
and leaves ``dynamic`` cells as the JSON text Log Analytics sends; detections.backends.values gives both
the shape the defender and local backends deliver (ISO 8601 UTC text; lists and dicts), so rules,
findings and cards see the same values from every backend.

Tables: Sentinel's EmailEvents is streamed (a new row per change of delivery location, no Latest*
columns). Queries that read it are sent behind the prelude of detections.platforms, which gives the
table advanced hunting's shape, so one rule text means the same on both services.

Errors: ``HttpResponseError`` 429/5xx and connection failures are transient (with Retry-After when
given); 400 (a KQL error), 403 (no access to the workspace) and the like are permanent. The client's
own retry policy (azure-core) has retried transient errors before they reach here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.monitor.query import LogsQueryPartialResult

from core.retry_after import parse_retry_after
from detections.backends.base import BackendError, QueryResult
from detections.backends.values import normalise_rows
from detections.platforms import for_platform


def _retry_after(err: HttpResponseError) -> float | None:
    resp = getattr(err, "response", None)
    return parse_retry_after(resp.headers.get("Retry-After") if resp is not None else None)


def _table(tables: list[Any] | None) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    if not tables:
        return [], []
    t = tables[0]
    columns = list(zip(t.columns, t.columns_types, strict=True))
    rows = [dict(zip(t.columns, row, strict=True)) for row in t.rows]
    return columns, normalise_rows(columns, rows)


class SentinelBackend:
    name = "sentinel"

    def __init__(self, logs_client: Any, workspace_id: str):
        if not workspace_id:
            raise ValueError("the sentinel backend needs a Log Analytics workspace id")
        self._client = logs_client
        self.workspace_id = workspace_id

    async def run(self, query: str, *, timespan: timedelta, shape: str = "defender") -> QueryResult:
        if not query.strip():
            raise ValueError("the query is empty")
        if timespan <= timedelta(0):
            raise ValueError(f"timespan must be positive, not {timespan!r}")
        try:
            sent = for_platform(query, "sentinel", shape)
            result = await self._client.query_workspace(self.workspace_id, sent, timespan=timespan)
        except HttpResponseError as err:
            status = err.status_code
            transient = status is None or status == 429 or status >= 500
            raise BackendError(f"sentinel: HTTP {status}: {err.message}", transient=transient,
                               retry_after=_retry_after(err)) from None
        except (ServiceRequestError, ServiceResponseError) as err:
            raise BackendError(f"sentinel: connection failed: {err.message}", transient=True) from None
        if isinstance(result, LogsQueryPartialResult):
            columns, rows = _table(result.partial_data)
            e = result.partial_error
            reason = f"{getattr(e, 'code', '')}: {getattr(e, 'message', '')}".strip(": ") or "partial result"
            return QueryResult(columns=columns, rows=rows, partial=True, partial_reason=reason)
        columns, rows = _table(result.tables)
        return QueryResult(columns=columns, rows=rows)
