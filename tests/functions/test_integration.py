"""The whole path with real parts: timer -> Defender backend (Graph runHuntingQuery on the fake,
answered by the local KQL engine) -> Azurite queue (base64, as the host writes and reads it) ->
worker -> msgraph-sdk -> fake Graph -> ledger on Azurite tables -> Teams cards at a loopback webhook."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient

from app.schedules import function_name
from detections.backends.local import LocalBackend
from detections.findings import json_safe
from detections.params import parse_timespan
from devtools.fakegraph import FakeGraph
from devtools.webhook_sink import WebhookSink
from notifications.elements import card_kind
from notifications.teams import TeamsWebhookNotifier
from tests.functions.conftest import NOW, PROTECTED, RULE, Out

CAMPAIGN = [(f"nm-{i}", PROTECTED[i], f"<campaign-{i}@mail.gmail.com>") for i in range(3)]


def email_rows() -> list[dict[str, Any]]:
    rows = [{"Timestamp": f"now-{20 - i}m", "NetworkMessageId": nmid, "InternetMessageId": imid,
             "SenderMailFromAddress": "lure@gmail.com", "SenderMailFromDomain": "gmail.com",
             "SenderFromAddress": "lure@gmail.com", "SenderFromDomain": "gmail.com",
             "RecipientEmailAddress": rcpt,
             "Subject": "Quick question", "EmailDirection": "Inbound", "DeliveryAction": "Delivered",
             "DeliveryLocation": "Inbox/folder", "LatestDeliveryLocation": "Inbox/folder",
             "LatestDeliveryAction": "Delivered", "ReportId": f"r{i}"}
            for i, (nmid, rcpt, imid) in enumerate(CAMPAIGN)]
    # A partner mailing one shared mailbox: not a consumer domain, not touched.
    rows.append({**rows[0], "NetworkMessageId": "nm-partner", "InternetMessageId": "<p@fabrikam.com>",
                 "SenderMailFromAddress": "orders@fabrikam.com", "SenderMailFromDomain": "fabrikam.com",
                 "SenderFromAddress": "orders@fabrikam.com", "SenderFromDomain": "fabrikam.com"})
    return rows


@pytest.fixture
def fake_rows_dir(tmp_path: Path) -> Path:
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "EmailEvents.jsonl").write_text("".join(json.dumps(r) + "\n" for r in email_rows()),
                                              encoding="utf-8")
    return tables


def local_hunting(tables: Path) -> Callable[[str, str | None], tuple[list[Any], list[dict[str, Any]]]]:
    """The fake's runHuntingQuery answered by the local KQL engine over ``tables`` (now() pinned)."""
    def hunt(query: str, timespan: str | None) -> tuple[list[Any], list[dict[str, Any]]]:
        span = parse_timespan(timespan) if timespan else timedelta(days=30)
        result = asyncio.run(LocalBackend(tables, NOW).run(query, timespan=span))
        return result.columns, [json_safe(row) for row in result.rows]
    return hunt


def host_write(queue: QueueClient, messages: list[str]) -> None:
    """What the queue output binding does with the strings a function sets (messageEncoding base64)."""
    for m in messages:
        queue.send_message(base64.b64encode(m.encode("utf-8")).decode("ascii"))


def host_deliver(env: Any, queue: QueueClient) -> int:
    """What the queue trigger does: receive, base64-decode, call the function, delete on success."""
    handled = 0
    while True:
        batch = list(queue.receive_messages(messages_per_page=4, visibility_timeout=60, max_messages=4))
        if not batch:
            return handled
        for qm in batch:
            body = base64.b64decode(qm.content)
            env.call("worker", QueueMessage(id=qm.id, body=body, dequeue_count=qm.dequeue_count,
                                            pop_receipt=qm.pop_receipt))
            queue.delete_message(qm)
            handled += 1


def test_timer_to_queue_to_worker_to_graph_to_ledger_to_card(make_env: Any, storage_conn: str,
                                                              fake_rows_dir: Path) -> None:
    tables = fake_rows_dir
    with FakeGraph(hunting=local_hunting(tables)) as fake, WebhookSink() as sink:
        for _, rcpt, imid in CAMPAIGN:
            fake.mailboxes.add(rcpt, imid, "inbox", subject="Quick question")
        fake.mailboxes.add(PROTECTED[0], "<p@fabrikam.com>", "inbox")
        # The Defender backend (RESPONDER_BACKEND's default) runs the query through Graph
        # runHuntingQuery on the fake, which answers from the local engine over the tables.
        env = make_env(backend="real", graph_base_url=fake.base_url,
                       email_strategy="mailbox", notifier=TeamsWebhookNotifier(sink.url, retries=0))
        queue = QueueClient.from_connection_string(storage_conn, env.rt.settings.requests_queue)
        queue.create_queue()

        out = Out()
        env.call(function_name(RULE), TimerRequest(past_due=False), out)
        (hunt,) = fake.calls_to("POST", "runHuntingQuery")
        assert hunt.json["Timespan"] == "PT2H" and "let window = 2h;" in hunt.json["Query"]
        assert len(out.value) == 3
        host_write(queue, out.value)
        assert host_deliver(env, queue) == 3

        # Graph: every campaign copy moved to Junk through the real SDK; the partner's mail untouched.
        for _, rcpt, imid in CAMPAIGN:
            assert fake.mailboxes.folder_of(rcpt, imid) == "junkemail"
        assert fake.mailboxes.folder_of(PROTECTED[0], "<p@fabrikam.com>") == "inbox"
        # Ledger: confirmed, with what undo needs.
        rows = env.rt.ledger().list(rule=RULE)
        assert sorted(r.target["network_message_id"] for r in rows) == [c[0] for c in CAMPAIGN]
        assert {r.state for r in rows} == {"confirmed"}
        assert all(r.undo for r in rows)
        # Teams: the run card when queued, the outcome card when the last request settled; both valid.
        deliveries = sink.wait_for(2)
        assert [card_kind(d.card) for d in deliveries] == ["scan", "scan"]
        assert all(d.problems == [] for d in deliveries)
        first, outcome = (json.dumps(d.card) for d in deliveries)
        assert "Move to Junk**: 3 queued" in first and "Move to Junk**: 3 done" in outcome

        # The next run overlaps the window: nothing new, nothing queued, no card.
        out = Out()
        env.call(function_name(RULE), TimerRequest(past_due=False), out)
        assert out.value == []
        assert len(sink.deliveries) == 2


def test_webhook_url_from_settings_never_reaches_the_logs(make_env: Any, fake_rows_dir: Path,
                                                          caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeGraph() as fake, WebhookSink() as sink:
        sink.answer(400, body=b"bad card", times=5)
        env = make_env(backend=LocalBackend(fake_rows_dir, NOW), graph_base_url=fake.base_url,
                       teams_webhook_url=sink.url, notifier="from-settings")
        assert isinstance(env.rt.notifier, TeamsWebhookNotifier)
        out = Out()
        env.call(function_name(RULE), TimerRequest(past_due=False), out)
        assert len(out.value) == 3                      # the card was refused; the run was not
        assert [d.status for d in sink.deliveries] == [400]
        assert "not delivered" in caplog.text
        for secret in (sink.signature, sink.flow, sink.url):
            assert secret not in caplog.text
            assert secret not in repr(env.rt) and secret not in repr(env.rt.config)
