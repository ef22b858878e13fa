"""Playing the Functions host on a loopback port (dev, demo and tests only; never deployed).

``Out`` stands in for an output binding (``func.Out``): the host reads what the handler ``set`` after it
returns. ``LoopbackServer`` is the start/stop of a threaded HTTP server whose GET and POST requests go to
a subclass's ``serve``, one at a time (``lock``), like a single worker; ``reply`` writes a handler's answer.
Used by devtools/pushserver.py, devtools/pageserver.py and devtools/demo_push.py.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import azure.functions as func


class Out(func.Out):
    """An output binding as the host gives one: holds what the function sets."""

    def __init__(self) -> None:
        self.value: Any = None

    def set(self, val: Any) -> None:
        self.value = val

    def get(self) -> Any:
        return self.value


@dataclass(kw_only=True)
class LoopbackServer:
    host: str = "127.0.0.1"
    port: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, init=False)
    lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://{self.host}:{self._server.server_address[1]}"

    def serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.serve(self, "GET")

            def do_POST(self) -> None:
                outer.serve(self, "POST")

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def reply(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str], mimetype: str | None,
          *, type_empty: bool = True) -> None:
    """Write one answer; ``type_empty=False`` sends no Content-Type with an empty body."""
    h.send_response(status)
    for k, v in headers.items():
        if k.lower() not in ("content-length", "content-type"):
            h.send_header(k, v)
    if body or type_empty:
        h.send_header("Content-Type", f"{mimetype or 'text/plain'}; charset=utf-8")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)
