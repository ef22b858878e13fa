"""push/cleanup.py on Azurite: expired streaming state and dead sweep markers go, bounded per run; a row
still in its window (or within the grace after it), a live chain's marker, an unreadable row, a row of
another partition, and a row a worker rewrote after the read all stay.

Azurite stamps ``Timestamp`` with the real time of the write, so the runs happen at a ``now`` days later.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from azure.data.tables.aio import TableClient

from push import cleanup, poison
from push.resync import iso
from push.state import TableState, row_key

T = TypeVar("T")
NOW = datetime.now(UTC) + timedelta(days=10)


def run(fn: Callable[[TableClient], Awaitable[T]], conn: str, table: str) -> T:
    async def go() -> T:
        async with TableClient.from_connection_string(conn, table) as client:
            await TableState(client, "x").ensure_table()
            return await fn(client)
    return asyncio.run(go())


async def keys(table: TableClient) -> set[tuple[str, str]]:
    return {(e["PartitionKey"], e["RowKey"]) async for e in table.list_entities()}


async def stream(table: TableClient, slug: str, key: str, expires: datetime | None) -> tuple[str, str]:
    value: dict[str, Any] = {"copies": []}
    if expires is not None:
        value["expires_at"] = iso(expires)
    assert await TableState(table, slug).save(key, value, None)
    return ("stream-" + slug, row_key(key))


async def marker(table: TableClient, rk: str, until: datetime, due: datetime) -> tuple[str, str]:
    await table.create_entity({"PartitionKey": "sweep-rule-a", "RowKey": rk, "Chain": "c" * 32, "Seq": 3,
                               "HotUntil": iso(until), "NextDue": iso(due)})
    return ("sweep-rule-a", rk)


def test_expired_rows_go_and_rows_in_their_window_stay(storage_conn: str, unique_name: str) -> None:
    async def flow(t: TableClient) -> tuple[Any, ...]:
        gone = {await stream(t, "rule-a", "old", NOW - timedelta(days=2)),
                await stream(t, "rule-b", "old", NOW - cleanup.GRACE - timedelta(minutes=1)),
                await marker(t, "d" * 64, NOW - timedelta(days=3), NOW - timedelta(days=3))}
        stay = {await stream(t, "rule-a", "in window", NOW + timedelta(days=6)),
                await stream(t, "rule-a", "just closed", NOW - timedelta(hours=1)),   # within the grace
                await stream(t, "rule-a", "no expiry", None),
                await marker(t, "e" * 64, NOW + timedelta(minutes=30), NOW + timedelta(seconds=60)),
                await marker(t, "f" * 64, NOW - timedelta(days=3), NOW - timedelta(hours=1))}
        gone.add(("poisoned", await poison.keep(t, b"x", outcome="invalid", reason="kind: ...",
                                                 queue_message_id="q1", deliveries=1,
                                                 now=NOW - poison.KEEP_FOR - timedelta(days=2))))
        stay.add(("poisoned", await poison.keep(t, b"y", outcome="poison", reason=None, queue_message_id="q2",
                                                deliveries=5, now=NOW - timedelta(days=3))))
        await t.create_entity({"PartitionKey": "stream-rule-a", "RowKey": "junk", "value": "not json"})
        await t.create_entity({"PartitionKey": "subscription", "RowKey": "u:inbox",
                               "ExpiresAt": iso(NOW - timedelta(days=9))})   # not ours to clean
        stay |= {("stream-rule-a", "junk"), ("subscription", "u:inbox")}
        summary = await cleanup.clean_expired(t, NOW)
        return summary, gone, stay, await keys(t)

    summary, gone, stay, left = run(flow, storage_conn, unique_name)
    assert not (left & gone), "an expired row was kept"
    assert stay <= left, "a row still in its window (or not ours) was deleted"
    assert (summary.stream_deleted, summary.sweep_deleted, summary.poison_deleted) == (2, 1, 1)
    assert summary.unreadable == 2 and not summary.capped
    assert summary.kept == 5


def test_nothing_written_within_the_grace_is_even_read(storage_conn: str, unique_name: str) -> None:
    async def flow(t: TableClient) -> Any:
        await stream(t, "rule-a", "old", NOW - timedelta(days=2))
        return await cleanup.clean_expired(t, datetime.now(UTC) + timedelta(hours=1))

    summary = run(flow, storage_conn, unique_name)
    assert (summary.scanned, summary.deleted) == (0, 0)


def test_a_run_deletes_at_most_its_bound_and_the_next_run_goes_on(storage_conn: str,
                                                                  unique_name: str) -> None:
    async def flow(t: TableClient) -> list[Any]:
        for i in range(7):
            await stream(t, "rule-a", f"k{i}", NOW - timedelta(days=2))
        first = await cleanup.clean_expired(t, NOW, max_deletes=5)
        left = len(await keys(t))
        second = await cleanup.clean_expired(t, NOW, max_deletes=5)
        return [first.deleted, first.capped, left, second.deleted, second.capped, len(await keys(t))]

    assert run(flow, storage_conn, unique_name) == [5, True, 2, 2, False, 0]


def test_a_row_rewritten_after_the_read_is_not_deleted(storage_conn: str, unique_name: str) -> None:
    async def flow(t: TableClient) -> Any:
        pk, rk = await stream(t, "rule-a", "busy", NOW - timedelta(days=2))
        real_delete = t.delete_entity

        async def worker_first(*args: Any, **kwargs: Any) -> None:
            # A new copy lands between the cleanup's read and its delete: the worker's save wins.
            state = TableState(t, "rule-a")
            value, version = await state.load("busy")
            assert await state.save("busy", {**value, "expires_at": iso(NOW + timedelta(days=1))}, version)
            await real_delete(*args, **kwargs)

        t.delete_entity = worker_first   # type: ignore[method-assign]
        summary = await cleanup.clean_expired(t, NOW)
        row = await t.get_entity(pk, rk)
        return summary, json.loads(row["value"])["expires_at"]

    summary, expires = run(flow, storage_conn, unique_name)
    assert (summary.deleted, summary.lost_race) == (0, 1)
    assert expires == iso(NOW + timedelta(days=1))
