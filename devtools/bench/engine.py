"""Engine cost: the seed rule (consumer-sender-to-shared-mailboxes) on 10k, 100k and 1M EmailEvents rows.

Each size is a generated sample tenant (the same noise shapes and planted campaign, more of it),
bulk-loaded into the local engine; the query is the rule as bound for the demo tenant, timed as the
median of several runs after one warm-up. Generation and load times are reported beside it.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from core.tenant import load_tenant_config
from detections.backends.local import LocalBackend
from detections.catalog import load_catalog
from detections.params import bind_query, resolve_params
from devtools.sample import SAMPLE_NOW, generate
from devtools.sample.bulkload import bulk_load

RULE = "consumer-sender-to-shared-mailboxes"


def run(sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000), repeats: int = 5) -> dict[str, Any]:
    rule = load_catalog()[RULE]
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
            t0 = time.perf_counter()
            gen = generate(Path(tmp), size="medium", email_events=n)
            t1 = time.perf_counter()
            backend = LocalBackend(None, SAMPLE_NOW)
            bulk_load(backend, gen.tables_dir)
            t2 = time.perf_counter()
            tenant = load_tenant_config(gen.tenant_path)
            query = bind_query(rule, resolve_params(rule, tenant, {}))
            result = asyncio.run(backend.run(query, timespan=timedelta(hours=1)))  # warm-up
            times = []
            for _ in range(repeats):
                s = time.perf_counter()
                asyncio.run(backend.run(query, timespan=timedelta(hours=1)))
                times.append(time.perf_counter() - s)
            backend.con.close()
            rows.append(
                {
                    "email_events": n,
                    "generate_s": t1 - t0,
                    "load_s": t2 - t1,
                    "query_s_median": statistics.median(times),
                    "query_s_max": max(times),
                    "result_rows": len(result.rows),
                }
            )
    return {"rule": RULE, "repeats": repeats, "sizes": rows}
