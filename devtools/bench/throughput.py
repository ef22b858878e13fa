"""Remediation throughput: N message moves across M mailboxes, mailbox strategy, Outlook's limits on.

The real action (``remediation.actions.email_mailbox``) drives the real msgraph-sdk client against the
fake Graph, which enforces Outlook's per-mailbox limits (4 concurrent requests, 10,000 per 10 minutes,
429 with Retry-After past them). Afterwards every message is looked up in the fake: each must be in
Junk Email, moved by exactly one successful move call (none lost, none doubled).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from core.graph import make_graph_client
from core.request import make_request
from core.settings import Settings
from core.tenant import TenantConfig
from devtools.fakegraph import FakeGraph
from remediation.actions import ActionContext, get_action


def _requests(mailboxes: int, per_mailbox: int) -> list[dict[str, Any]]:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    out = []
    for b in range(mailboxes):
        for m in range(per_mailbox):
            target = {
                "network_message_id": f"nm-{b:03d}-{m:04d}",
                "recipient": f"shared{b:03d}@contoso.com",
                "internet_message_id": f"<m{b:03d}.{m:04d}@mail.example>",
            }
            out.append(
                make_request(
                    rule="bench-throughput",
                    action="move_to_junk",
                    mode="auto",
                    target=target,
                    evidence={},
                    detected_at=now,
                )
            )
    return out


async def _execute(fake: FakeGraph, requests: list[dict[str, Any]]) -> tuple[list[Any], float]:
    settings = Settings.from_env(
        {"RESPONDER_GRAPH_BASE_URL": fake.base_url, "RESPONDER_EMAIL_STRATEGY": "mailbox"}, require=False
    )
    graph = make_graph_client(base_url=fake.base_url, credential=None, max_retries=3)
    ctx = ActionContext(settings=settings, tenant=TenantConfig(), graph=graph)
    action = get_action("move_to_junk", "mailbox")
    start = time.perf_counter()
    results = await action.execute(requests, ctx)
    return results, time.perf_counter() - start


def run(mailboxes: int = 100, per_mailbox: int = 100) -> dict[str, Any]:
    requests = _requests(mailboxes, per_mailbox)
    with FakeGraph() as fake:
        fake.outlook_limits(concurrent=4, per_window=10_000, window=600.0, retry_after=1.0)
        for req in requests:
            fake.mailboxes.add(req["target"]["recipient"], req["target"]["internet_message_id"], "inbox")
        results, elapsed = asyncio.run(_execute(fake, requests))
        states = Counter(r.state for r in results)
        in_junk = sum(
            fake.mailboxes.folder_of(r["target"]["recipient"], r["target"]["internet_message_id"])
            == "junkemail"
            for r in requests
        )
        moves = [c for c in fake.calls if c.method == "POST" and c.path.endswith("/move")]
        ok_moves = Counter(c.path.split("/messages/")[0] for c in moves if c.status in (200, 201))
        throttled = sum(1 for c in fake.calls if c.status == 429)
        peak = max(fake.peak_concurrency(req["target"]["recipient"]) for req in requests)
        http_calls = len(fake.calls)
    n = len(requests)
    return {
        "moves": n,
        "mailboxes": mailboxes,
        "seconds": elapsed,
        "moves_per_s": n / elapsed,
        "states": dict(states),
        "in_junk": in_junk,
        "lost": n - in_junk,
        "successful_move_calls": sum(ok_moves.values()),
        "doubled": sum(ok_moves.values()) - in_junk,
        "http_calls": http_calls,
        "throttled_429": throttled,
        "peak_concurrency_per_mailbox": peak,
    }
