"""``python -m responder.bench chaos``: remediation requests through the real worker path under faults.

``python -m responder.bench chaos [--requests N] [--fault-rate R] [--faults KINDS] [--workers W]
[--scenario NAME]... [--json] [--seed S]``

Per scenario: a fresh fake Graph/Exchange (devtools/chaos/fake.py) seeded with the tenant the requests
act on, a fresh ledger table and queues on Azurite, the requests registered as the app registers a run
and enqueued, then ``W`` worker processes (devtools/chaos/host.py: ``Worker.process_message`` driven like
the Functions host, poison queue included). The *fault phase* lasts until every message has been
delivered once; then faults stop and the workers keep delivering until both queues and their poison
queues are empty (bounded by ``--drain-timeout``). The judge (devtools/chaos/judge.py) then compares the
ledger with the fake.

Scenarios: ``faults`` (a fault on a share R of all Graph and Exchange calls, kinds from ``--faults``),
``duplicate-delivery`` (a share R of deliveries doubled at the same time), ``worker-killed`` (in a share R
of deliveries the worker process SIGKILLs itself at its 1st, 2nd or 3rd Graph/Exchange call, just before
sending it or just after the answer; a new process takes its place),
``ledger-errors`` (a share R of the ledger's Table calls fail, before or after the write),
``all`` (everything at once). Timings (lease, visibility) are the app's divided by 15, see ``TIMING``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.settings import ROOT

SCENARIOS = ("faults", "duplicate-delivery", "worker-killed", "ledger-errors", "all")
PLANTS = ("lose", "act-twice", "mismatch")
# The app's timings (host.json, Worker defaults) divided by 15, so a run takes minutes, not hours:
# claim lease 5 min -> 20 s; host visibilityTimeout (wait before a failed message is retried) 2 min ->
# 8 s; a running message's invisibility (the host renews it) -> 30 s. The Graph and Exchange clients'
# timeout is 2 s (the app's is 180 s and 60 s): shorter than scaled, so a delivery's time stays well
# inside the lease, which only makes the harness kinder to the worker. maxDequeueCount stays 5.
TIMING = {"lease_s": 20.0, "retry_visibility_s": 8, "invisible_s": 30, "client_timeout": 2.0,
          "max_dequeue": 5}
# The verify timer (app/bootstrap.py VERIFY_DEFAULT: every 5 minutes) on a fake clock, so no waiting: the
# first round just past the short grace (Worker's unconfirmed_grace), then one period apart.
VERIFY_PERIOD = timedelta(minutes=5)
VERIFY_ROUNDS = 4


def _scenario_faults(name: str, rate: float) -> dict[str, float]:
    on = {"graph": 0.0, "duplicate": 0.0, "kill": 0.0, "ledger": 0.0}
    keys = {"faults": ("graph",), "duplicate-delivery": ("duplicate",), "worker-killed": ("kill",),
            "ledger-errors": ("ledger",), "all": ("graph", "duplicate", "kill", "ledger")}[name]
    return {k: (rate if k in keys else 0.0) for k in on}


class _Pool:
    """W worker processes; one that died (killed itself: worker-killed) is replaced."""

    def __init__(self, config: Path, log: Path, n: int) -> None:
        self.config, self.log = config, log
        self.procs = [self._start() for _ in range(n)]
        self.kills = 0

    def _start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as err:
            return subprocess.Popen([sys.executable, "-m", "devtools.chaos.host", str(self.config)],
                                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)

    def respawn_dead(self) -> None:
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                self.kills += p.returncode == -signal.SIGKILL
                self.procs[i] = self._start()

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGKILL)
        for p in self.procs:
            p.wait()


def _count(conn: str, names: list[str]) -> int:
    from azure.storage.queue import QueueClient

    total = 0
    for n in names:
        props = QueueClient.from_connection_string(conn, n).get_queue_properties()
        total += props.approximate_message_count or 0
    return total


def run_scenario(name: str, conn: str, *, requests: int, rate: float, kinds: tuple[str, ...], workers: int,
                 seed: int, plant: str | None = None, drain_timeout: float = 600.0,
                 fault_timeout: float = 900.0, timing: dict[str, Any] | None = None,
                 inject: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One scenario (module doc). The fault phase ends when every message was delivered once, or after
    ``fault_timeout`` seconds; the drain after it is bounded by ``drain_timeout``. ``timing`` overrides
    ``TIMING`` (the harness's own tests shorten the waits); ``inject``: faults aimed at one call
(``FakeGraph.inject`` keyword arguments), for the harness's own tests."""
    from azure.storage.queue import QueueClient

    from devtools.chaos.fake import FAULT_KINDS, ChaosFake
    from devtools.chaos.judge import judge
    from devtools.chaos.workload import build, seed_fake, tenant_mapping
    from remediation.ledger import Ledger

    faults = _scenario_faults(name, rate)
    w = build(requests, seed)
    tag = uuid.uuid4().hex[:10]
    ledger_name, slots = f"chaos{tag}", f"chaosslots{tag}"
    queues = {s: f"chaos-{s}-{tag}" for s in w.queues}
    ledger = Ledger.from_connection_string(conn, ledger_name)
    from azure.data.tables import TableClient

    TableClient.from_connection_string(conn, slots).create_table()
    for q in queues.values():
        QueueClient.from_connection_string(conn, q).create_queue()
        QueueClient.from_connection_string(conn, q + "-poison").create_queue()
    tmp = Path(tempfile.mkdtemp(prefix="chaos-"))
    with ChaosFake(client_timeout=TIMING["client_timeout"]) as fake:
        seed_fake(fake, w)
        for f in inject or []:
            fake.inject(**f)
        for reqs in w.queues.values():   # the app registers a run before enqueueing it (app/runs.py)
            for r in reqs:
                ledger.receive(r)
        for s, reqs in w.queues.items():
            qc = QueueClient.from_connection_string(conn, queues[s])
            for r in reqs:
                qc.send_message(json.dumps(r))
        cfg = {"dir": str(tmp), "seed": seed, "conn": conn, "ledger": ledger_name, "slots": slots,
               "queues": queues, "graph": fake.base_url, "exchange": fake.exchange_base_url,
               "tenant_id": fake.tenant_id, "tenant": tenant_mapping(requests), "graph_retries": 3,
               "duplicate_rate": faults["duplicate"], "kill_rate": faults["kill"],
               "ledger_fault_rate": faults["ledger"],
               "plant": plant, **TIMING, **(timing or {})}
        config = tmp / "config.json"
        config.write_text(json.dumps(cfg), encoding="utf-8")
        (tmp / "faults_on").touch()
        fake.chaos(faults["graph"], kinds, seed)
        start = time.perf_counter()
        pool = _Pool(config, tmp / "workers.log", workers)
        names = [q for base in queues.values() for q in (base, base + "-poison")]
        fault_phase_s = None
        try:
            while True:
                time.sleep(0.5)
                pool.respawn_dead()   # a worker that killed itself (worker-killed) is replaced at once
                if fault_phase_s is None:
                    if _delivered(tmp) >= requests or time.perf_counter() - start > fault_timeout:
                        fault_phase_s = time.perf_counter() - start
                        fake.chaos(0.0)
                        (tmp / "faults_on").unlink()
                        drain_until = time.monotonic() + drain_timeout
                    continue
                if _count(conn, names) == 0 or time.monotonic() > drain_until:
                    break
        finally:
            pool.stop()
        left = _count(conn, names)
        fake.chaos(faults["graph"], kinds, seed + 1)   # a resubmission meets the scenario's faults too
        try:
            rounds = asyncio.run(verify_rounds(fake, conn, ledger_name, w, requests,
                                               timing={**TIMING, **(timing or {})}))
        finally:
            fake.chaos(0.0)
        wall = time.perf_counter() - start
        verdict = judge(w.queues, fake, ledger)
        label = name
        if faults["graph"] and set(kinds) != set(FAULT_KINDS):
            label += f" ({', '.join(kinds)})"   # e.g. "faults (503-after)"
        out = {"name": label + (f" (planted: {plant})" if plant else ""), **_public(verdict),
               "undrained": left, "verify_rounds": rounds, "wall_s": round(wall, 1),
               "fault_phase_s": round(fault_phase_s or wall, 1), "calls": len(fake.calls),
               "faults_injected": dict(fake.faults_by_kind), "workers_killed": pool.kills,
               "fault_rate": rate, "workers": workers}
        if plant == "mismatch":
            out["falsified"] = sorted(_ids(tmp, "falsified-*.txt"))
    shutil.rmtree(tmp, ignore_errors=True)
    return out


class _Clock:
    """The ledger's clock during verification: real time plus whatever the rounds advanced it by."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


async def verify_rounds(fake: Any, conn: str, ledger_name: str, w: Any, requests: int, *,
                        timing: dict[str, Any]) -> int:
    """The verify timer's rounds (module doc) with the real ``Worker.verify``; how many ran."""
    from core.graph import make_graph_client
    from core.settings import Settings
    from core.tenant import TenantConfig
    from devtools.chaos.workload import DETECTED_AT, _catalog, tenant_mapping
    from devtools.emailevents import EmailEvents
    from remediation.ledger import Ledger
    from remediation.worker import Worker

    clock = _Clock()
    ledger = Ledger.from_connection_string(conn, ledger_name, create=False, clock=clock)
    emails = [(r["target"]["network_message_id"], r["target"]["recipient"]) for r in w.queues["defender"]
              if r["action"] == "move_to_junk"]
    backend = EmailEvents(lambda: fake.email_events(emails, DETECTED_AT), clock)
    settings = Settings.from_env({"RESPONDER_GRAPH_BASE_URL": fake.base_url, "RESPONDER_EMAIL_STRATEGY":
                                  "defender", "RESPONDER_TENANT_ID": fake.tenant_id}, require=False)
    graph = make_graph_client(base_url=fake.base_url, max_retries=3, timeout=timing["client_timeout"])
    worker = Worker(settings, TenantConfig.from_mapping(tenant_mapping(requests), source="chaos harness"),
                    _catalog(), ledger, graph, None, lease=timedelta(seconds=timing["lease_s"]))
    clock.offset = worker.unconfirmed_grace
    for n in range(1, VERIFY_ROUNDS + 1):
        clock.offset += VERIFY_PERIOD
        await worker.verify(backend)
        if not open_rows(ledger):
            return n
    # Still open (a resubmission that met a fault too): the timer's round once the verify grace has passed
    # settles it as the app would, not_applied with its reason and a report, or confirmed.
    clock.offset += worker.verify_grace
    await worker.verify(backend)
    return VERIFY_ROUNDS + 1


def open_rows(ledger: Any) -> list[Any]:
    """Defender requests verification has not settled: still ``submitted``, or a resubmission left
    ``received``."""
    return [r for r in ledger.list() if r.action == "move_to_junk" and (
        r.state == "submitted" or (r.state == "received" and r.extra.get("resubmitted_at")))]


def _public(v: Any) -> dict[str, Any]:
    return {**{k: getattr(v, k) for k in ("requests", "lost", "pending", "acted_twice", "mismatched",
                                          "confirmed_without_undo", "resubmissions")},
            "states": dict(v.states), "examples": v.examples, "ids": v.ids}


def _ids(tmp: Path, pattern: str) -> set[str]:
    """Request ids the workers wrote, one per line, to files matching ``pattern``."""
    ids: set[str] = set()
    for f in tmp.glob(pattern):
        ids.update(line for line in f.read_text(encoding="utf-8").split("\n") if line)
    return ids


def _delivered(tmp: Path) -> int:
    return len(_ids(tmp, "delivered-*.txt"))


def run(*, requests: int = 500, rate: float = 0.3, kinds: tuple[str, ...] | None = None, workers: int = 4,
        seed: int = 0, scenarios: tuple[str, ...] = SCENARIOS,
        plant: str | None = None, drain_timeout: float = 600.0, fault_timeout: float = 900.0
        ) -> dict[str, Any]:
    from devtools.azurite import running_azurite
    from devtools.chaos.fake import FAULT_KINDS

    kinds = kinds or FAULT_KINDS
    out: dict[str, Any] = {"requests": requests, "fault_rate": rate, "workers": workers, "seed": seed,
                           "fault_kinds": list(kinds), "timing": TIMING, "scenarios": []}
    with running_azurite() as az:
        for name in scenarios:
            print(f"chaos: {name} ...", file=sys.stderr, flush=True)
            out["scenarios"].append(run_scenario(name, az.connection_string, requests=requests, rate=rate,
                                                 kinds=kinds, workers=workers, seed=seed, plant=plant,
                                                 drain_timeout=drain_timeout, fault_timeout=fault_timeout))
            done = {k: v for k, v in out["scenarios"][-1].items() if k != "ids"}
            print(f"chaos: {name} done: {json.dumps(done)}", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    from devtools.chaos.fake import FAULT_KINDS

    p = argparse.ArgumentParser(prog="python -m responder.bench chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--fault-rate", type=float, default=0.3)
    p.add_argument("--faults", default=",".join(FAULT_KINDS),
                   help=f"Graph/Exchange fault kinds, comma-separated (default all: {','.join(FAULT_KINDS)})")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenario", action="append", choices=SCENARIOS,
                   help="run only these (repeatable; default every scenario)")
    p.add_argument("--plant", choices=PLANTS, help="make the workers misbehave on purpose (to check the "
                   "harness itself counts it)")
    p.add_argument("--drain-timeout", type=float, default=600.0,
                   help="seconds the workers may take to empty the queues once faults stop (default 600)")
    p.add_argument("--fault-timeout", type=float, default=900.0,
                   help="longest fault phase in seconds, if not every message was delivered by then")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    # SIGTERM ends the run through ``finally`` blocks, so the worker processes and Azurite are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        p.error(f"unknown fault kind {sorted(unknown)[0]!r} (choose from {', '.join(FAULT_KINDS)})")
    if not 0.0 <= args.fault_rate <= 1.0:
        p.error("--fault-rate must be between 0 and 1")
    if args.requests < 10 or args.workers < 1:
        p.error("--requests must be at least 10 and --workers at least 1")
    scenarios = tuple(args.scenario or SCENARIOS)
    result = run(requests=args.requests, rate=args.fault_rate, kinds=kinds, workers=args.workers,
                 seed=args.seed, scenarios=scenarios, plant=args.plant, drain_timeout=args.drain_timeout,
                 fault_timeout=args.fault_timeout)
    for s in result["scenarios"]:
        s.pop("ids", None)   # every counted request id: for the harness's tests, too long to print
    if args.json:
        print(json.dumps(result))
    else:
        from devtools.bench.report import chaos_table

        print("\n".join(chaos_table(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
