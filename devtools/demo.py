"""``python -m responder demo``: the whole pipeline on the embedded sample tenant, on one machine.

generate tenant -> Azurite (queue + ledger table) -> fake Graph serving ``runHuntingQuery`` from the
sample tables through the local engine -> scan every rule through the *defender* backend (so its own
code path runs) -> enqueue base64 messages as the Functions host would -> worker over the queue ->
remediations applied to the tables by the fake -> verification from EmailEvents -> a second scan
(overlapping window: everything it finds is already in the ledger) -> Teams cards to files (and PNG
when Chromium is there) -> a summary compared with ``truth.json``.

Time is compressed: Defender applies a remediation minutes after it is submitted; the fake applies
it at once, so verification confirms in the same run.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app import telemetry
from core.settings import Settings
from core.tenant import load_tenant_config
from detections.catalog import load_catalog
from detections.scan import RuleRun, scan
from devtools.demo_queue import AzuriteQueue, MemoryQueue, RequestQueue
from devtools.sample import DEFAULT_SEED, generate
from devtools.sample.live import LiveTables
from devtools.telemetry_file import telemetry_to_file
from remediation.ledger import Ledger
from remediation.outcome import Outcome

DEMO_TENANT_ID = "00000000-0000-4000-8000-00000000c0de"  # a made-up tenant id for portal links
MAX_DELIVERIES = 5  # the host's default maxDequeueCount: after that a message goes to the poison queue

Step = Callable[[str], None]


@dataclass
class DemoOptions:
    size: str = "small"
    seed: int = DEFAULT_SEED
    output: Path = Path("demo-output")
    render: bool = True  # render the cards to PNG when Chromium is available
    use_azurite: bool = True


@dataclass
class DemoRun:
    """Everything the summary needs (see devtools.demo_summary)."""

    options: DemoOptions
    truth: dict[str, Any]
    tables: dict[str, int]
    catalog_slugs: list[str]
    runs: list[RuleRun] = field(default_factory=list)
    second_runs: list[RuleRun] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # request id -> final outcome
    duplicates: int = 0  # second-scan deliveries deduplicated
    second_actions: int = 0  # second-scan deliveries that acted
    moves: list[tuple[str, str, str]] = field(default_factory=list)  # what the fake applied to the tables
    graph_calls: dict[str, int] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    cards: list[str] = field(default_factory=list)
    pngs: list[str] = field(default_factory=list)
    scan_window: tuple[datetime, datetime] | None = None  # wall-clock start and end of the first scan
    push: dict[str, Any] = field(default_factory=dict)  # the push phase (devtools/demo_push.py)
    azurite: str | None = field(default=None, repr=False)  # its connection string (the push phase needs it)


class _Timer:
    def __init__(self, run: DemoRun, name: str):
        self.run, self.name = run, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.run.timings[self.name] = round(time.perf_counter() - self.start, 3)


async def run_demo(options: DemoOptions, step: Step = lambda _: None) -> DemoRun:
    started = time.perf_counter()
    out = options.output
    step(f"generating the {options.size} sample tenant (seed {options.seed})")
    t0 = time.perf_counter()
    gen = generate(out / "tenant", size=options.size, seed=options.seed)
    catalog = load_catalog()
    run = DemoRun(options, gen.truth, gen.counts, sorted(catalog))
    run.timings["generate"] = round(time.perf_counter() - t0, 3)
    tenant = load_tenant_config(gen.tenant_path)
    rules = [r for r in catalog.values() if tenant.for_rule(r.slug).enabled]
    live = LiveTables(gen.tables_dir, gen.now)

    async with contextlib.AsyncExitStack() as stack:
        stack.callback(live.close)  # runs last: after the fake Graph that queries it has stopped
        # Telemetry records (app/telemetry.py), as Application Insights' traces rows: docs/monitoring.md.
        stack.enter_context(telemetry_to_file(out / "telemetry.jsonl"))
        queue, ledger = _storage(stack, options, run, step)
        fake = stack.enter_context(_fake_graph(live))
        from core.graph import make_graph_client
        from detections.backends.defender import DefenderBackend
        from notifications.reporter import CardReporter
        from notifications.teams import FileNotifier
        from remediation.worker import Worker

        settings = _settings(fake.base_url)
        graph = make_graph_client(base_url=fake.base_url, credential=None, max_retries=0)
        backend = DefenderBackend(graph)
        notifier = FileNotifier(out / "cards")
        reporter = CardReporter(notifier, tenant_id=settings.tenant_id or None,
                                connector_actions=settings.connector_actions)
        worker = Worker(settings, tenant, catalog, ledger, graph, None, reporter, sleep=_no_wait)
        run.environment.update(
            {
                "backend": f"defender (runHuntingQuery on the fake Graph at {fake.base_url}, "
                "answered by the local KQL engine over the sample tables)",
                "graph": fake.base_url,
                "email_strategy": settings.email_strategy,
                "cards": str(out / "cards"),
                "telemetry": f"{out / 'telemetry.jsonl'} (in Azure: Application Insights traces, "
                "message starting 'xdr-telemetry '; docs/monitoring.md)",
            }
        )

        step(f"scanning {len(rules)} rules through the defender backend")
        run.scan_window = (datetime.now(UTC), datetime.now(UTC))
        with _Timer(run, "scan"):
            run.runs = await scan(
                rules, backend, tenant=tenant, overrides={}, now=gen.now, run_id="demo-scan-1"
            )
        run.scan_window = (run.scan_window[0], datetime.now(UTC))
        for rr in run.runs:
            telemetry.scan_run(rr, None, backend.name, started=run.scan_window[0],
                               finished=run.scan_window[1], trigger="demo")
        requests = [r for rr in run.runs for r in rr.requests]
        step(f"enqueueing {len(requests)} remediation requests ({queue.kind} queue)")
        with _Timer(run, "enqueue"):
            worker.register(requests)
            for req in requests:
                queue.send(json.dumps(req, ensure_ascii=False))
        step("worker: processing the queue")
        with _Timer(run, "remediate"):
            for o in await _drain(queue, worker):
                run.outcomes[o.request_id] = o
        step("verifying Defender submissions from EmailEvents")
        with _Timer(run, "verify"):
            for o in await worker.verify(backend):
                run.outcomes[o.request_id] = o

        step("second scan over the same window (overlapping runs are harmless)")
        with _Timer(run, "second_scan"):
            run.second_runs = await scan(
                rules, backend, tenant=tenant, overrides={}, now=gen.now, run_id="demo-scan-2"
            )
            again = [r for rr in run.second_runs for r in rr.requests]
            worker.register(again)
            for req in again:
                queue.send(json.dumps(req, ensure_ascii=False))
            for o in await _drain(queue, worker):
                if o.extra.get("duplicate"):
                    run.duplicates += 1
                else:
                    run.second_actions += 1
                    run.outcomes[o.request_id] = o
        # The ledger is the record: final states come from it, not from what the worker returned.
        for rid in list(run.outcomes):
            rec = ledger.get(rid)
            if rec is not None:
                run.outcomes[rid] = rec.outcome()
        by_id = {r["id"]: r for r in requests}
        for o in run.outcomes.values():   # one record per request, in its final state
            telemetry.outcomes(by_id.get(o.request_id), [o], now=gen.now)  # detection time is gen.now
        run.moves = list(live.moves)
        run.graph_calls = _graph_calls(fake)
        _write_records(out, ledger, fake)

        step("writing the Teams cards")
        await _scan_cards(run, notifier, settings)
        run.cards = [str(p) for p in notifier.paths]

        # The push path (issue 15): a new campaign caught from Graph change notifications, within minutes.
        from devtools.demo_push import run_push_phase

        with _Timer(run, "push"):
            pushed = await run_push_phase(out, gen.tenant_path, run.azurite, DEMO_TENANT_ID, step)
        run.push = pushed.to_dict()
        if pushed.skipped:
            run.notes.append(f"push path not shown: {pushed.skipped}")
    if options.render:
        step("rendering cards to PNG")
        _render(run, out / "cards")
        if run.push.get("cards"):
            _render(run, out / "push" / "cards", run.push["cards"])
    run.timings["total"] = round(time.perf_counter() - started, 3)
    return run


def _write_records(out: Path, ledger: Ledger, fake: Any) -> None:
    """The ledger and what the fake Graph was asked to do, as files: the record a reviewer (or a test)
    checks against truth.json without trusting the summary."""
    rows = [
        {
            "request_id": r.request_id,
            "rule": r.rule,
            "action": r.action,
            "target": r.target,
            "mode": r.mode,
            "state": r.state,
            "hold_reason": r.hold_reason,
            "attempts": r.attempts,
            "detail": r.detail,
            "error": r.error,
        }
        for r in ledger.list()
    ]
    (out / "ledger.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    calls = [{"action": r.action, "emails": r.emails, "location": r.location} for r in fake.remediations]
    (out / "graph-remediations.json").write_text(json.dumps(calls, indent=2) + "\n", encoding="utf-8")
    accounts = {
        "revoked": list(fake.revoked),
        "compromised": sorted(fake.compromised),
        "disabled": [u.user_principal_name for u in fake.users.all() if not u.account_enabled],
    }
    (out / "graph-accounts.json").write_text(json.dumps(accounts, indent=2) + "\n", encoding="utf-8")


async def _no_wait(_: float) -> None:
    """The worker's back-off sleep: the demo's fake answers at once, so retries need not wait."""


def _settings(graph_url: str) -> Settings:
    return Settings.from_env(
        {
            "RESPONDER_TENANT_ID": DEMO_TENANT_ID,
            "AZURE_CLIENT_ID": "demo",
            "RESPONDER_GRAPH_BASE_URL": graph_url,
            "RESPONDER_EMAIL_STRATEGY": "defender",
            "RESPONDER_BACKEND": "defender",
        },
        require=False,
    )


def _storage(
    stack: contextlib.AsyncExitStack, options: DemoOptions, run: DemoRun, step: Step
) -> tuple[RequestQueue, Ledger]:
    from devtools.azurite import azurite_binary, running_azurite

    if options.use_azurite and azurite_binary() is not None:
        step("starting Azurite (queues and tables)")
        az = stack.enter_context(running_azurite())
        run.azurite = az.connection_string
        run.environment.update(
            {
                "queue": "Azurite storage queue (base64 messages, as the Functions host reads them)",
                "ledger": "Azurite table storage",
            }
        )
        settings = _settings("http://127.0.0.1")
        return (
            AzuriteQueue(az.connection_string, settings.requests_queue),
            Ledger.from_connection_string(az.connection_string, settings.ledger_table),
        )
    from devtools.demo_memtable import MemoryTableClient

    why = "disabled by --no-azurite" if not options.use_azurite else "Azurite is not installed (npm ci)"
    run.notes.append(
        f"Azurite not used ({why}): the queue is an in-process stand-in and the ledger an "
        "in-memory table; nothing is persisted."
    )
    run.environment.update(
        {"queue": "in-process (Azurite absent)", "ledger": "in-memory table (Azurite absent)"}
    )
    return MemoryQueue(), Ledger(MemoryTableClient())  # type: ignore[arg-type]


@contextlib.contextmanager
def _fake_graph(live: LiveTables) -> Iterator[Any]:
    """The fake Graph: knows the tenant's accounts and connectors, hunts over and remediates the tables."""
    from devtools.fakegraph import FakeGraph

    with FakeGraph(tenant_id=DEMO_TENANT_ID, hunting=live.hunt, on_remediate=live.remediate) as fake:
        for upn, object_id in live.people():
            fake.users.add(upn, id=object_id)
        for name in live.connectors():
            fake.connectors.add(name, "inbound")
        yield fake


def _graph_calls(fake: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in getattr(fake, "calls", []):
        key = f"{getattr(call, 'method', '?')} {getattr(call, 'path', '?')}"
        counts[key] = counts.get(key, 0) + 1
    return counts


async def _drain(queue: RequestQueue, worker: Any) -> list[Outcome]:
    """Receive until the queue is empty, as the host's queue trigger would (poison after 5 deliveries)."""
    from remediation.worker import TransientFailure

    outcomes: list[Outcome] = []
    while True:
        batch = queue.receive(32)
        if not batch:
            return outcomes
        for delivery in batch:
            try:
                outcomes += await worker.process_message(delivery.body, delivery.dequeue_count)
                queue.delete(delivery)
            except TransientFailure as exc:
                outcomes += exc.outcomes
                if delivery.dequeue_count >= MAX_DELIVERIES:
                    queue.delete(delivery)
                    outcomes.append(await worker.record_poison(delivery.body, delivery.dequeue_count))
                else:
                    queue.release(delivery)


async def _scan_cards(run: DemoRun, notifier: Any, settings: Settings) -> None:
    """One scan card per rule run that found something (what the timer functions send)."""
    from notifications.cards import scan_card
    from notifications.reports import RunReport

    for rr in run.runs:
        if not rr.requests and not rr.error:
            continue
        outcomes = [run.outcomes[r["id"]] for r in rr.requests if r["id"] in run.outcomes]
        started, finished = run.scan_window or (None, None)
        report = RunReport.from_rule_run(
            rr,
            outcomes=outcomes,
            backend="defender",
            tenant_id=settings.tenant_id,
            started_at=started,
            finished_at=finished,
        )
        await notifier.send(scan_card(report))


def _render(run: DemoRun, folder: Path, paths: list[str] | None = None) -> None:
    try:
        from devtools.cardrender.render import RenderError, chromium_path, render_cards

        chromium_path()
    except Exception as exc:  # no Chromium (or no node): the JSON cards are still there
        run.notes.append(f"cards not rendered to PNG: {exc}")
        return
    cards = {Path(p).stem: json.loads(Path(p).read_text(encoding="utf-8"))
             for p in (run.cards if paths is None else paths)}
    if not cards:
        return
    try:
        results = render_cards(cards, folder)
    except RenderError as exc:
        run.notes.append(f"cards not rendered to PNG: {exc}")
        return
    for name, res in results.items():
        if res.png is not None:
            run.pngs.append(str(res.png))
        if res.errors:
            run.notes.append(f"card {name}: renderer reported {res.errors[0]}")
