"""The push path's subscription side against Azurite (the push table) and the loopback fake Graph through
the real msgraph-sdk client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from core.graph import make_graph_client
from core.settings import PushSettings
from push.subscriptions import SubscriptionManager, SubscriptionStore
from tests.push.standin import StandInGraph

NOTIFY_URL = "https://responder.example.net/api/push/notifications"
CLIENT_STATE = "s3cret-client-state-" + "x" * 20
SETTINGS = PushSettings(enabled=True, notification_url=NOTIFY_URL, client_state=CLIENT_STATE)
MAILBOXES = ("support@contoso.com", "sales@contoso.com", "info@contoso.com")


@pytest.fixture
def fake() -> Iterator[StandInGraph]:
    with StandInGraph() as g:
        for address in MAILBOXES:
            g.users.add(address)
        yield g


@dataclass
class Harness:
    fake: StandInGraph
    graph: Any
    table: Any
    store: SubscriptionStore
    manager: SubscriptionManager
    queued: list[dict[str, Any]] = field(default_factory=list)

    def user_id(self, address: str) -> str:
        user = self.fake.users.get(address)
        assert user is not None
        return user.id

    def graph_subs(self) -> list[dict[str, Any]]:
        return list(self.fake.subscriptions.values())


@pytest.fixture
def harness(fake: StandInGraph, storage_conn: str, unique_name: str) -> Callable[..., Any]:
    """``harness(body, **manager_kw)``: runs ``await body(h)`` in one event loop with a fresh push table."""

    def run(body: Callable[[Harness], Awaitable[Any]], **kw: Any) -> Any:
        async def main() -> Any:
            async with _harness(fake, storage_conn, unique_name, **kw) as h:
                return await body(h)
        return asyncio.run(main())

    return run


@asynccontextmanager
async def _harness(fake: StandInGraph, conn: str, table_name: str, **kw: Any) -> AsyncIterator[Harness]:
    table = TableClient.from_connection_string(conn, table_name)
    store = SubscriptionStore(table)
    await store.ensure_table()
    graph = make_graph_client(base_url=fake.base_url, max_retries=0)
    queued: list[dict[str, Any]] = []

    async def enqueue(items: list[dict[str, Any]]) -> None:
        queued.extend(items)

    manager = SubscriptionManager(graph, store, kw.pop("settings", SETTINGS), enqueue, **kw)
    try:
        yield Harness(fake, graph, table, store, manager, queued)
    finally:
        await table.close()
