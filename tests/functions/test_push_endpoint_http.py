"""The push endpoint over real HTTP on a loopback port (devtools/pushserver.py), its queue on Azurite.

What Graph sends is bytes on a socket: a URL-encoded validationToken and a JSON body; what the push
worker reads is a base64 queue message. Both ends are real here.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import httpx
from azure.storage.queue import QueueClient

from devtools.pushserver import PushServer, azurite_sink
from tests.functions.conftest import Env
from tests.functions.test_push_endpoint import MSG, SUB, TOKEN, change, lifecycle, push_on


def test_handshake_over_http_echoes_the_url_decoded_token(env: Env) -> None:
    push_on(env)
    with PushServer(env.rt) as server:
        resp = httpx.post(f"{server.url}?validationToken={quote(TOKEN)}",
                          headers={"Content-Type": "text/plain; charset=utf-8"}, timeout=10)
    assert resp.status_code == 200
    assert resp.text == TOKEN
    assert resp.headers["content-type"].startswith("text/plain")


def test_batch_over_http_lands_on_the_azurite_queue_as_the_host_writes_it(env: Env, storage_conn: str,
                                                                          unique_name: str) -> None:
    push_on(env)
    with PushServer(env.rt, on_queue=azurite_sink(storage_conn, unique_name)) as server:
        resp = httpx.post(server.url, json={"value": [change(), change(clientState="forged" * 8),
                                                      lifecycle("missed")]}, timeout=10)
    assert (resp.status_code, resp.content) == (202, b"")
    queue = QueueClient.from_connection_string(storage_conn, unique_name)
    bodies = [json.loads(base64.b64decode(m.content)) for m in queue.receive_messages(max_messages=32)]
    assert [(b["kind"], b["subscription_id"], b.get("message_id")) for b in bodies] == [
        ("change", SUB, MSG), ("lifecycle", SUB, None)]


def test_push_off_over_http_is_404(env: Env) -> None:
    with PushServer(env.rt) as server:
        resp = httpx.post(f"{server.url}?validationToken=abc", timeout=10)
    assert resp.status_code == 404 and "abc" not in resp.text
