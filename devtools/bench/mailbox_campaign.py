"""A campaign against one mailbox, worked on by several worker instances at once: how many 429s?

``python -m devtools.bench.mailbox_campaign [--messages N] [--instances N]`` runs it twice against the
fake Graph with Outlook's limits on (4 concurrent requests per mailbox, 429 ``ApplicationThrottled``
with Retry-After): once with only each instance's own per-mailbox semaphore (before), once with the
shared Table-storage leases (remediation/mailbox_slots.py) on Azurite (after). Each instance is a thread
with its own event loop, Graph client and table client, as separate function instances would be.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid
from typing import Any

from core.graph import make_graph_client
from core.request import make_request
from core.settings import Settings
from core.tenant import TenantConfig
from devtools.fakegraph import FakeGraph
from remediation.actions import ActionContext, ActionResult
from remediation.actions.email_mailbox import MailboxEmailAction

MAILBOX = "support@contoso.com"


def _requests(n: int) -> list[dict[str, Any]]:
    from datetime import UTC, datetime

    return [make_request(rule="campaign", action="move_to_junk", mode="auto", evidence={},
                         detected_at=datetime(2026, 11, 20, 12, tzinfo=UTC),
                         target={"network_message_id": f"nm-{i}", "recipient": MAILBOX,
                                 "internet_message_id": f"<c{i}@mail.example>"},
                         run={"id": "campaign", "index": i, "total": n})
            for i in range(n)]


async def _instance(fake: FakeGraph, requests: list[dict[str, Any]], conn: str | None, table: str,
                    graph_retries: int) -> tuple[list[ActionResult], int]:
    graph = make_graph_client(base_url=fake.base_url, max_retries=graph_retries)
    settings = Settings.from_env({"RESPONDER_GRAPH_BASE_URL": fake.base_url,
                                  "RESPONDER_EMAIL_STRATEGY": "mailbox"}, require=False)
    slots, client = None, None
    if conn is not None:
        from azure.data.tables.aio import TableClient

        from remediation.mailbox_slots import MailboxSlots

        client = TableClient.from_connection_string(conn, table)
        slots = MailboxSlots(client)
    ctx = ActionContext(settings=settings, tenant=TenantConfig(), graph=graph, mailbox_slots=slots)
    try:
        results = await MailboxEmailAction("move_to_junk").execute(requests, ctx)
    finally:
        if client is not None:
            await client.close()
    return results, (slots.waits if slots is not None else 0)


def campaign(conn: str | None, *, messages: int = 64, instances: int = 8, latency: float = 0.02,
             retry_after: float = 1.0, graph_retries: int = 3) -> dict[str, Any]:
    """One campaign; ``conn`` (an Azurite/Storage connection string) turns the shared leases on."""
    table = "slots" + uuid.uuid4().hex[:16]
    if conn is not None:
        from azure.data.tables import TableClient

        TableClient.from_connection_string(conn, table).create_table()
    reqs = _requests(messages)
    with FakeGraph() as fake:
        for r in reqs:
            fake.mailboxes.add(MAILBOX, r["target"]["internet_message_id"])
        fake.outlook_limits(concurrent=4, retry_after=retry_after)
        fake.add_latency(latency, path_regex=r"^/v1\.0/users/")
        shares = [reqs[i::instances] for i in range(instances)]
        out: list[tuple[list[ActionResult], int]] = [([], 0)] * instances

        def work(i: int) -> None:
            out[i] = asyncio.run(_instance(fake, shares[i], conn, table, graph_retries))

        start = time.perf_counter()
        threads = [threading.Thread(target=work, args=(i,)) for i in range(instances)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
        calls = fake.calls_to("*", r"^/v1\.0/users/")
        results = [r for rs, _ in out for r in rs]
        return {"shared_slots": conn is not None, "messages": messages, "instances": instances,
                "mailbox_requests": len(calls), "throttled_429": sum(c.status == 429 for c in calls),
                "peak_concurrency": fake.peak_concurrency(MAILBOX),
                "confirmed": sum(r.state == "confirmed" for r in results),
                "failed": sum(r.state == "failed" for r in results),
                "slot_waits": sum(w for _, w in out), "seconds": round(seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.bench.mailbox_campaign")
    p.add_argument("--messages", type=int, default=64)
    p.add_argument("--instances", type=int, default=8)
    args = p.parse_args(argv)
    from devtools.azurite import running_azurite

    before = campaign(None, messages=args.messages, instances=args.instances)
    with running_azurite() as az:
        after = campaign(az.connection_string, messages=args.messages, instances=args.instances)
    print(json.dumps({"before": before, "after": after}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
