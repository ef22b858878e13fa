"""The push notification endpoint served on a loopback port (dev, demo and tests only; never deployed).

The fake Graph (devtools/fakegraph.py) delivers subscriptions' validation handshakes and notifications
over real HTTP, so the function's handler must be reachable at a URL: this tiny server plays the
Functions host for the one route ``POST /api/push/notifications`` (host.json's routePrefix is ""). It
hands the request to the same handler function_app.py binds (``app.handlers.http_push_notifications``),
with the query string decoded as the host decodes it, and what the handler puts in its queue output
binding goes to ``on_queue`` after the handler returns, as the host writes output bindings.
``azurite_sink`` writes them base64-encoded, as the host's queue output binding does (host.json
messageEncoding), so the push worker's queue trigger reads them back unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from app import handlers
from app.runtime import Runtime
from devtools.loopback import LoopbackServer, Out, reply

ROUTE = "/api/push/notifications"


def azurite_sink(connection_string: str, queue: str) -> Callable[[list[str]], None]:
    """``on_queue`` that puts each message on an Azurite queue the way the host's output binding does."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(connection_string, queue)
    with contextlib.suppress(ResourceExistsError):   # already there
        client.create_queue()

    def put(bodies: list[str]) -> None:
        for body in bodies:
            client.send_message(base64.b64encode(body.encode("utf-8")).decode("ascii"))

    return put


@dataclass
class PushServer(LoopbackServer):
    runtime: Runtime
    on_queue: Callable[[list[str]], None] = lambda _bodies: None
    requests: list[tuple[str, int]] = field(default_factory=list)   # (query string kind, status) served

    @property
    def url(self) -> str:
        """The notification URL to subscribe with."""
        return f"{self.base_url}{ROUTE}"

    def serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        if method != "POST" or parts.path != ROUTE:
            reply(h, 404, b"not found", {}, "text/plain")
            return
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        req = func.HttpRequest(method="POST", url=f"http://{self.host}{h.path}", body=body,
                               headers=dict(h.headers.items()), params=params, route_params={})
        out = Out()
        with self.lock:   # one request at a time, like a single worker
            resp = asyncio.run(handlers.http_push_notifications(self.runtime, req, out))
            if out.value:
                self.on_queue(list(out.value))
            self.requests.append(("handshake" if "validationToken" in params else "notifications",
                                  resp.status_code))
        reply(h, resp.status_code, resp.get_body(), dict(resp.headers), resp.mimetype, type_empty=False)
