"""Pipeline overhead: the demo's wall times, and the worker's cost per queued request.

1. The whole demo on the small tenant (scan through the defender backend against the fake Graph,
   enqueue on Azurite, worker over the queue, verify), phase by phase.
2. The queue worker alone, ``process_message`` per request on an Azurite ledger against the fake
   Graph (Defender strategy): once with the run registered first (the worker then submits a run's
   requests in one Graph call and later messages find them done) and once without (one call each).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.graph import make_graph_client
from core.request import make_request
from core.settings import Settings
from core.tenant import TenantConfig
from detections.catalog import load_catalog
from devtools.azurite import running_azurite
from devtools.demo import DemoOptions, run_demo
from devtools.fakegraph import FakeGraph
from remediation.ledger import Ledger

RULE = "consumer-sender-to-shared-mailboxes"
BOXES = ["support@contoso.com", "sales@contoso.com", "info@contoso.com", "jobs@contoso.com"]


def _demo() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        result = asyncio.run(run_demo(DemoOptions(output=Path(tmp), render=False)))
        requests = sum(len(r.requests) for r in result.runs)
    t = result.timings
    core = t["scan"] + t["enqueue"] + t["remediate"] + t.get("verify", 0.0)
    return {
        "requests": requests,
        "timings_s": t,
        "scan_queue_remediate_verify_s": core,
        "worker_s_per_request": t["remediate"] / requests if requests else None,
    }


def _requests(n: int, run_id: str) -> list[dict[str, Any]]:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    return [
        make_request(
            rule=RULE,
            action="move_to_junk",
            mode="auto",
            target={"network_message_id": f"{run_id}-{i:05d}", "recipient": BOXES[i % len(BOXES)]},
            evidence={"Subject": "bench"},
            detected_at=now,
            run={"id": run_id, "index": i, "total": n},
            severity="Medium",
            rule_name="bench",
        )
        for i in range(n)
    ]


async def _worker(conn: str, fake: FakeGraph, n: int, *, grouped: bool) -> dict[str, Any]:
    from remediation.worker import Worker

    settings = Settings.from_env(
        {"RESPONDER_GRAPH_BASE_URL": fake.base_url, "RESPONDER_EMAIL_STRATEGY": "defender"}, require=False
    )
    tenant = TenantConfig.from_mapping(
        {"params": {"protected_recipients": BOXES}, "rules": {RULE: {"max_targets": n}}}, source="bench"
    )
    name = "benchgrouped" if grouped else "benchsingle"
    ledger = Ledger.from_connection_string(conn, name)
    graph = make_graph_client(base_url=fake.base_url, credential=None, max_retries=0)
    worker = Worker(settings, tenant, load_catalog(), ledger, graph, None, None)
    requests = _requests(n, name)
    fake.clear_calls()
    start = time.perf_counter()
    if grouped:
        worker.register(requests)
    states: dict[str, int] = {}  # outcomes returned (a grouped first message reports its siblings too)
    for req in requests:
        for o in await worker.process_message(json.dumps(req)):
            states[o.state] = states.get(o.state, 0) + 1
    elapsed = time.perf_counter() - start
    graph_calls = len(fake.calls_to("POST", "remediate"))
    return {
        "requests": n,
        "seconds": elapsed,
        "ms_per_request": 1000 * elapsed / n,
        "outcomes_by_state": states,
        "remediate_calls": graph_calls,
    }


def run(worker_requests: int = 200) -> dict[str, Any]:
    out: dict[str, Any] = {"demo": _demo()}
    with running_azurite() as az, FakeGraph() as fake:
        out["worker_grouped"] = asyncio.run(
            _worker(az.connection_string, fake, worker_requests, grouped=True)
        )
        out["worker_one_call_each"] = asyncio.run(
            _worker(az.connection_string, fake, worker_requests, grouped=False)
        )
    return out
