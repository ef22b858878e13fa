"""push/state.py: TableState on Azurite (the Table service's own ETags, 409 on insert, 412 on If-Match)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from azure.data.tables.aio import TableClient

from detections.streaming import MemoryState
from push.state import MAX_VALUE_CHARS, StateTooLarge, TableState, row_key

T = TypeVar("T")


def run(fn: Callable[[TableState], Awaitable[T]], conn: str, table: str, slug: str = "rule-a") -> T:
    async def go() -> T:
        async with TableClient.from_connection_string(conn, table) as client:
            state = TableState(client, slug)
            await state.ensure_table()
            return await fn(state)
    return asyncio.run(go())


def test_absent_key_loads_empty_with_no_version(storage_conn: str, unique_name: str) -> None:
    assert run(lambda s: s.load("sender:eve@gmail.com"), storage_conn, unique_name) == ({}, None)


def test_create_then_update_with_the_version_just_read(storage_conn: str, unique_name: str) -> None:
    async def flow(s: TableState) -> list[Any]:
        key = "sender:eve@gmail.com"
        out: list[Any] = [await s.save(key, {"mailboxes": ["a"]}, None)]
        value, version = await s.load(key)
        out.append(value)
        out.append(await s.save(key, {"mailboxes": ["a", "b"]}, version))
        out.append((await s.load(key))[0])
        return out

    assert run(flow, storage_conn, unique_name) == [True, {"mailboxes": ["a"]}, True,
                                                    {"mailboxes": ["a", "b"]}]


def test_conflicts_return_false_and_change_nothing(storage_conn: str, unique_name: str) -> None:
    async def flow(s: TableState) -> list[Any]:
        key = "k"
        assert await s.save(key, {"n": 1}, None)
        _, v1 = await s.load(key)
        out: list[Any] = [await s.save(key, {"n": 99}, None)]          # insert over an existing row
        assert await s.save(key, {"n": 2}, v1)                         # writer A wins
        out.append(await s.save(key, {"n": 3}, v1))                    # writer B had read v1 too
        out.append((await s.load(key))[0])
        return out

    assert run(flow, storage_conn, unique_name) == [False, False, {"n": 2}]


def test_concurrent_writers_lose_no_update(storage_conn: str, unique_name: str) -> None:
    """Ten writers add themselves to one set at once, each retrying on conflict: all ten are kept."""
    async def flow(s: TableState) -> list[str]:
        async def add(name: str) -> None:
            while True:
                value, version = await s.load("campaign")
                value["who"] = sorted({*value.get("who", []), name})
                if await s.save("campaign", value, version):
                    return
        await asyncio.gather(*(add(f"w{i}") for i in range(10)))
        return (await s.load("campaign"))[0]["who"]

    assert run(flow, storage_conn, unique_name) == sorted(f"w{i}" for i in range(10))


def test_rules_do_not_share_state_and_keys_are_hashed(storage_conn: str, unique_name: str) -> None:
    odd_key = "sender:a/b\\c#d?e\x01" + "x" * 2000    # characters RowKey forbids, and longer than it allows
    assert run(lambda s: s.save(odd_key, {"rule": "a"}, None), storage_conn, unique_name, "rule-a")
    assert run(lambda s: s.load(odd_key), storage_conn, unique_name, "rule-b") == ({}, None)
    assert run(lambda s: s.load(odd_key), storage_conn, unique_name, "rule-a")[0] == {"rule": "a"}

    async def raw() -> Any:
        async with TableClient.from_connection_string(storage_conn, unique_name) as client:
            return await client.get_entity("stream-rule-a", row_key(odd_key))
    entity = asyncio.run(raw())
    assert len(entity["RowKey"]) == 64 and entity["value"] == '{"rule":"a"}'


def test_values_over_the_property_limit_are_refused(storage_conn: str, unique_name: str) -> None:
    big = {"x": "y" * MAX_VALUE_CHARS}
    with pytest.raises(StateTooLarge, match="stream-rule-a"):
        run(lambda s: s.save("k", big, None), storage_conn, unique_name)
    # Just under the limit is stored whole (non-ASCII escaped, so characters = bytes).
    fits = {"x": "é" * ((MAX_VALUE_CHARS - 20) // 6)}
    assert run(lambda s: s.save("k", fits, None), storage_conn, unique_name)
    assert run(lambda s: s.load("k"), storage_conn, unique_name)[0] == fits


@pytest.mark.parametrize("stored", ["not json", "[1, 2]", "null", 42])
def test_a_row_that_is_not_an_object_starts_over_and_can_be_replaced(storage_conn: str, unique_name: str,
                                                                     stored: Any) -> None:
    async def flow(s: TableState) -> list[Any]:
        await s.table.create_entity({"PartitionKey": "stream-rule-a", "RowKey": row_key("k"),
                                     "value": stored})
        value, version = await s.load("k")
        return [value, version is not None, await s.save("k", {"ok": True}, version), (await s.load("k"))[0]]

    assert run(flow, storage_conn, unique_name) == [{}, True, True, {"ok": True}]


def test_same_behaviour_as_memory_state_on_one_script(storage_conn: str, unique_name: str) -> None:
    """The contract's reference (MemoryState) and TableState answer one sequence of calls alike."""
    async def script(s: Any) -> list[Any]:
        out: list[Any] = []
        out.append(await s.load("k"))
        out.append(await s.save("k", {"a": 1}, None))
        value, version = await s.load("k")
        out.append(value)
        out.append(await s.save("k", {"a": 2}, None))
        out.append(await s.save("k", {"a": 2}, version))
        out.append((await s.load("k"))[0])
        return [(o[0], o[1] is None) if isinstance(o, tuple) else o for o in out]

    assert run(script, storage_conn, unique_name) == asyncio.run(script(MemoryState()))
