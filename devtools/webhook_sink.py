"""A loopback stand-in for a Teams Workflows webhook: accepts card posts, records them, answers on cue.

Like the real trigger, the URL carries a signature (``sig=``) and a post with a wrong one gets 401;
a good post gets 202 unless a scripted answer (``answer(429, retry_after=3)``) is queued. Each post is
recorded with the problems Teams would have with it (``message.workflows_problems``), so tests can
assert a card would display, not just that bytes arrived.

    with WebhookSink() as sink:
        notifier = TeamsWebhookNotifier(sink.url)
        ...
        sink.wait_for(1)
        assert sink.cards[0]["type"] == "AdaptiveCard"
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from notifications.message import workflows_problems


@dataclass(frozen=True)
class Delivery:
    """One POST the sink received."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int                       # what the sink answered
    json: Any = None                  # parsed body, None when it was not JSON
    problems: list[str] = field(default_factory=list)

    @property
    def card(self) -> dict[str, Any] | None:
        try:
            return self.json["attachments"][0]["content"]
        except (TypeError, KeyError, IndexError):
            return None


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class WebhookSink:
    """Threaded HTTP server on 127.0.0.1 (a free port); use as a context manager or start()/stop()."""

    def __init__(self) -> None:
        self.signature = secrets.token_urlsafe(24)
        self.flow = secrets.token_hex(16)
        self._answers: deque[Answer] = deque()
        self._deliveries: list[Delivery] = []
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> WebhookSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                # The default handler prints every request (URL and signature) to stderr.
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits for it, and tests stop a sink per test.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="webhook-sink", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebhookSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests use ----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the sink is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Shaped like a Workflows trigger URL; the ``sig`` is the secret."""
        return (f"http://127.0.0.1:{self.port}/workflows/{self.flow}/triggers/manual/paths/invoke"
                f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={self.signature}")

    def answer(self, status: int, *, times: int = 1, retry_after: str | float | None = None,
               body: bytes = b"") -> None:
        """Answer the next ``times`` good posts with ``status`` (then 202 again)."""
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        with self._cond:
            self._answers.extend(Answer(status, headers, body) for _ in range(times))

    @property
    def deliveries(self) -> list[Delivery]:
        with self._cond:
            return list(self._deliveries)

    @property
    def accepted(self) -> list[Delivery]:
        return [d for d in self.deliveries if 200 <= d.status < 300]

    @property
    def cards(self) -> list[dict[str, Any]]:
        """Cards of accepted posts, in arrival order."""
        return [d.card for d in self.accepted if d.card is not None]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        """Block until ``count`` posts were accepted (for tests where another thread/process posts)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: sum(200 <= d.status < 300 for d in self._deliveries) >= count,
                                     timeout)
        if not ok:
            raise TimeoutError(f"expected {count} accepted posts, got {len(self.accepted)}")
        return self.accepted

    # -- the server side ---------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        parsed: Any = None
        problems: list[str] = []
        try:
            parsed = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            problems.append("body: not JSON")
        if parsed is not None:
            problems += (workflows_problems(parsed) if isinstance(parsed, dict)
                         else ["body: not a JSON object"])
        if not headers.get("content-type", "").startswith("application/json"):
            problems.append("content-type: not application/json")

        if parts.path != f"/workflows/{self.flow}/triggers/manual/paths/invoke" or \
                query.get("sig") != self.signature:
            answer = Answer(401, {}, b'{"error":{"code":"DirectApiAuthorizationRequired"}}')
        else:
            with self._cond:
                answer = self._answers.popleft() if self._answers else Answer(202, {}, b"")
        with self._cond:
            self._deliveries.append(Delivery(parts.path, query, headers, body, answer.status, parsed,
                                             problems))
            self._cond.notify_all()
        handler.send_response(answer.status)
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(answer.body)))
        handler.end_headers()
        handler.wfile.write(answer.body)
