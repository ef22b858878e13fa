"""The outcome card's cost per message in a large run, before and after the per-run counters (issue 13).

``python -m devtools.bench.outcome_card [--requests N] [--sample N]`` seeds one run of N settled requests
in an Azurite ledger (entity group transactions of 100), then measures:

* before: what ``app.runs.outcome_card`` did after every message until the per-run counters, a read of
  the whole run (``Ledger.list(rule, run_id)``), timed three times;
* after: ``outcome_card`` itself for ``--sample`` messages of the run (its own row, the run's counter,
  one transaction each), then the run's last message, which reads the run once and sends the card.

Entities read are counted by a wrapping TableClient; seconds are wall-clock on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from azure.data.tables import TableClient

from app.runs import outcome_card
from core.request import make_request
from devtools.azurite import running_azurite
from notifications.teams import MemoryNotifier
from remediation.ledger import MARKERS, Ledger, Record, _safe_key, _to_entity
from remediation.run_counters import count_key

RULE, RUN = "bench-rule", "bench-run"


class Counting:
    """A TableClient that counts the entities it reads."""

    def __init__(self, inner: TableClient) -> None:
        self.inner, self.read = inner, 0

    def get_entity(self, *a: Any, **kw: Any) -> Any:
        self.read += 1
        return self.inner.get_entity(*a, **kw)

    def query_entities(self, *a: Any, **kw: Any) -> Any:
        for ent in self.inner.query_entities(*a, **kw):
            self.read += 1
            yield ent

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _requests(n: int) -> list[dict[str, Any]]:
    at = datetime(2026, 11, 20, 12, tzinfo=UTC)
    return [make_request(rule=RULE, action="move_to_junk", mode="auto", evidence={"Subject": "Invoice"},
                         detected_at=at, target={"network_message_id": f"nm-{i}",
                                                 "recipient": f"user{i % 500}@contoso.com"},
                         run={"id": RUN, "index": i, "total": n, "rows": n})
            for i in range(n)]


def _seed(table: TableClient, requests: list[dict[str, Any]]) -> None:
    now = "2026-11-20T12:05:00Z"
    for start in range(0, len(requests), 100):
        ops = []
        for req in requests[start:start + 100]:
            rec = Record(request_id=req["id"], rule=RULE, action=req["action"], target=req["target"],
                         mode="auto", state="skipped", request=req, run_id=RUN, detail="already in Junk",
                         created_at=now, updated_at=now, state_times={"received": now, "skipped": now})
            ops.append(("create", _to_entity(rec)))
        table.submit_transaction(ops)


def run(n: int, sample: int) -> dict[str, Any]:
    with running_azurite() as az:
        inner = TableClient.from_connection_string(az.connection_string, "benchoutcome")
        inner.create_table()
        requests = _requests(n)
        _seed(inner, requests)
        table = Counting(inner)
        ledger = Ledger(table)  # type: ignore[arg-type]
        before_s = []
        for _ in range(3):
            table.read = 0
            t0 = time.perf_counter()
            ledger.list(rule=RULE, run_id=RUN)
            before_s.append(time.perf_counter() - t0)
        before_read = table.read
        notifier = MemoryNotifier()

        def deliver(req: dict[str, Any]) -> tuple[float, int]:
            table.read = 0
            t0 = time.perf_counter()
            asyncio.run(outcome_card(ledger, notifier, json.dumps(req), backend="defender", tenant_id=None,
                                     rule_names={}))
            return time.perf_counter() - t0, table.read

        after = [deliver(r) for r in requests[:sample]]
        # Jump the counter to one short of the run (the messages in between cost what the sample cost).
        key = _safe_key(count_key(RULE, RUN))
        inner.upsert_entity({"PartitionKey": MARKERS, "RowKey": key, "key": count_key(RULE, RUN), "n": n - 1})
        last_s, last_read = deliver(requests[-1])
        assert len(notifier.cards) == 1, "the run's last message must send the outcome card"
        per_s = statistics.mean(s for s, _ in after)
        return {"requests": n, "sample": sample,
                "before": {"per_message_s": statistics.median(before_s), "entities_read": before_read,
                           "run_worker_hours": statistics.median(before_s) * n / 3600},
                "after": {"per_message_s": per_s, "entities_read_max": max(r for _, r in after),
                          "last_message_s": last_s, "last_message_entities_read": last_read,
                          "run_worker_hours": (per_s * (n - 1) + last_s) / 3600}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.bench.outcome_card", description=__doc__)
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--sample", type=int, default=200)
    args = p.parse_args(argv)
    res = run(args.requests, args.sample)
    b, a = res["before"], res["after"]
    print(json.dumps(res, indent=2))
    print(f"| re-read of the run (before) | {b['entities_read']} | {b['per_message_s'] * 1000:.0f} ms | "
          f"{b['run_worker_hours'] * 60:.0f} min |")
    print(f"| per-run counter (after) | {a['entities_read_max']} (last message: "
          f"{a['last_message_entities_read']}) | {a['per_message_s'] * 1000:.0f} ms (last: "
          f"{a['last_message_s'] * 1000:.0f} ms) | {a['run_worker_hours'] * 60:.1f} min |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
