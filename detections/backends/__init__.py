"""Query backends (defender | sentinel | local) behind one interface, and the factory that picks one.

defender and sentinel pull in the Graph and Azure Monitor SDKs, so they are imported only when
chosen; the local engine (duckdb-kql) is a development dependency and likewise imported on demand.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from core.settings import Settings
from detections.backends.base import BackendError, QueryBackend, QueryResult, TableError

__all__ = ["BackendError", "QueryBackend", "QueryResult", "TableError", "make_backend"]


def make_backend(settings: Settings | None = None, *, credential: Any = None,
                 tables_dir: Path | None = None, now: datetime | None = None,
                 graph_client: Any = None, logs_client: Any = None) -> QueryBackend:
    """The backend to run rules on.

    ``tables_dir`` selects the local engine (``now`` pins ``now()``). Otherwise ``settings.backend``
    decides: ``defender`` uses ``graph_client`` or builds one from ``settings.graph_base_url`` and
    ``credential``; ``sentinel`` uses ``logs_client`` or builds an async ``LogsQueryClient`` with
    ``credential``.
    """
    if tables_dir is not None:
        if now is None:
            raise ValueError("the local engine needs `now` (what now() and ago() mean)")
        from detections.backends.local import LocalBackend

        return LocalBackend(tables_dir, now)
    if settings is None:
        raise ValueError("settings are required unless a tables folder selects the local engine")
    if settings.backend == "defender":
        from detections.backends.defender import DefenderBackend

        if graph_client is None:
            from core.graph import make_graph_client

            graph_client = make_graph_client(base_url=settings.graph_base_url, credential=credential)
        return DefenderBackend(graph_client)
    if settings.backend == "sentinel":
        if not settings.sentinel_workspace_id:
            raise ValueError("app setting RESPONDER_SENTINEL_WORKSPACE_ID is required when the backend "
                             "is sentinel")
        from detections.backends.sentinel import SentinelBackend

        if logs_client is None:
            from azure.monitor.query.aio import LogsQueryClient

            logs_client = LogsQueryClient(credential)
        return SentinelBackend(logs_client, settings.sentinel_workspace_id)
    raise ValueError(f"unknown backend {settings.backend!r} (expected defender or sentinel)")
