"""One worker instance, driven like the Functions host drives the queue trigger (host.json).

``python -m devtools.chaos.host CONFIG.json`` (started by devtools/bench/chaos.py, one process per
worker so a worker can be SIGKILLed mid-call). For each strategy's queue it:

* receives one message at a time, invisible for ``invisible_s`` and renewed every third of that while
  it runs (the host keeps a running message invisible); a killed process stops renewing, so the message
  comes back after at most ``invisible_s``;
* moves a message whose dequeue count is already past ``max_dequeue`` (5, host.json) to the poison queue
  without running it, as the host does;
* calls ``Worker.process_message(body, dequeue_count)``; success deletes the message; any exception
  (``TransientFailure``, a ledger error, a bug) makes it visible again after ``retry_visibility_s``
  (host.json ``visibilityTimeout``), or moves it to the poison queue on delivery ``max_dequeue``;
* receives poison messages and calls ``Worker.record_poison`` (the poison function).

While the fault phase lasts (the parent removes the file ``faults_on``): a delivery is doubled with
probability ``duplicate_rate`` (the same body at the same time, dequeue count + 1, as a queue whose
visibility lapsed would deliver it), with probability ``kill_rate`` the process SIGKILLs itself at the
1st, 2nd or 3rd Graph/Exchange call of a delivery, just before sending it or just after its answer (the
parent starts a new process), and the ledger's table client fails at
``ledger_fault_rate`` (ledgerfaults.FlakyTable). ``plant`` makes the worker misbehave on purpose, for
the harness's own tests: ``lose`` deletes some messages unprocessed, ``act-twice`` runs some actions a
second time, ``mismatch`` rewrites some recorded states.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.storage.queue.aio import QueueClient

from core.graph import make_graph_client
from core.settings import Settings
from devtools.chaos.ledgerfaults import FlakyTable
from devtools.chaos.workload import _catalog
from remediation.exchange import ExchangeClient
from remediation.ledger import Ledger
from remediation.worker import Worker


def planted(request: dict[str, Any], strategy: str, plant: str | None) -> bool:
    """The requests a plant misbehaves on: about one in five, by id (the harness's tests compute the same
    set). ``lose`` leaves Defender moves alone: a sibling's delivery submits those with its own (grouping),
    so dropping their message loses nothing."""
    if not plant or int(str(request.get("id", "0"))[:2] or "0", 16) % 5:
        return False
    return not (plant == "lose" and request.get("action") == "move_to_junk" and strategy == "defender")


class Host:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.dir = Path(cfg["dir"])
        self.rng = random.Random(f"{cfg['seed']}-{os.getpid()}")
        self.delivered = (self.dir / f"delivered-{os.getpid()}.txt").open("a", buffering=1)
        self.kill_at: tuple[str, int] | None = None   # (request|response, n-th call of the delivery)
        self.calls_since_armed = 0

    @property
    def faults_on(self) -> bool:
        return (self.dir / "faults_on").exists()

    async def run(self) -> None:
        cfg = self.cfg
        from core.tenant import TenantConfig

        tenant = TenantConfig.from_mapping(cfg["tenant"], source="chaos harness")
        catalog = _catalog()
        self.ledger = Ledger.from_connection_string(cfg["conn"], cfg["ledger"], create=False)
        self.flaky = FlakyTable(self.ledger.table, cfg["ledger_fault_rate"], seed=self.rng.getrandbits(32))
        self.ledger.table = self.flaky   # type: ignore[assignment]
        graph = make_graph_client(base_url=cfg["graph"], max_retries=cfg["graph_retries"],
                                  timeout=cfg["client_timeout"])
        exchange = ExchangeClient(cfg["tenant_id"], base_url=cfg["exchange"], timeout=cfg["client_timeout"])
        for http in (graph.request_adapter._http_client, exchange._http):
            http.event_hooks["request"].append(self._on_request)
            http.event_hooks["response"].append(self._on_response)
        workers: dict[str, Worker] = {}
        slots_client = None
        for strategy in cfg["queues"]:
            settings = Settings.from_env({"RESPONDER_GRAPH_BASE_URL": cfg["graph"],
                                          "RESPONDER_EMAIL_STRATEGY": strategy,
                                          "RESPONDER_CONNECTOR_ACTIONS": "auto",
                                          "RESPONDER_TENANT_ID": cfg["tenant_id"]}, require=False)
            slots = None
            if strategy == "mailbox":
                from azure.data.tables.aio import TableClient

                from remediation.mailbox_slots import MailboxSlots

                slots_client = TableClient.from_connection_string(cfg["conn"], cfg["slots"])
                slots = MailboxSlots(slots_client)
            workers[strategy] = Worker(settings, tenant, catalog, self.ledger, graph, exchange,
                                       lease=timedelta(seconds=cfg["lease_s"]), mailbox_slots=slots)
        queues = {s: QueueClient.from_connection_string(cfg["conn"], q) for s, q in cfg["queues"].items()}
        poison = {s: QueueClient.from_connection_string(cfg["conn"], q + "-poison")
                  for s, q in cfg["queues"].items()}
        try:
            while True:
                self.flaky.enabled = self.faults_on
                busy = False
                for strategy, worker in workers.items():
                    busy |= await self._one(queues[strategy], poison[strategy], worker)
                    busy |= await self._poison(poison[strategy], worker)
                if not busy:
                    await asyncio.sleep(0.2)
        finally:
            await exchange.aclose()
            if slots_client is not None:
                await slots_client.close()

    async def _on_request(self, _request: Any) -> None:
        self._maybe_die("request")

    async def _on_response(self, _response: Any) -> None:
        self._maybe_die("response")

    def _maybe_die(self, point: str) -> None:
        if self.kill_at is None:
            return
        if point == "request":
            self.calls_since_armed += 1
        if self.kill_at == (point, self.calls_since_armed):
            os.kill(os.getpid(), signal.SIGKILL)

    async def _receive(self, queue: QueueClient) -> Any:
        async for msg in queue.receive_messages(max_messages=1, visibility_timeout=self.cfg["invisible_s"]):
            return msg
        return None

    async def _to_poison(self, queue: QueueClient, poison: QueueClient, msg: Any) -> None:
        await poison.send_message(msg.content)
        await queue.delete_message(msg)

    async def _one(self, queue: QueueClient, poison: QueueClient, worker: Worker) -> bool:
        msg = await self._receive(queue)
        if msg is None:
            return False
        cfg, count = self.cfg, msg.dequeue_count
        if count > cfg["max_dequeue"]:
            await self._to_poison(queue, poison, msg)
            return True
        body: str = msg.content
        rid = _id(body)
        strategy = worker.settings.email_strategy
        try:
            req = json.loads(body)
        except ValueError:
            req = {}
        # Every delivery, not only the first: a worker killed before writing a message's first line
        # must not keep the fault phase open forever.
        self.delivered.write(rid + "\n")
        plant = cfg.get("plant")
        if plant == "lose" and planted(req, strategy, plant):
            await queue.delete_message(msg)
            return True
        holder = {"msg": msg}
        renew = asyncio.create_task(self._renew(queue, holder))
        if self.faults_on and self.rng.random() < cfg.get("kill_rate", 0.0):
            # Die at a random service call of this delivery: just before it is sent, or just after its
            # answer arrived (the service acted, the ledger does not know yet). SIGKILL, no clean-up.
            self.kill_at = (self.rng.choice(("request", "response")), self.rng.randint(1, 3))
            self.calls_since_armed = 0
        twin = None
        if self.faults_on and self.rng.random() < cfg["duplicate_rate"]:
            twin = asyncio.create_task(worker.process_message(body, count + 1))
        ok = True
        try:
            await worker.process_message(body, count)
        except Exception as exc:  # the host catches everything the function raises
            ok = False
            print(f"delivery {count} of {rid}: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
        finally:
            self.kill_at = None   # the delivery made fewer calls than drawn: it lives
            renew.cancel()
            with contextlib.suppress(BaseException):
                await renew
            if twin is not None:
                with contextlib.suppress(Exception):
                    await twin
        msg = holder["msg"]
        with contextlib.suppress(Exception):
            if ok:
                if plant in ("act-twice", "mismatch") and planted(req, strategy, plant):
                    await self._misbehave(worker, req, plant)
                await queue.delete_message(msg)
            elif count >= cfg["max_dequeue"]:
                await self._to_poison(queue, poison, msg)
            else:
                await queue.update_message(msg, visibility_timeout=cfg["retry_visibility_s"])
        return True

    async def _renew(self, queue: QueueClient, holder: dict[str, Any]) -> None:
        every = self.cfg["invisible_s"] / 3
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(Exception):
                holder["msg"] = await queue.update_message(holder["msg"],
                                                           visibility_timeout=self.cfg["invisible_s"])

    async def _poison(self, poison: QueueClient, worker: Worker) -> bool:
        msg = await self._receive(poison)
        if msg is None:
            return False
        try:
            await worker.record_poison(msg.content, self.cfg["max_dequeue"])
        except Exception as exc:
            print(f"poison {_id(msg.content)}: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
            with contextlib.suppress(Exception):
                await poison.update_message(msg, visibility_timeout=self.cfg["retry_visibility_s"])
            return True
        await poison.delete_message(msg)
        return True

    async def _misbehave(self, worker: Worker, req: dict[str, Any], plant: str) -> None:
        """Planted faults (tests of the harness): act again past the ledger, or falsify the row."""
        if plant == "act-twice":
            action = worker.registry.executor(req["action"], worker.settings.email_strategy)
            await action.execute([req], worker.ctx)
            return
        # Falsify only a row that says the work was done and seen done (confirmed): that contradicts the fake
        # (target changed, ledger says skipped). A row the faults left failed, held or received says the
        # target did not change, which is true; a Defender row still `submitted` is not known to have taken
        # effect (verification, after the drain, settles it: a submission can be accepted and not applied),
        # so rewriting either tests nothing. The ids written are reported (run_scenario "falsified") so the
        # harness's test checks each one was counted.
        table = self.flaky._table   # the real table: the plant itself must not meet the injected faults
        with contextlib.suppress(Exception):
            row = table.get_entity(req["rule"], req["id"])
            if row.get("state") == "confirmed":
                table.update_entity({"PartitionKey": req["rule"], "RowKey": req["id"], "state": "skipped"},
                                    etag=row.metadata["etag"], match_condition=MatchConditions.IfNotModified)
                with (self.dir / f"falsified-{os.getpid()}.txt").open("a", encoding="utf-8") as f:
                    f.write(req["id"] + "\n")


def _id(body: str) -> str:
    try:
        return str(json.loads(body).get("id", "?"))
    except (ValueError, AttributeError):
        return "?"


def main(argv: list[str]) -> int:
    cfg = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    asyncio.run(Host(cfg).run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
