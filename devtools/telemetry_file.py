"""Telemetry records to a JSON Lines file shaped like Application Insights' ``traces`` table.

In Azure the Functions host sends each ``xdr.telemetry`` log line to ``traces`` (message, severityLevel,
customDimensions, ...). Locally (the demo, the tests) this handler writes the same rows to a file, so the
alert and workbook queries (infra/app/monitoring/) run unchanged on the local KQL engine over them.
Columns and severity numbers: https://learn.microsoft.com/azure/azure-monitor/reference/tables/apptraces
(classic names: timestamp, message, severityLevel, customDimensions, operation_Name, cloud_RoleName).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.telemetry import log as telemetry_log

# Application Insights SeverityLevel: Verbose 0, Information 1, Warning 2, Error 3, Critical 4.
_SEVERITY = {logging.DEBUG: 0, logging.INFO: 1, logging.WARNING: 2, logging.ERROR: 3, logging.CRITICAL: 4}
_LEVEL_NAMES = {0: "Debug", 1: "Information", 2: "Warning", 3: "Error", 4: "Critical"}


def traces_row(record: logging.LogRecord, role: str = "xdr-responder-local") -> dict[str, Any]:
    """One ``traces`` row for a log record (the message as the handler formats it, i.e. cleaned)."""
    severity = _SEVERITY.get(record.levelno, 1)
    return {
        "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
        "message": record.getMessage(),
        "severityLevel": severity,
        "customDimensions": {"Category": f"Function.{record.name}.User", "LogLevel": _LEVEL_NAMES[severity]},
        "operation_Name": "",
        "cloud_RoleName": role,
    }


class TracesFileHandler(logging.Handler):
    def __init__(self, path: Path):
        super().__init__(logging.INFO)
        self.path = path
        self.rows = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(traces_row(record), ensure_ascii=False) + "\n")
            self.rows += 1
        except Exception:   # a log handler never raises into the code that logs
            self.handleError(record)


@contextlib.contextmanager
def telemetry_to_file(path: Path) -> Iterator[TracesFileHandler]:
    """While open, telemetry records go to ``path`` (created afresh) and not to the console."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("", encoding="utf-8")
    handler = TracesFileHandler(path)
    propagate = telemetry_log.propagate
    telemetry_log.addHandler(handler)
    telemetry_log.propagate = False
    try:
        yield handler
    finally:
        telemetry_log.removeHandler(handler)
        telemetry_log.propagate = propagate


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
