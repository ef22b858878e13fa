"""``python -m responder sandbox``: the approval flow on one machine, until Ctrl-C.

Azurite (queue + ledger table) -> the fake Graph and Exchange over the generated sample tenant -> one
scan through the defender backend (approval-mode rules and connector findings stay ``held``) -> the
approval page served by devtools/pageserver.py as a chosen signed-in person -> a worker loop over the
Azurite queue, so what the page (or the CLI) approves is executed on the fake Graph. Never deployed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.functions.queue import QueueMessage

from app import bootstrap, handlers, runs
from app.runtime import Runtime
from app.signin import PageAuth
from detections.scan import scan
from devtools.azurite import running_azurite
from devtools.demo import DEMO_TENANT_ID, MAX_DELIVERIES, _fake_graph, _write_records
from devtools.demo_queue import AzuriteQueue
from devtools.pageserver import Identity, PageServer
from devtools.sample import DEFAULT_SEED, generate
from devtools.sample.live import LiveTables
from notifications.teams import FileNotifier
from remediation.worker import TransientFailure

DEFAULT_UPN = "oncall@contoso.com"
DEFAULT_OID = "0c0c0c0c-0000-4000-8000-00000000ca11"
DEFAULT_GROUP = "5a1d0b0c-0000-4000-8000-0000000c0a11"   # a made-up on-call group object id

Say = Callable[[str], None]


@dataclass
class Sandbox:
    page_url: str
    graph_url: str
    held: list[str]           # request ids held for approval
    run_ids: list[str]
    env: dict[str, str]       # what the CLI needs (RESPONDER_...)
    records: Path             # ledger.json, graph-accounts.json, ... written on the way out


def _app_env(conn: str, tenant_path: Path, graph_url: str, group: str) -> dict[str, str]:
    return {"RESPONDER_TENANT_ID": DEMO_TENANT_ID, "AZURE_CLIENT_ID": "sandbox",
            "AzureWebJobsStorage": conn, "RESPONDER_TENANT_CONFIG": str(tenant_path),
            "RESPONDER_GRAPH_BASE_URL": graph_url, "RESPONDER_BACKEND": "defender",
            "RESPONDER_EMAIL_STRATEGY": "defender",
            # What App Service authentication sets in Azure; here the page server plays Easy Auth.
            "RESPONDER_EASY_AUTH": "entra", "WEBSITE_AUTH_ENABLED": "true",
            "RESPONDER_ONCALL_GROUP": group, "RESPONDER_PAGE_KEY": secrets.token_hex(32)}


async def _first_scan(rt: Runtime, queue: AzuriteQueue, now: Any) -> list[str]:
    """One scan of every enabled rule, recorded and queued as the timer functions do; returns run ids."""
    cfg = rt.config
    rules = [r for r in cfg.catalog.values() if cfg.tenant.for_rule(r.slug).enabled]
    backend = await rt.backend()
    run_ids = []
    for run in await scan(rules, backend, tenant=cfg.tenant, overrides={}, now=now):
        queued = runs.register_run(rt.ledger(), run, now)
        for body in queued.messages:
            queue.send(body)
        if run.requests and run.run_id not in run_ids:
            run_ids.append(run.run_id)
    return run_ids


def drain_once(rt: Runtime, queue: AzuriteQueue) -> int:
    """Deliver what is on the queue to the worker, as the host's queue trigger does; returns how many."""
    batch = queue.receive(16)
    for d in batch:
        msg = QueueMessage(id="sandbox", body=d.body.encode("utf-8"), dequeue_count=d.dequeue_count)
        try:
            asyncio.run(handlers.on_message(rt, msg))
            queue.delete(d)
        except TransientFailure:
            if d.dequeue_count >= MAX_DELIVERIES:
                queue.delete(d)
                asyncio.run(handlers.on_poison(rt, msg))
            else:
                queue.release(d)
    return len(batch)


@contextlib.contextmanager
def running_sandbox(upn: str = DEFAULT_UPN, group: str = DEFAULT_GROUP, port: int = 0,
                    say: Say = lambda _: None) -> Iterator[tuple[Sandbox, threading.Event]]:
    """Everything started; the worker loop runs in a thread until the block ends."""
    work = Path(tempfile.mkdtemp(prefix="responder-sandbox-"))
    say(f"generating the sample tenant in {work}")
    gen = generate(work / "tenant", size="small", seed=DEFAULT_SEED)
    live = LiveTables(gen.tables_dir, gen.now)
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        stack.callback(live.close)
        say("starting Azurite")
        az = stack.enter_context(running_azurite())
        say("starting the fake Graph and Exchange")
        fake = stack.enter_context(_fake_graph(live))
        env = _app_env(az.connection_string, gen.tenant_path, fake.base_url, group)
        config = bootstrap.load(env)
        rt = Runtime(config, notifier=FileNotifier(work / "cards"), graph_retries=0)
        queue = AzuriteQueue(az.connection_string, config.settings.requests_queue)
        say("scanning the sample tenant once")
        run_ids = asyncio.run(_first_scan(rt, queue, gen.now))
        while drain_once(rt, queue):   # auto-mode requests are acted on now; the rest stay held
            pass
        held = [r.request_id for r in rt.ledger().list(state="held")]
        auth = PageAuth.from_env(env)
        me = Identity(upn, DEFAULT_OID, (group,))
        server = stack.enter_context(PageServer(rt, auth, me, on_queue=lambda bodies: [queue.send(b)
                                                                                        for b in bodies],
                                                port=port))

        def loop() -> None:
            while not stop.is_set():
                if not drain_once(rt, queue):
                    stop.wait(0.5)

        # On the way out (after the worker stopped): what the ledger holds and what the fake was asked to do.
        stack.callback(_write_records, work, rt.ledger(), fake)
        worker = threading.Thread(target=loop, name="sandbox-worker", daemon=True)
        worker.start()
        stack.callback(worker.join, 30)
        stack.callback(stop.set)
        cli_env = {"RESPONDER_STORAGE_CONNECTION": az.connection_string,
                   "RESPONDER_TENANT_CONFIG": str(gen.tenant_path),
                   "RESPONDER_GRAPH_BASE_URL": fake.base_url, "RESPONDER_TENANT_ID": DEMO_TENANT_ID}
        yield Sandbox(server.base_url, fake.base_url, held, run_ids, cli_env, work), stop
