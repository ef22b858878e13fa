"""Outlook's 4-requests-per-mailbox limit held across worker instances (remediation/mailbox_slots.py),
on Azurite, and measured against the fake Graph with Outlook's limits on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from devtools.bench.mailbox_campaign import campaign
from remediation.mailbox_slots import MailboxSlots, SlotsBusy

pytestmark = pytest.mark.azurite


@asynccontextmanager
async def instances(conn: str, table: str, n: int, **kw: Any) -> AsyncIterator[list[MailboxSlots]]:
    """``n`` independent limiters, each with its own table client (as separate function instances)."""
    clients = [TableClient.from_connection_string(conn, table) for _ in range(n)]
    slots = [MailboxSlots(c, **kw) for c in clients]
    await slots[0].ensure_table()
    try:
        yield slots
    finally:
        for c in clients:
            await c.close()


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(body())


def test_at_most_four_requests_per_mailbox_across_instances(storage_conn: str, unique_name: str) -> None:
    in_flight = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}

    async def request(slots: MailboxSlots, mailbox: str) -> None:
        async with slots.hold(f"{mailbox}@contoso.com"):
            in_flight[mailbox] += 1
            peak[mailbox] = max(peak[mailbox], in_flight[mailbox])
            await asyncio.sleep(0.2)
            in_flight[mailbox] -= 1

    async def main() -> tuple[int, int]:
        async with instances(storage_conn, unique_name, 4) as four:
            # 18 requests to mailbox a from three instances while a fourth sends 2 to mailbox b.
            await asyncio.gather(*(request(four[i % 3], "a") for i in range(18)),
                                 *(request(four[3], "b") for _ in range(2)))
            return sum(s.waits for s in four[:3]), four[3].waits

    waits_a, waits_b = run(main)
    assert peak["a"] == 4 and waits_a > 0      # a was saturated and its instances waited for slots
    assert waits_b == 0                         # ... which never held up another mailbox


def test_a_lease_is_released_and_the_mailbox_key_ignores_case(storage_conn: str, unique_name: str) -> None:
    async def main() -> None:
        async with instances(storage_conn, unique_name, 2, max_wait=0) as (one, two):
            for _ in range(3):   # released each time: never more than one row in use
                async with one.hold("Support@Contoso.com"):
                    held = [await two.acquire("support@contoso.com") for _ in range(3)]
                    with pytest.raises(SlotsBusy):
                        await two.acquire("SUPPORT@contoso.com")
                for lease in held:
                    await two.release(lease)

    run(main)


def test_an_expired_lease_is_taken_over_and_its_late_release_frees_nothing(storage_conn: str,
                                                                            unique_name: str) -> None:
    now = [time.time()]

    async def main() -> None:
        async with instances(storage_conn, unique_name, 2, ttl=60, max_wait=0,
                             clock=lambda: now[0]) as (crashed, healthy):
            stale = [await crashed.acquire("x@contoso.com") for _ in range(4)]
            with pytest.raises(SlotsBusy):
                await healthy.acquire("x@contoso.com")
            now[0] += 61                      # the crashed instance never released: its leases expire
            fresh = [await healthy.acquire("x@contoso.com") for _ in range(4)]
            for lease in stale:               # a late release must not free the new holder's slot
                await crashed.release(lease)
            with pytest.raises(SlotsBusy):
                await healthy.acquire("x@contoso.com")
            for lease in fresh:
                await healthy.release(lease)
            await healthy.acquire("x@contoso.com")

    run(main)


def test_a_campaign_across_eight_instances_gets_no_429(storage_conn: str) -> None:
    # 48 copies in one mailbox, 8 instances each with its own Graph and table client, Outlook's limit on.
    got = campaign(storage_conn, messages=48, instances=8)
    assert (got["confirmed"], got["failed"]) == (48, 0)
    assert got["throttled_429"] == 0 and got["peak_concurrency"] <= 4
    assert got["slot_waits"] > 0   # the instances did contend: the leases, not luck, kept them apart


def test_busy_slots_are_a_transient_failure_that_says_why() -> None:
    from remediation.actions.errors import describe

    failure = describe(SlotsBusy("all 4 request slots of the mailbox stayed busy for 300s"))
    assert failure.transient and failure.retry_after == 10.0
    assert failure.reason == "all 4 request slots of the mailbox stayed busy for 300s"
