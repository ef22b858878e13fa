"""The query-backend interface: one KQL query in, the service's rows out.

Rows are as the service sent them, except that datetime and dynamic cells get one shape whichever
service sent them (detections/backends/values.py), and a Sentinel backend sends EmailEvents queries
behind its prelude (detections/platforms.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable


@dataclass
class QueryResult:
    columns: list[tuple[str, str]]  # (name, KQL type name) in result order
    rows: list[dict[str, Any]]
    partial: bool = False
    partial_reason: str | None = None
    # What the caller should know about a complete result, e.g. the local engine read a table that had
    # no file (so "0 rows" means "no data", not "nothing found"). Shown to people, never fatal.
    notes: list[str] = field(default_factory=list)


class TableError(ValueError):
    """Input table data is malformed (bad input, not a backend failure); names file, line and column."""


class BackendError(Exception):
    """The backend could not run the query.

    ``transient`` says a retry may succeed (throttling, timeouts, 5xx); ``retry_after`` is the
    service's hint in seconds when it gave one.
    """

    def __init__(self, message: str, *, transient: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


@runtime_checkable
class QueryBackend(Protocol):
    name: str

    async def run(self, query: str, *, timespan: timedelta, shape: str = "defender") -> QueryResult: ...
