"""The push path's subscription side against Azurite (the push table) and the loopback fake Graph
(devtools/fakegraph.py with its push side, devtools/fakegraph_push.py) through the real msgraph-sdk client.

Graph validates a subscription's notification URLs before creating it (a POST with ``validationToken``
that must be echoed as text/plain: https://learn.microsoft.com/graph/change-notifications-delivery-webhooks
#notificationurl-validation), so the tests run a small loopback receiver that answers the handshake and
records what the fake delivers. The fake's clock is manual (it moves only with ``advance``) and is the
manager's clock, as the fake asks."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from azure.data.tables.aio import TableClient

from core.graph import make_graph_client
from core.settings import PushSettings
from devtools.fakegraph import FakeGraph
from push.subscriptions import SubscriptionManager, SubscriptionStore

CLIENT_STATE = "s3cret-client-state-" + "x" * 20
SUPPORT, SALES, INFO = "support@contoso.com", "sales@contoso.com", "info@contoso.com"
MAILBOXES = (SUPPORT, SALES, INFO)


@contextmanager
def push_fake(mailboxes: Iterable[str] = ()) -> Iterator[FakeGraph]:
    """The loopback fake Graph with its push side on a manual clock (it moves only with ``advance``),
    and a user for each of ``mailboxes``."""
    with FakeGraph() as g:
        g.push.configure(manual=True)
        for address in mailboxes:
            g.users.add(address)
        yield g


class Receiver:
    """A loopback notification URL: echoes validation tokens, accepts (202) and records notifications.

    With ``client_state`` set it checks it the way the endpoint does (push/intake.py): an item carrying
    another value is answered 202 like the rest but not taken (recorded in ``refused``)."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.refused: list[Any] = []
        self.client_state: str | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                token = dict(parse_qsl(urlsplit(self.path).query)).get("validationToken")
                if token is not None:
                    out, status, ctype = token.encode(), 200, "text/plain"
                else:
                    outer.take(json.loads(body or b"null"))
                    out, status, ctype = b"", 202, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        host, port = self.server.server_address[:2]
        self.url = f"http://{host}:{port}/api/push/notifications"

    def take(self, batch: Any) -> None:
        if self.client_state is None or not isinstance(batch, dict):
            self.received.append(batch)
            return
        items = batch.get("value") or []
        ok = [i for i in items if i.get("clientState") == self.client_state]
        self.refused.extend(i for i in items if i.get("clientState") != self.client_state)
        if ok:
            self.received.append({**batch, "value": ok})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def settings(receiver: Receiver) -> PushSettings:
    return PushSettings(enabled=True, notification_url=receiver.url, client_state=CLIENT_STATE)


@pytest.fixture
def fake() -> Iterator[FakeGraph]:
    with push_fake(MAILBOXES) as g:
        yield g


def graph_subs(fake: FakeGraph) -> dict[str, dict[str, Any]]:
    """The fake's subscriptions as Graph shows them, by id."""
    return {s.id: s.to_json() for s in fake.push.subscriptions}


def drop_in_graph(fake: FakeGraph, subscription_id: str) -> None:
    """The subscription disappears from Graph without any lifecycle notification (e.g. deleted by hand)."""
    httpx.delete(f"{fake.base_url}/subscriptions/{subscription_id}").raise_for_status()


@dataclass
class Harness:
    fake: FakeGraph
    graph: Any
    table: Any
    store: SubscriptionStore
    manager: SubscriptionManager
    queued: list[dict[str, Any]] = field(default_factory=list)

    def user_id(self, address: str) -> str:
        user = self.fake.users.get(address)
        assert user is not None
        return user.id


@pytest.fixture
def harness(fake: FakeGraph, settings: PushSettings, storage_conn: str,
            unique_name: str) -> Callable[..., Any]:
    """``harness(body, **manager_kw)``: runs ``await body(h)`` in one event loop with a fresh push table."""

    def run(body: Callable[[Harness], Awaitable[Any]], **kw: Any) -> Any:
        async def main() -> Any:
            async with _harness(fake, storage_conn, unique_name, settings=settings, **kw) as h:
                return await body(h)
        return asyncio.run(main())

    return run


@asynccontextmanager
async def _harness(fake: FakeGraph, conn: str, table_name: str, **kw: Any) -> AsyncIterator[Harness]:
    table = TableClient.from_connection_string(conn, table_name)
    store = SubscriptionStore(table)
    await store.ensure_table()
    graph = make_graph_client(base_url=fake.base_url, max_retries=0)
    queued: list[dict[str, Any]] = []

    async def enqueue(items: list[dict[str, Any]]) -> None:
        queued.extend(items)

    kw.setdefault("clock", fake.push.now)
    manager = SubscriptionManager(graph, store, kw.pop("settings"), enqueue, **kw)
    try:
        yield Harness(fake, graph, table, store, manager, queued)
    finally:
        await table.close()
