"""The run's outcome card costs O(1) ledger reads per message (issue 13: 10,000 requests in one run cost
3 s per message when every message re-read the run). The ledger is on Azurite behind a TableClient that
counts what it reads; the card goes to a memory notifier."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from azure.data.tables import TableClient

from app.runs import outcome_card
from core.request import make_request
from notifications.teams import MemoryNotifier
from remediation.ledger import Ledger
from remediation.run_counters import settled_count
from tests.remediation.factories import T0

pytestmark = pytest.mark.azurite

RULE = "shared-mailboxes"


class CountingTable:
    """A TableClient that counts the entities it reads (point reads and every row a query returns)."""

    def __init__(self, inner: TableClient) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.read = 0          # entities read
        self.queries = 0       # query calls (each a read of many rows)
        self.calls = 0         # every call to the service

    def _add(self, read: int = 0, queries: int = 0) -> None:
        with self.lock:
            self.read += read
            self.queries += queries
            self.calls += 1

    def get_entity(self, *a: Any, **kw: Any) -> Any:
        self._add(read=1)
        return self.inner.get_entity(*a, **kw)

    def query_entities(self, *a: Any, **kw: Any) -> Iterator[Any]:
        self._add(queries=1)
        for ent in self.inner.query_entities(*a, **kw):
            self._add(read=1)
            yield ent

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if callable(attr):
            def counted(*a: Any, **kw: Any) -> Any:
                self._add()
                return attr(*a, **kw)
            return counted
        return attr


def settled_run(ledger: Ledger, n: int, run_id: str = "run-big") -> list[str]:
    """A run of ``n`` requests whose rows the worker has settled (skipped); returns their messages."""
    bodies = []
    for i in range(n):
        req = make_request(rule=RULE, action="move_to_junk", mode="auto",
                           target={"network_message_id": f"nm-{i}", "recipient": "support@contoso.com"},
                           evidence={"SenderFromAddress": "bad@gmail.com"}, detected_at=T0,
                           run={"id": run_id, "index": i, "total": n, "rows": n}, severity="Medium",
                           rule_name="Shared mailboxes")
        rec, _ = ledger.receive(req)
        ledger.transition(rec, "skipped", detail="already in Junk")
        bodies.append(json.dumps(req))
    return bodies


def deliver(ledger: Ledger, notifier: MemoryNotifier, body: str) -> bool:
    return asyncio.run(outcome_card(ledger, notifier, body, backend="defender", tenant_id=None,
                                    rule_names={}))


@pytest.fixture
def counted(storage_conn: str, unique_name: str) -> tuple[Ledger, CountingTable]:
    table = CountingTable(TableClient.from_connection_string(storage_conn, unique_name))
    ledger = Ledger(table)  # type: ignore[arg-type]
    ledger.ensure_table()
    return ledger, table


def test_each_message_reads_a_constant_number_of_entities_and_the_run_is_read_once(
        counted: tuple[Ledger, CountingTable]) -> None:
    ledger, table = counted
    n = 300
    bodies = settled_run(ledger, n)
    notifier = MemoryNotifier()
    per_message = []
    table.read = table.queries = 0
    for body in bodies:
        before = table.read
        deliver(ledger, notifier, body)
        per_message.append(table.read - before)
    # Every message but the last: its own row and the run's counter. The last reads the run once.
    assert max(per_message[:-1]) <= 3, per_message
    assert per_message[-1] <= 3 + n
    assert table.queries == 1
    assert len(notifier.cards) == 1
    card = json.dumps(notifier.cards[0])
    assert "run-big" in card and '"title": "Skipped", "value": "300"' in card
    # Duplicate deliveries of every message: nothing counted twice, nothing re-read, no second card.
    table.read = table.queries = 0
    for body in bodies:
        assert deliver(ledger, notifier, body) is False
    assert table.queries == 0 and table.read <= 3 * n
    assert settled_count(ledger, RULE, "run-big") == n and len(notifier.cards) == 1


def test_a_message_whose_request_is_still_in_flight_counts_nothing(
        counted: tuple[Ledger, CountingTable]) -> None:
    ledger, _ = counted
    bodies = settled_run(ledger, 2)
    waiting = json.loads(bodies[1])
    rec = ledger.read(RULE, waiting["id"])
    ledger.table.delete_entity(RULE, waiting["id"])      # back to received: the worker has not settled it
    ledger.receive(waiting)
    notifier = MemoryNotifier()
    assert not deliver(ledger, notifier, bodies[0]) and not deliver(ledger, notifier, bodies[1])
    assert settled_count(ledger, RULE, "run-big") == 1 and notifier.cards == []
    ledger.transition(ledger.read(RULE, waiting["id"]), "skipped", detail=rec.detail)
    assert deliver(ledger, notifier, bodies[1]) and len(notifier.cards) == 1


def test_concurrent_and_duplicate_deliveries_send_exactly_one_card(
        storage_conn: str, unique_name: str) -> None:
    n, workers = 120, 8
    bodies = settled_run(Ledger.from_connection_string(storage_conn, unique_name), n)
    notifier = MemoryNotifier()
    sent: list[bool] = []
    # Every message twice, spread over workers that each have their own client (as separate hosts do).
    shares = [(bodies + bodies)[i::workers] for i in range(workers)]
    barrier = threading.Barrier(workers)

    def work(share: list[str]) -> None:
        ledger = Ledger.from_connection_string(storage_conn, unique_name, create=False)
        barrier.wait()
        for body in share:
            sent.append(deliver(ledger, notifier, body))

    threads = [threading.Thread(target=work, args=(s,)) for s in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sent.count(True) == 1 and len(notifier.cards) == 1
    ledger = Ledger.from_connection_string(storage_conn, unique_name, create=False)
    assert settled_count(ledger, RULE, "run-big") == n


def test_a_card_that_did_not_go_out_is_sent_by_a_later_delivery(
        counted: tuple[Ledger, CountingTable]) -> None:
    ledger, _ = counted
    bodies = settled_run(ledger, 3)
    down = MemoryNotifier(deliver=False)
    for body in bodies:
        assert deliver(ledger, down, body) is False
    up = MemoryNotifier()
    assert deliver(ledger, up, bodies[1]) is True and len(up.cards) == 1   # a redelivery of any message
    assert deliver(ledger, up, bodies[2]) is False and len(up.cards) == 1


def test_a_storage_error_while_counting_is_raised_and_counts_nothing(
        counted: tuple[Ledger, CountingTable], monkeypatch: pytest.MonkeyPatch) -> None:
    # The client says index 0 when the service named no operation (a 503 says none): that must not be
    # taken for "the marker exists", or the request would never be counted and the card never sent.
    from azure.data.tables import TableTransactionError

    ledger, table = counted
    bodies = settled_run(ledger, 1)

    def busy(*_a: Any, **_kw: Any) -> Any:
        raise TableTransactionError(message="Server busy")

    monkeypatch.setattr(table, "submit_transaction", busy, raising=False)
    with pytest.raises(TableTransactionError):
        deliver(ledger, MemoryNotifier(), bodies[0])
    monkeypatch.undo()
    notifier = MemoryNotifier()
    assert deliver(ledger, notifier, bodies[0]) is True and len(notifier.cards) == 1   # the queue's retry
