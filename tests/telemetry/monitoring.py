"""The alert and workbook queries exactly as infra/app/monitoring.bicep deploys them, and a local engine
over rows shaped like Application Insights' tables to run them on.

The queries come from the Bicep model (tests/infra/bicepmodel.py): the thresholds' ``let`` lines, the
records prelude and the query file, as the template joins them with its parameter defaults.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from detections.backends.local import LocalBackend
from tests.infra import bicepmodel as bm

MONITORING = bm.INFRA / "app" / "monitoring.bicep"
TABLES_FILE = bm.INFRA / "app" / "monitoring" / "appinsights-tables.json"
_ENGINE_TYPES = {"string": "String", "datetime": "DateTime", "int": "Int", "long": "Long", "real": "Real",
                 "dynamic": "Dynamic", "bool": "Bool"}


def monitoring_file(source: bytes | None = None) -> bm.BicepFile:
    return bm.BicepFile(MONITORING, source)


def _env(file: bm.BicepFile, **params: Any) -> bm.Env:
    return file.environment({"logAnalyticsName": "log-x", "applicationInsightsName": "appi-x", **params})


def alert_rules(file: bm.BicepFile | None = None, **params: Any) -> dict[str, dict[str, Any]]:
    """Alert name -> the rule's evaluated properties (one per item of the resource loop)."""
    file = file or monitoring_file()
    env = _env(file, **params)
    (decl,) = file.resources("Microsoft.Insights/scheduledQueryRules")
    assert decl.loop_var and decl.loop_over is not None, "alerts are one resource loop over alertDefinitions"
    out = {}
    for item in env.eval(decl.loop_over):
        out[item["name"]] = env.with_local(decl.loop_var, item).eval(decl.prop("properties"))
    return out


def alert_queries(file: bm.BicepFile | None = None, **params: Any) -> dict[str, str]:
    return {name: p["criteria"]["allOf"][0]["query"] for name, p in alert_rules(file, **params).items()}


def workbook(file: bm.BicepFile | None = None) -> dict[str, Any]:
    file = file or monitoring_file()
    decl = file.resource("Microsoft.Insights/workbooks")
    data = file.evaluate(decl.prop("properties", "serializedData"), _env(file))
    assert isinstance(data, str), "serializedData is a JSON string known before deployment"
    return json.loads(data)


def workbook_queries(file: bm.BicepFile | None = None) -> dict[str, str]:
    return {item["name"]: item["content"]["query"] for item in workbook(file)["items"] if item["type"] == 3}


def tables() -> dict[str, list[list[str]]]:
    return json.loads(TABLES_FILE.read_text(encoding="utf-8"))["tables"]


def engine(now: datetime, traces: Iterable[Mapping[str, Any]] = (),
           requests: Iterable[Mapping[str, Any]] = ()) -> LocalBackend:
    schemas = {name: [(c, _ENGINE_TYPES[t]) for c, t in cols] for name, cols in tables().items()}
    return LocalBackend.from_rows({"traces": list(traces), "requests": list(requests)}, now,
                                  source="telemetry", schemas=schemas)


def run(query: str, now: datetime, traces: Iterable[Mapping[str, Any]] = (),
        requests: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    result = asyncio.run(engine(now, traces, requests).run(query, timespan=timedelta(days=2)))
    return result.rows


def at(rows: Iterable[Mapping[str, Any]], when: datetime) -> list[dict[str, Any]]:
    """Copies of ``rows`` stamped ``when`` (ISO 8601, as the traces file has it)."""
    stamp = when.isoformat().replace("+00:00", "Z")
    return [{**r, "timestamp": stamp} for r in rows]


def stamp_of(row: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(row["timestamp"]).replace("Z", "+00:00"))


def record(row: Mapping[str, Any]) -> dict[str, Any]:
    message = str(row["message"])
    assert message.startswith("xdr-telemetry "), message[:80]
    return json.loads(message[len("xdr-telemetry "):])
