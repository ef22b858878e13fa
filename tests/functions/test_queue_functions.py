"""Timer, worker and poison functions called directly with azure.functions objects (real Azurite ledger,
the real msgraph-sdk against the loopback fake Graph)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from app import runs
from app.schedules import function_name
from devtools.fakegraph import FakeGraph, GraphFault
from notifications.teams import MemoryNotifier
from remediation.ledger import INVALID
from remediation.worker import TransientFailure
from tests.functions.conftest import PROTECTED, RULE, Env, Out, SpyBackend, inbox_row

TIMER = function_name(RULE)


@pytest.fixture
def fake() -> Iterator[FakeGraph]:
    with FakeGraph() as graph:
        yield graph


def three_rows() -> list[dict[str, Any]]:
    return [inbox_row(f"m{i}", PROTECTED[i]) for i in range(3)]


def run_timer(env: Env, past_due: bool = False) -> list[str]:
    out = Out()
    env.call(TIMER, TimerRequest(past_due=past_due), out)
    assert out.calls == 1
    return list(out.value)


def msg(body: str | bytes, dequeue_count: int = 1, mid: str = "m-1") -> func.QueueMessage:
    return QueueMessage(id=mid, body=body if isinstance(body, bytes) else body.encode("utf-8"),
                        dequeue_count=dequeue_count)


def kinds(env: Env) -> list[str]:
    return [c["body"][0]["id"].removeprefix("xdr-") for c in env.notifier.cards]


def test_timer_records_queues_and_sends_one_scan_card(make_env: Any, fake: FakeGraph) -> None:
    env = make_env(backend=SpyBackend(three_rows()), graph_base_url=fake.base_url)
    messages = run_timer(env, past_due=True)
    assert len(messages) == 3
    (query, span), = env.backend.queries
    assert span == timedelta(hours=2) and "let window = 2h;" in query   # the rule's window: its queryPeriod
    reqs = [json.loads(m) for m in messages]
    assert {r["run"]["total"] for r in reqs} == {3} and sorted(r["run"]["index"] for r in reqs) == [0, 1, 2]
    ledger = env.rt.ledger()
    assert {ledger.read(RULE, r["id"]).state for r in reqs} == {"received"}
    assert kinds(env) == ["scan"]
    # The next run overlaps: the same findings are in flight, nothing is queued or announced again.
    assert run_timer(env) == []
    assert kinds(env) == ["scan"]


def test_worker_settles_a_run_and_the_last_message_sends_the_outcome_card(make_env: Any,
                                                                         fake: FakeGraph) -> None:
    env = make_env(backend=SpyBackend(three_rows()), graph_base_url=fake.base_url)
    messages = run_timer(env)
    for i, body in enumerate(messages):
        env.call("worker", msg(body, mid=f"q{i}"))
    ledger = env.rt.ledger()
    states = {ledger.read(RULE, json.loads(b)["id"]).state for b in messages}
    assert states == {"submitted"}   # Defender strategy: asynchronous, confirmed later by verify
    emailed = sorted(e["networkMessageId"] for r in fake.remediations for e in r.emails)
    assert emailed == ["m0", "m1", "m2"]
    assert kinds(env) == ["scan", "scan"]          # found-and-queued, then the outcome
    first, outcome = (json.dumps(c) for c in env.notifier.cards)
    assert "3 queued" in first and "3 submitted" in outcome   # the outcome card reports the outcomes
    # A redelivered message changes nothing and does not repeat the outcome card.
    env.call("worker", msg(messages[0], dequeue_count=2))
    assert kinds(env) == ["scan", "scan"]
    assert sum(len(r.emails) for r in fake.remediations) == 3
    # Later runs see the findings settled: nothing queued, no card.
    assert run_timer(env) == []
    assert kinds(env) == ["scan", "scan"]


def test_invalid_message_is_recorded_failed_and_reported_not_raised(env: Env) -> None:
    env.call("worker", msg("{not json"))
    (row,) = env.rt.ledger().list(rule=INVALID)
    assert row.state == "failed" and "not JSON" in (row.error or "")
    assert kinds(env) == ["failure"]


def test_transient_failure_is_raised_so_the_host_retries(make_env: Any, fake: FakeGraph) -> None:
    env = make_env(backend=SpyBackend(three_rows()[:1]), graph_base_url=fake.base_url)
    # A 429 (never processed) is transient; a 503 is ambiguous and recorded submitted (email_defender.py).
    fake.inject("POST", "analyzedEmails", 429, retry_after=60, times=None)
    (body,) = run_timer(env)
    with pytest.raises(TransientFailure):
        env.call("worker", msg(body))
    rec = env.rt.ledger().read(RULE, json.loads(body)["id"])
    assert rec.state == "received" and rec.error
    assert kinds(env) == ["scan"]   # no outcome yet: the run is not settled


def test_poison_message_is_recorded_failed_and_on_call_told(make_env: Any, fake: FakeGraph) -> None:
    env = make_env(backend=SpyBackend(three_rows()[:1]), graph_base_url=fake.base_url)
    (body,) = run_timer(env)
    env.call("poison", msg(body, dequeue_count=5))
    rec = env.rt.ledger().read(RULE, json.loads(body)["id"])
    assert rec.state == "failed" and "poison" in (rec.error or "")
    # The poison card, then the run's outcome card (its only request is now settled).
    assert kinds(env) == ["scan", "failure", "scan"]
    assert fake.remediations == []


def test_poison_message_that_is_not_a_request_is_kept(env: Env) -> None:
    env.call("poison", msg(b"\xff\xfe garbage", dequeue_count=5))
    (row,) = env.rt.ledger().list(rule=INVALID)
    assert row.state == "failed"
    assert kinds(env) == ["failure"]


def test_lost_message_is_requeued_after_a_while(make_env: Any, fake: FakeGraph) -> None:
    """The function failed after recording a request and before the host wrote its message."""
    env = make_env(backend=SpyBackend(three_rows()[:1]), graph_base_url=fake.base_url)
    (body,) = run_timer(env)              # pretend this output was never written
    assert run_timer(env) == []           # still in flight, as far as anyone can tell
    env.clock.now += runs.REQUEUE_AFTER
    (again,) = run_timer(env)
    assert json.loads(again)["id"] == json.loads(body)["id"]
    env.call("worker", msg(again))
    assert env.rt.ledger().read(RULE, json.loads(body)["id"]).state == "submitted"


def test_backend_failure_card_at_most_once_an_hour(make_env: Any) -> None:
    from detections.backends.base import BackendError

    env = make_env(backend=SpyBackend(error=BackendError("HTTP 503 from the service", transient=True)))
    assert run_timer(env) == []
    assert run_timer(env) == []
    assert kinds(env) == ["failure"]
    env.clock.now += timedelta(hours=1)
    run_timer(env)
    assert kinds(env) == ["failure", "failure"]


def test_daily_digest_counts_the_ledger_once_a_day(make_env: Any, fake: FakeGraph) -> None:
    env = make_env(backend=SpyBackend(three_rows()), graph_base_url=fake.base_url)
    for body in run_timer(env):
        env.call("worker", msg(body))
    env.call("worker", msg("{not json"))
    env.notifier.cards.clear()
    env.call("digest", TimerRequest(past_due=False))
    (card,) = env.notifier.cards
    assert card["body"][0]["id"] == "xdr-digest"
    text = json.dumps(card)
    assert "Invalid queue messages" in text
    env.call("digest", TimerRequest(past_due=True))      # fired again the same day: nothing
    assert len(env.notifier.cards) == 1
    env.clock.now += timedelta(days=1)
    env.call("digest", TimerRequest(past_due=False))
    assert len(env.notifier.cards) == 2


class BrokenNotifier:
    def __init__(self) -> None:
        self.calls = 0

    async def send(self, card: dict[str, Any]) -> bool:
        self.calls += 1
        raise RuntimeError("webhook down")


def test_failing_cards_never_break_a_run_and_the_outcome_card_is_retried(make_env: Any,
                                                                        fake: FakeGraph) -> None:
    broken = BrokenNotifier()
    env = make_env(backend=SpyBackend(three_rows()[:1]), graph_base_url=fake.base_url, notifier=broken)
    (body,) = run_timer(env)                       # the scan card raised; the message was still output
    env.call("worker", msg(body))
    rid = json.loads(body)["id"]
    assert env.rt.ledger().read(RULE, rid).state == "submitted"
    assert broken.calls == 2                       # scan card, then the outcome card: both failed
    # The outcome marker was released, so a later delivery of the run sends the outcome card.
    env.rt.notifier = MemoryNotifier()
    env.call("worker", msg(body, dequeue_count=2))
    assert [c["body"][0]["id"] for c in env.rt.notifier.cards] == ["xdr-scan"]


def test_hunting_quota_exhaustion_sends_a_quota_card(make_env: Any) -> None:
    def throttled(query: str, timespan: str | None) -> Any:
        raise GraphFault(429, "Query execution has exceeded the allowed limits (CPU)", retry_after=120)

    with FakeGraph(hunting=throttled) as graph:
        env = make_env(backend="real", graph_base_url=graph.base_url)
        assert run_timer(env) == []
        assert len(graph.calls_to("POST", "runHuntingQuery")) == 1
    (card,) = env.notifier.cards
    text = json.dumps(card)
    assert card["body"][0]["id"] == "xdr-failure"
    assert "hunting quota is used up" in text and "exceeded the allowed limits" in text


def test_poison_message_for_a_request_being_executed_is_retried_not_failed(make_env: Any,
                                                                          fake: FakeGraph) -> None:
    """A delivery holds a live claim on the request (issue 13): the poison function leaves the row alone
    and raises, so the host retries the poison message after its visibility timeout; once the claim has
    expired (its holder died), the row is recorded failed."""
    env = make_env(backend=SpyBackend(three_rows()[:1]), graph_base_url=fake.base_url)
    (body,) = run_timer(env)
    ledger = env.rt.ledger()
    rec = ledger.read(RULE, json.loads(body)["id"])
    ledger.claim(rec, lease=timedelta(minutes=5), owner="dlv-executing")
    with pytest.raises(TransientFailure, match="being executed by another delivery"):
        env.call("poison", msg(body, dequeue_count=1))
    assert ledger.read(RULE, rec.request_id).state == "received" and kinds(env) == ["scan"]
    env.clock.now += timedelta(minutes=5)
    env.call("poison", msg(body, dequeue_count=2))
    assert ledger.read(RULE, rec.request_id).state == "failed"
