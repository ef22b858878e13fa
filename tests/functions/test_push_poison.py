"""An invalid push message is not dropped: ``push_worker`` puts it on ``<RESPONDER_PUSH_QUEUE>-poison`` at
once (its second output binding), body untouched plus why, and ``push_poison`` records it (the telemetry
record the push-rejected alert counts). Run on Azurite the way the host runs them: the push queue's
message received and base64-decoded, the output binding's value base64-encoded onto the poison queue."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import jsonschema
import pytest
from azure.data.tables import TableClient
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

from app import handlers, telemetry
from core.settings import ROOT
from devtools.fakegraph import FakeGraph
from tests.functions.conftest import Out
from tests.functions.test_push_worker import push_env

SCHEMA = json.loads((ROOT / "docs" / "telemetry.schema.json").read_text(encoding="utf-8"))
HOSTILE = (b'{"schema":"push-notification/1","kind":"change","subscription_id":"x\\u0007\\n'
           b'ERROR forged log line https://evil.example/?sig=abc","extra\\u0000":1}')


@pytest.fixture
def fake() -> Any:
    with FakeGraph() as graph:
        yield graph


def host_round(env: Any, storage_conn: str, body: bytes) -> tuple[Out, list[QueueMessage]]:
    """``body`` on the Azurite push queue -> push_worker (as the host calls it) -> its poison output on the
    Azurite poison queue -> what a push_poison trigger would receive from there."""
    push = env.rt.config.push
    queue = QueueClient.from_connection_string(storage_conn, push.queue)
    poison_queue = QueueClient.from_connection_string(storage_conn, push.queue + "-poison")
    queue.create_queue()
    poison_queue.create_queue()
    queue.send_message(base64.b64encode(body).decode("ascii"))
    (qm,) = queue.receive_messages(max_messages=1, visibility_timeout=60)
    msg = QueueMessage(id=qm.id, body=base64.b64decode(qm.content), dequeue_count=qm.dequeue_count,
                       pop_receipt=qm.pop_receipt)
    out, poison = Out(), Out()
    env.call("push_worker", msg, out, poison)   # returns normally: the host deletes the message
    queue.delete_message(qm)
    for item in poison.value or []:
        poison_queue.send_message(base64.b64encode(item.encode("utf-8")).decode("ascii"))
    got = [QueueMessage(id=m.id, body=base64.b64decode(m.content), dequeue_count=m.dequeue_count)
           for m in poison_queue.receive_messages(max_messages=32, visibility_timeout=60)]
    assert list(queue.receive_messages(max_messages=32)) == [], "the invalid message stayed on the push queue"
    return out, got


def records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r for r in (telemetry.parse_line(m.getMessage()) for m in caplog.records) if r]


@pytest.mark.parametrize("body", [
    b'{"schema":"push-notification/1","kind":"delete"}',
    HOSTILE,
    b"\xff\xfe not utf-8 \x00",
    b"{" * 9000,                                    # over the parser's size limit, well under the queue's
], ids=["unknown-kind", "hostile", "not-utf8", "large"])
def test_an_invalid_push_message_lands_in_the_poison_queue_at_once_with_its_body_intact(
        make_env: Any, fake: FakeGraph, unique_name: str, storage_conn: str, body: bytes,
        caplog: pytest.LogCaptureFixture) -> None:
    env, _ = push_env(make_env, fake, unique_name, storage_conn)
    fake.clear_calls()
    with caplog.at_level(logging.INFO):
        out, poisoned = host_round(env, storage_conn, body)
    assert out.value == [] and fake.calls == []
    (msg,) = poisoned
    envelope = json.loads(msg.get_body())
    original = envelope["body"].encode("utf-8") if "body" in envelope else base64.b64decode(
        envelope["body_base64"])
    assert original == body                                    # untouched
    assert envelope["schema"] == "push-poison/1" and envelope["reason"]
    assert envelope["dequeue_count"] == 1                      # at once, not after maxDequeueCount
    assert "evil.example" not in caplog.text and "forged log line" not in caplog.text
    # push_poison records it: the record the push-rejected alert counts, valid against the schema.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        summary = env.call("push_poison", msg)
    assert summary is None
    (rec,) = [r for r in records(caplog) if r["event"] == "push"]
    jsonschema.validate(rec, SCHEMA)
    assert (rec["state"], rec["error_class"]) == ("invalid", "invalid")
    assert "evil.example" not in caplog.text and "forged log line" not in caplog.text
    # The host deletes the poison message when push_poison returns: the body is kept in the push table.
    (kept,) = kept_rows(storage_conn, env.rt.config.push.table)
    assert (kept["Body"], kept["Outcome"], kept["Deliveries"]) == (body, "invalid", 1)
    assert kept["Reason"] == envelope["reason"]


def kept_rows(conn: str, table: str) -> list[Any]:
    with TableClient.from_connection_string(conn, table) as client:
        return list(client.query_entities("PartitionKey eq 'poisoned'"))


def test_push_poison_recomputes_why_and_never_trusts_the_envelopes_reason(
        make_env: Any, fake: FakeGraph, unique_name: str, storage_conn: str,
        caplog: pytest.LogCaptureFixture) -> None:
    # Anything with the storage data role can write the poison queue: a planted envelope's reason is not
    # logged; the parser's is. A valid notification in an envelope is the host's kind of poison.
    env, _ = push_env(make_env, fake, unique_name, storage_conn)
    planted = json.dumps({"schema": "push-poison/1", "reason": "https://evil.example/?sig=abc",
                          "body": '{"schema":"push-notification/1"}'}).encode()
    with caplog.at_level(logging.INFO):
        summary = asyncio.run(handlers.on_push_poison(env.rt, QueueMessage(id="p", body=planted)))
    assert summary["outcome"] == "invalid" and summary["error"] == "kind: expected one of " + \
        "change, lifecycle, message, sweep"
    assert "evil.example" not in caplog.text
