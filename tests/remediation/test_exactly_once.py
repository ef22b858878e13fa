"""Exactly once on the worker side (issue 13): per-delivery claim owners, a delivery's deadline, the
write-ahead intent, result writes that survive a flaky ledger, storage errors per request, and the
poison handler under a live claim.

The ledger is real (Azurite). The concurrency tests use the real msgraph-sdk against the loopback fake
Graph with latency on the action call; the plumbing tests use a fake action registered in a test
Registry, so they see exactly what the worker hands the action (``ctx.prior_attempts``).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ServiceResponseError

from core.graph import make_graph_client
from core.settings import Settings
from core.tenant import TenantConfig
from devtools.fakegraph import FakeGraph
from remediation.actions.base import ActionContext, ActionResult
from remediation.actions.registry import Registry, default_registry
from remediation.ledger import Ledger, Record
from remediation.reporting import Report
from remediation.worker import TransientFailure, Worker
from tests.remediation.factories import PROTECTED, T0, email_request, make_rule, user_request

pytestmark = pytest.mark.azurite

REMEDIATE = r"analyzedEmails/microsoft\.graph\.security\.remediate$"
RULE = make_rule(max_targets=10)
ACCOUNTS = make_rule("connectors", (("revoke_sessions", "auto"),), recipients_param=None)
CATALOG = {RULE.slug: RULE, ACCOUNTS.slug: ACCOUNTS}
TENANT = TenantConfig.from_mapping({"params": {"protected_recipients": PROTECTED}}, source="test")
LEASE = timedelta(minutes=5)


def body(request: dict[str, Any]) -> str:
    return json.dumps(request)


class Clock:
    """The ledger's wall clock and the deadline's monotonic clock, both moved by the fake sleep."""

    def __init__(self) -> None:
        self.now = T0
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return (self.now - T0).total_seconds()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(storage_conn: str, unique_name: str, clock: Clock) -> Ledger:
    return Ledger.from_connection_string(storage_conn, unique_name, clock=clock)


@pytest.fixture
def fake() -> Iterator[FakeGraph]:
    with FakeGraph() as graph:
        yield graph


def graph_settings(fake: FakeGraph) -> Settings:
    env = {"RESPONDER_GRAPH_BASE_URL": fake.base_url, "RESPONDER_TENANT_ID": fake.tenant_id,
           "RESPONDER_EMAIL_STRATEGY": "defender"}
    return Settings.from_env(env, require=False)


def acted_on(fake: FakeGraph, nmid: str) -> int:
    return sum(e["networkMessageId"] == nmid for r in fake.remediations for e in r.emails)


# --- 1. two deliveries of one message at once act once ----------------------------------------------

async def deliver(fake: FakeGraph, ledger: Ledger, request: dict[str, Any], dequeue_count: int,
                  start: threading.Barrier | None = None) -> str:
    """One delivery through a worker of its own, as another function invocation would; what it did."""
    worker = Worker(graph_settings(fake), TENANT, CATALOG, ledger,
                    make_graph_client(base_url=fake.base_url, max_retries=0, timeout=30), None)
    if start is not None:
        start.wait()
    try:
        outcomes = await worker.process_message(body(request), dequeue_count)
    except TransientFailure as exc:
        return "handed back" if exc.outcomes[0].extra.get("in_flight") is True else f"handed back: {exc}"
    return "duplicate" if outcomes[0].extra.get("duplicate") else outcomes[0].state


def test_two_concurrent_deliveries_of_one_message_act_once(fake: FakeGraph, storage_conn: str,
                                                           unique_name: str) -> None:
    """Deliveries with dequeue counts 1 and 2 of the same message, while the first one's call is in
    flight (interleaved on one event loop, both orders) and racing in two threads (separate ledger
    clients, as two instances would). Before issue 13 the redelivery took the live claim over (its owner
    was a hash of the body) and submitted again."""
    fake.add_latency(0.3, "POST", REMEDIATE)
    table = Ledger.from_connection_string(storage_conn, unique_name)
    seen: list[tuple[str, ...]] = []
    for trial in range(16):
        req = email_request(f"nm-{trial}")
        counts = (1, 2) if trial % 2 == 0 else (2, 1)
        if trial < 2:
            async def both(r: dict[str, Any] = req, c: tuple[int, int] = counts) -> list[str]:
                return list(await asyncio.gather(*(deliver(fake, table, r, n) for n in c)))
            got = asyncio.run(both())
        else:
            start, got = threading.Barrier(2), []

            def one(count: int, r: dict[str, Any] = req, b: threading.Barrier = start,
                    into: list[str] = got) -> None:
                own = Ledger.from_connection_string(storage_conn, unique_name, create=False)
                into.append(asyncio.run(deliver(fake, own, r, count, b)))

            threads = [threading.Thread(target=one, args=(c,)) for c in counts]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        seen.append(tuple(sorted(got)))
        assert acted_on(fake, f"nm-{trial}") == 1, (trial, got)
        assert table.get(req["id"]).state == "submitted"
    # Exactly one delivery submitted; the other handed its message back or found the request settled.
    assert all(s[1] == "submitted" and s[0] in ("duplicate", "handed back") for s in seen), seen


def test_a_redelivery_while_the_first_delivery_runs_grouped_siblings_acts_once(
        fake: FakeGraph, storage_conn: str, unique_name: str) -> None:
    """Grouped siblings (Defender strategy): message A's delivery claims sibling B and submits both; a
    redelivery of A (dequeue count 2) and B's own message arrive during that call. Each email once."""
    fake.add_latency(0.3, "POST", REMEDIATE)
    table = Ledger.from_connection_string(storage_conn, unique_name)
    a, b = email_request("nm-a", index=0), email_request("nm-b", "sales@contoso.com", index=1)

    async def flow() -> list[str]:
        Worker(graph_settings(fake), TENANT, CATALOG, table, None, None).register([a, b])
        first = asyncio.create_task(deliver(fake, table, a, 1))
        await asyncio.sleep(0.1)   # the first delivery is inside its call now
        return [await deliver(fake, table, a, 2), await deliver(fake, table, b, 1), await first]

    assert asyncio.run(flow()) == ["handed back", "handed back", "submitted"]
    assert (acted_on(fake, "nm-a"), acted_on(fake, "nm-b")) == (1, 1) and len(fake.remediations) == 1
    assert {table.get(r["id"]).state for r in (a, b)} == {"submitted"}


# --- a fake action that shows what the worker hands it -------------------------------------------------

class FakeRevoke:
    """revoke_sessions that records each call (ids, prior_attempts, the row's intent as it was during
    the call), acts at most once per user, and recognises its own earlier work when told."""

    name = "revoke_sessions"

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.calls: list[dict[str, Any]] = []
        self.revoked: list[str] = []
        # per call: "transient" (acted, then 503), "429" (refused), "permanent" (403), a latency (float:
        # acted, then slow to answer), or None (normal)
        self.script: list[Any] = []

    async def execute(self, requests: list[dict[str, Any]], ctx: ActionContext) -> list[ActionResult]:
        rows = {r["id"]: self.ledger.get(r["id"]) for r in requests}
        prior = dict(getattr(ctx, "prior_attempts", {}))
        self.calls.append({"ids": [r["id"] for r in requests], "prior": prior,
                           "intent": {i: (row.extra.get("intent_at"), row.extra.get("intent_by"),
                                          row.claim_token) for i, row in rows.items()}})
        step = self.script.pop(0) if self.script else None
        if isinstance(step, float):   # the service acts, then the answer takes ``step`` seconds
            self.revoked += [r["target"]["user"] for r in requests]
            await asyncio.sleep(step)
            return [ActionResult(r["id"], "confirmed", detail="sessions revoked", undo={}) for r in requests]
        if step == "permanent":
            return [ActionResult(r["id"], "failed", error="HTTP 403") for r in requests]
        if step == "429":   # refused before anything was done, with Retry-After
            return [ActionResult(r["id"], "failed", error="HTTP 429", transient=True, retry_after=60.0)
                    for r in requests]
        out = []
        for r in requests:
            user = r["target"]["user"]
            if r["id"] in prior and user in self.revoked:
                out.append(ActionResult(r["id"], "confirmed", detail="revoked by an earlier attempt",
                                        undo={}))
                continue
            self.revoked.append(user)
            if step == "transient":
                out.append(ActionResult(r["id"], "failed", error="HTTP 503", transient=True))
            else:
                out.append(ActionResult(r["id"], "confirmed", detail="sessions revoked", undo={}))
        return out


def fake_registry(action: FakeRevoke) -> Registry:
    return Registry([replace(d, executor=lambda _s: action) if d.name == "revoke_sessions" else d
                     for d in default_registry()])


class Rig:
    def __init__(self, ledger: Ledger, clock: Clock) -> None:
        self.ledger, self.clock = ledger, clock
        self.action = FakeRevoke(ledger)
        self.reports: list[Report] = []

    def worker(self, *, fake_time: bool = False, **kw: Any) -> Worker:
        async def hook(report: Report) -> None:
            self.reports.append(report)

        if fake_time:   # the deadline reads the fake clock the fake sleep moves
            kw["monotonic"] = self.clock.monotonic
        return Worker(Settings.from_env({}, require=False), TENANT, CATALOG, self.ledger, None, None,
                      report_hook=hook, registry=fake_registry(self.action), sleep=self.clock.sleep,
                      lease=LEASE, **kw)

    def row(self, req: dict[str, Any]) -> Record:
        rec = self.ledger.get(req["id"])
        assert rec is not None
        return rec


@pytest.fixture
def rig(ledger: Ledger, clock: Clock) -> Rig:
    return Rig(ledger, clock)


def fail_once_when(ledger: Ledger, monkeypatch: pytest.MonkeyPatch, method: str, exc: Exception,
                   times: int = 1, *, land: bool = False, when: Any = lambda *a, **k: True) -> list[int]:
    """Make ``ledger.<method>`` raise ``exc`` ``times`` times when ``when(...)`` holds; with ``land``
    the write is done first (the answer is lost, not the write)."""
    real = getattr(ledger, method)
    left = [times]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if left[0] and when(*args, **kwargs):
            left[0] -= 1
            if land:
                real(*args, **kwargs)
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(ledger, method, flaky)
    return left


def server_busy() -> HttpResponseError:
    err = HttpResponseError(message="ServerBusy: the server is busy")
    err.status_code = 503
    return err


# --- 2. a delivery's time is bounded well inside its lease ----------------------------------------------

def test_a_call_past_the_deadline_is_cancelled_and_released_for_the_next_delivery(rig: Rig) -> None:
    """The action call does not answer within the delivery's budget: it is cancelled, the request is
    released (received, with the error) and the message handed back; the next delivery knows from the
    intent that the first may have acted."""
    rig.action.script = [2.0]
    req = user_request("alice@contoso.com")
    worker = rig.worker(budget=timedelta(seconds=0.2))   # real time: the call really hangs
    with pytest.raises(TransientFailure) as info:
        asyncio.run(worker.process_message(body(req), 1))
    assert info.value.outcomes[0].extra["transient"] is True
    rec = rig.row(req)
    assert (rec.state, rec.claim_token) == ("received", None) and "budget" in (rec.error or "")
    assert rec.extra["intent_at"]
    [out] = asyncio.run(rig.worker().process_message(body(req), 2))
    assert out.state == "confirmed" and out.detail == "revoked by an earlier attempt"
    assert rig.action.revoked == ["alice@contoso.com"]
    assert rig.action.calls[1]["prior"] == {req["id"]: rec.extra["intent_at"]}


def test_no_retry_sleep_passes_the_deadline(rig: Rig, clock: Clock) -> None:
    """Default budget: half the 5-minute lease (150 s). Retry-After 60 s three times: two sleeps fit
    (60 + 60 < 150), the third would end past the deadline, so the delivery ends instead of sleeping."""
    rig.action.script = ["429"] * 5
    req = user_request("alice@contoso.com")
    with pytest.raises(TransientFailure):
        asyncio.run(rig.worker(fake_time=True, max_attempts=5, max_delay=120).process_message(body(req), 1))
    assert clock.sleeps == [60.0, 60.0] and len(rig.action.calls) == 3
    rec = rig.row(req)
    assert (rec.state, rec.claim_token, rec.attempts) == ("received", None, 3)


def test_a_429_on_a_state_changing_call_is_the_workers_to_wait_for(fake: FakeGraph,
                                                                    ledger: Ledger) -> None:
    """The SDK RetryHandler is off for the revoke POST (remediation/actions/accounts.py), so a 429 comes
    back to the worker at once, whose wait (Retry-After 5 s) does not fit the deadline: the row is given
    back. A 429 was never processed, so nothing was revoked, and the POST went out once."""
    fake.users.add("alice@contoso.com")
    fake.inject("POST", r"revokeSignInSessions$", 429, retry_after=5, times=None)
    req = user_request("alice@contoso.com")

    async def main() -> None:
        graph = make_graph_client(base_url=fake.base_url, max_retries=3, timeout=30)
        worker = Worker(graph_settings(fake), TENANT, CATALOG, ledger, graph, None,
                        budget=timedelta(seconds=0.5))
        await worker.process_message(body(req), 1)

    with pytest.raises(TransientFailure):
        asyncio.run(main())
    rec = ledger.get(req["id"])
    assert rec.state == "received" and rec.claim_token is None and "429" in (rec.error or "")
    assert len(fake.calls_to("POST", r"revokeSignInSessions$")) == 1 and fake.revoked == []
    assert rec.extra["released_by"] == rec.extra["intent_by"]   # given back after the action's answer


def test_the_budget_must_be_shorter_than_the_lease(rig: Rig) -> None:
    with pytest.raises(ValueError, match="budget"):
        rig.worker(budget=LEASE)


# --- 3. write-ahead intent, prior attempts, result writes that survive the ledger -----------------------

def test_the_intent_is_written_before_the_call_by_the_claim_owner(rig: Rig) -> None:
    req = user_request("alice@contoso.com")
    [out] = asyncio.run(rig.worker().process_message(body(req), 1))
    assert out.state == "confirmed"
    [call] = rig.action.calls
    intent_at, intent_by, owner = call["intent"][req["id"]]
    assert intent_at == "2026-11-20T12:00:00Z" and intent_by == owner and owner.startswith("dlv-")
    assert call["prior"] == {}   # first attempt: the action behaves as it always did
    rec = rig.row(req)
    assert rec.extra["executed_by"] == owner and rec.extra["intent_at"] == intent_at


def test_a_failed_intent_write_means_no_action(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_once_when(rig.ledger, monkeypatch, "update", server_busy(),
                   when=lambda rec, **f: "intent_at" in f)
    req = user_request("alice@contoso.com")
    with pytest.raises(TransientFailure) as info:
        asyncio.run(rig.worker().process_message(body(req), 1))
    assert rig.action.calls == []
    [out] = info.value.outcomes
    assert out.state == "received" and "ServerBusy" in out.extra["storage_error"]
    assert "intent_at" not in rig.row(req).extra


def test_retries_inside_a_delivery_are_prior_attempts(rig: Rig, clock: Clock) -> None:
    """The first call answered 503 after revoking (the action saw its own work): the retry is told it
    may be done, and records ``confirmed`` instead of revoking again."""
    rig.action.script = ["transient"]
    req = user_request("alice@contoso.com")
    [out] = asyncio.run(rig.worker().process_message(body(req), 1))
    first, second = rig.action.calls
    assert first["prior"] == {} and second["prior"] == {req["id"]: "2026-11-20T12:00:00Z"}
    assert out.state == "confirmed" and out.detail == "revoked by an earlier attempt"
    assert rig.action.revoked == ["alice@contoso.com"] and clock.sleeps == [2.0]


def test_a_result_write_that_fails_for_a_moment_is_retried_not_the_action(
        rig: Rig, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_once_when(rig.ledger, monkeypatch, "transition", ServiceResponseError("connection reset"), times=2)
    req = user_request("alice@contoso.com")
    [out] = asyncio.run(rig.worker().process_message(body(req), 1))
    assert out.state == "confirmed" and rig.row(req).state == "confirmed"
    assert len(rig.action.calls) == 1 and clock.sleeps == [0.5, 1.0]


def test_a_result_write_whose_answer_was_lost_is_recognised_as_ours(
        rig: Rig, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write landed but the answer was lost: the retry meets 412, re-reads the row, finds our result."""
    fail_once_when(rig.ledger, monkeypatch, "transition", ServiceResponseError("read timed out"), land=True)
    req = user_request("alice@contoso.com")
    [out] = asyncio.run(rig.worker().process_message(body(req), 1))
    assert out.state == "confirmed" and "lost_result" not in out.extra and len(rig.action.calls) == 1


def test_a_result_that_cannot_be_written_is_recognised_by_the_next_delivery(
        rig: Rig, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger stays down for the result write: the outcome says so, the message is handed back, the
    row keeps its intent (and the claim until the lease ends). The next delivery after the lease passes
    the request to the action as a prior attempt: recorded confirmed, not revoked twice."""
    fail_once_when(rig.ledger, monkeypatch, "transition", server_busy(), times=4)
    req = user_request("alice@contoso.com")
    with pytest.raises(TransientFailure) as info:
        asyncio.run(rig.worker().process_message(body(req), 1))
    [out] = info.value.outcomes
    assert out.detail.startswith("not recorded: storage error") and out.extra["lost_result"] == "confirmed"
    rec = rig.row(req)
    assert rec.state == "received" and rec.extra["intent_at"] and rec.claim_token
    clock.now += LEASE
    [again] = asyncio.run(rig.worker().process_message(body(req), 2))
    assert again.state == "confirmed" and again.detail == "revoked by an earlier attempt"
    assert rig.action.revoked == ["alice@contoso.com"]
    assert rig.action.calls[1]["prior"] == {req["id"]: rec.extra["intent_at"]}


# --- 4. storage errors never abort a batch; on the queue path the message comes back ------------------

def test_a_storage_error_on_one_request_does_not_abort_the_batch(rig: Rig,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    reqs = [user_request(u) for u in ("alice@contoso.com", "bob@contoso.com", "carol@contoso.com")]
    fail_once_when(rig.ledger, monkeypatch, "receive", server_busy(),
                   when=lambda request, **k: request["id"] == reqs[1]["id"])
    out = asyncio.run(rig.worker().process(reqs))
    assert [o.state for o in out] == ["confirmed", "received", "confirmed"]
    assert out[1].detail.startswith("not recorded: storage error")
    assert "ServerBusy" in out[1].extra["storage_error"]
    assert rig.action.revoked == ["alice@contoso.com", "carol@contoso.com"]
    assert rig.ledger.get(reqs[1]["id"]) is None   # the next run of the batch records and runs it


def test_a_storage_error_on_a_claim_marks_that_request_only(rig: Rig,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    reqs = [user_request("alice@contoso.com"), user_request("bob@contoso.com")]
    fail_once_when(rig.ledger, monkeypatch, "claim", ServiceResponseError("reset"),
                   when=lambda rec, **k: rec.request_id == reqs[0]["id"])
    out = asyncio.run(rig.worker().process_bodies([body(r) for r in reqs]))
    assert [o.state for o in out] == ["received", "confirmed"] and out[0].extra["storage_error"]
    assert rig.action.revoked == ["bob@contoso.com"]


def test_a_storage_error_on_the_queue_path_hands_the_message_back(rig: Rig,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fail_once_when(rig.ledger, monkeypatch, "receive", server_busy())
    req = user_request("alice@contoso.com")
    with pytest.raises(TransientFailure, match="storage error"):
        asyncio.run(rig.worker().process_message(body(req), 1))
    [out] = asyncio.run(rig.worker().process_message(body(req), 2))
    assert out.state == "confirmed"


def test_an_invalid_message_that_cannot_be_recorded_comes_back(rig: Rig,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fail_once_when(rig.ledger, monkeypatch, "record_invalid", server_busy())
    with pytest.raises(TransientFailure, match="storage error"):
        asyncio.run(rig.worker().process_message("{]", 1))
    [out] = asyncio.run(rig.worker().process_message("{]", 2))
    assert out.state == "failed"


def test_an_invalid_body_that_cannot_be_recorded_does_not_abort_the_batch(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_once_when(rig.ledger, monkeypatch, "record_invalid", server_busy())
    out = asyncio.run(rig.worker().process_bodies(["{]", body(user_request("alice@contoso.com"))]))
    assert "ServerBusy" in out[0].extra["storage_error"] and out[1].state == "confirmed"


def test_a_batch_marks_what_another_delivery_is_executing(rig: Rig) -> None:
    reqs = [user_request("alice@contoso.com"), user_request("bob@contoso.com")]
    rig.ledger.receive(reqs[0])
    rig.ledger.claim(rig.row(reqs[0]), lease=LEASE, owner="dlv-elsewhere")
    out = asyncio.run(rig.worker().process(reqs))
    assert [(o.state, o.extra.get("in_flight")) for o in out] == [("received", True), ("confirmed", None)]
    assert out[0].detail == "being executed by another delivery"


# --- 5. the poison handler honours a live claim ---------------------------------------------------------

def test_poison_never_fails_a_request_under_a_live_claim(rig: Rig, clock: Clock) -> None:
    req = user_request("alice@contoso.com")
    rig.ledger.receive(req)
    rig.ledger.claim(rig.row(req), lease=LEASE, owner="dlv-executing")
    with pytest.raises(TransientFailure, match="being executed by another delivery"):
        asyncio.run(rig.worker().record_poison(body(req), 1))
    assert rig.row(req).state == "received" and rig.reports == []
    # The last try the host allows (host.json maxDequeueCount) leaves the row to that delivery and says so.
    out = asyncio.run(rig.worker().record_poison(body(req), 5))
    assert out.extra["in_flight"] is True and rig.row(req).state == "received"
    [report] = rig.reports
    assert report.kind == "poison" and "left to that delivery" in report.summary
    # Once the claim has expired, the poison handler settles it.
    clock.now += LEASE
    assert asyncio.run(rig.worker().record_poison(body(req), 2)).state == "failed"


def test_poison_after_an_intent_says_the_action_may_have_been_carried_out(
        rig: Rig, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    req = user_request("alice@contoso.com")
    fail_once_when(rig.ledger, monkeypatch, "transition", RuntimeError("host died"))
    with pytest.raises(RuntimeError):
        asyncio.run(rig.worker().process_message(body(req), 1))
    clock.now += LEASE
    out = asyncio.run(rig.worker().record_poison(body(req), 1))
    assert out.state == "failed" and "may have been carried out" in out.detail
    assert "2026-11-20T12:00:00Z" in out.detail


def test_poison_without_an_intent_is_a_plain_failure(rig: Rig) -> None:
    req = user_request("alice@contoso.com")
    rig.ledger.receive(req)
    out = asyncio.run(rig.worker().record_poison(body(req), 5))
    assert out.state == "failed" and out.detail == "gave up after repeated transient errors"


def test_iso_now_is_the_ledger_clock(ledger: Ledger, clock: Clock) -> None:
    clock.now = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    assert ledger.iso_now() == "2026-01-02T03:04:05Z"


def test_a_storage_error_while_reporting_costs_a_card_not_the_batch(rig: Rig,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The failure card's at-most-once marker cannot be written: the outcomes are still returned."""
    fail_once_when(rig.ledger, monkeypatch, "claim_once", server_busy())
    rig.action.script = ["permanent"]
    req = user_request("alice@contoso.com")
    [out] = asyncio.run(rig.worker().process([req]))
    assert out.state == "failed" and rig.row(req).state == "failed" and rig.reports == []


# --- 6. Defender: a prior attempt of unknown fate is not submitted again; one after a 429 is -------------

class Killed(BaseException):
    """The worker process dying: nothing after it runs (not an Exception, so nothing catches it)."""


def defender_worker(fake: FakeGraph, ledger: Ledger, clock: Clock) -> Worker:
    return Worker(graph_settings(fake), TENANT, CATALOG, ledger,
                  make_graph_client(base_url=fake.base_url, max_retries=0, timeout=30), None,
                  sleep=clock.sleep, lease=LEASE)


def test_a_worker_killed_after_the_defender_post_does_not_submit_again(
        fake: FakeGraph, ledger: Ledger, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between the remediate POST and the ledger write: the next delivery (after the lease) cannot
    ask Defender whether it took the call, so it records an unconfirmed submission (verification settles
    it) instead of a second Action-center entry."""
    reqs = [email_request(f"nm-{i}", index=i) for i in range(3)]
    real = ledger.transition

    def killed(rec: Record, state: str, **fields: Any) -> Record:
        if state == "submitted":
            raise Killed()
        return real(rec, state, **fields)

    monkeypatch.setattr(ledger, "transition", killed)
    with pytest.raises(Killed):
        asyncio.run(defender_worker(fake, ledger, clock).process(reqs))
    monkeypatch.setattr(ledger, "transition", real)
    assert len(fake.remediations) == 1
    clock.now += LEASE
    outcomes = asyncio.run(defender_worker(fake, ledger, clock).process(reqs))
    assert len(fake.remediations) == 1                        # not submitted twice
    assert [o.state for o in outcomes] == ["submitted"] * 3
    assert all(ledger.get(r["id"]).extra.get("unconfirmed_submission") is True for r in reqs)


def test_a_defender_call_given_back_after_a_429_is_submitted_at_once_next_time(
        fake: FakeGraph, ledger: Ledger, clock: Clock) -> None:
    """A 429 was never processed: the row is given back after the action's answer, and the next delivery
    submits it at once (not an unconfirmed submission left to verification)."""
    req = email_request("nm-1")
    fake.inject("POST", REMEDIATE, 429, retry_after=600, times=1)   # longer than the worker waits
    with pytest.raises(TransientFailure):
        asyncio.run(defender_worker(fake, ledger, clock).process_message(body(req), 1))
    assert fake.remediations == [] and ledger.get(req["id"]).extra["intent_at"]
    [out] = asyncio.run(defender_worker(fake, ledger, clock).process_message(body(req), 2))
    assert out.state == "submitted" and len(fake.remediations) == 1
    assert ledger.get(req["id"]).extra.get("unconfirmed_submission") is None
