"""An ambiguous Defender submission is resubmitted once by verification when the message has not moved.

The ledger is real (Azurite), the Defender calls go through the real msgraph-sdk to the loopback fake
Graph, and EmailEvents is answered by the local KQL engine from the fake's own state: an email is in
the Junk folder once an accepted remediate call named it, in the Inbox before. Verification runs as the
function app's timer does, every 5 minutes (app/bootstrap.py VERIFY_DEFAULT).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from core.graph import make_graph_client
from core.settings import Settings
from core.tenant import TenantConfig
from detections.backends.local import LocalBackend
from devtools.emailevents import EmailEvents as HuntingEmailEvents
from devtools.emailevents import location_rows
from devtools.fakegraph import FakeGraph
from remediation.ledger import TRANSITIONS, IllegalTransition, Ledger
from remediation.outcome import Outcome
from remediation.reporting import Report
from remediation.worker import Worker
from tests.remediation.factories import PROTECTED, T0, email_request, make_rule

pytestmark = pytest.mark.azurite

REMEDIATE = r"analyzedEmails/microsoft\.graph\.security\.remediate$"
RULE = make_rule(max_targets=10)
TENANT = TenantConfig.from_mapping({"params": {"protected_recipients": PROTECTED}}, source="test")
VERIFY_EVERY = timedelta(minutes=5)
EMAILS = [("nm-1", "support@contoso.com"), ("nm-2", "sales@contoso.com"), ("nm-3", "info@contoso.com")]


class Clock:
    """The ledger's wall clock and the deadline's monotonic clock, both moved by the fake sleep."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return (self.now - T0).total_seconds()

    async def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Mailboxes:
    """Where each (message, recipient) is, as Defender would leave it: moved when a call naming it was
    accepted (``on_remediate``, unless ``slow``: accepted but not applied yet)."""

    def __init__(self) -> None:
        self.junk: set[tuple[str, str]] = set()
        self.slow = False
        self.lock = threading.Lock()

    def on_remediate(self, action: str, emails: list[dict[str, str]]) -> None:
        if self.slow:
            return
        with self.lock:
            self.junk |= {(e["networkMessageId"], e["recipientEmailAddress"]) for e in emails}

    def rows(self) -> list[dict[str, str]]:
        with self.lock:
            return location_rows(EMAILS, set(self.junk), T0)


class EmailEvents(HuntingEmailEvents):
    """A hunting backend reading EmailEvents from the fake's state (devtools/emailevents.py)."""

    def __init__(self, mailboxes: Mailboxes, clock: Clock) -> None:
        super().__init__(mailboxes.rows, clock)


@pytest.fixture
def run() -> Iterator[Callable[[Awaitable[Any]], Any]]:
    """One event loop for the whole test, as the function host has: the Graph client's connections
    belong to the loop they were opened on."""
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(storage_conn: str, unique_name: str, clock: Clock) -> Ledger:
    return Ledger.from_connection_string(storage_conn, unique_name, clock=clock)


@pytest.fixture
def mailboxes() -> Mailboxes:
    return Mailboxes()


@pytest.fixture
def fake(mailboxes: Mailboxes) -> Iterator[FakeGraph]:
    with FakeGraph(on_remediate=mailboxes.on_remediate) as graph:
        yield graph


def make_worker(fake: FakeGraph, ledger: Ledger, clock: Clock, reports: list[Report]) -> Worker:
    async def hook(report: Report) -> None:
        reports.append(report)

    env = {"RESPONDER_GRAPH_BASE_URL": fake.base_url, "RESPONDER_TENANT_ID": fake.tenant_id,
           "RESPONDER_EMAIL_STRATEGY": "defender"}
    return Worker(Settings.from_env(env, require=False), TENANT, {RULE.slug: RULE}, ledger,
                  make_graph_client(base_url=fake.base_url, max_retries=0, timeout=30), None,
                  report_hook=hook, sleep=clock.sleep, monotonic=clock.monotonic)


def requests() -> list[dict[str, Any]]:
    return [email_request(n, r, index=i) for i, (n, r) in enumerate(EMAILS)]


def submissions(fake: FakeGraph) -> Counter[str]:
    """Accepted remediate calls per email (what became an Action-center entry)."""
    return Counter(e["networkMessageId"] for r in fake.remediations for e in r.emails)


def verify_until(run: Callable[[Awaitable[Any]], Any], worker: Worker, backend: EmailEvents, clock: Clock,
                 until: timedelta) -> dict[str, Outcome]:
    """The verify timer, every 5 minutes from T0 + 5 min to ``T0 + until``; the last outcome per request."""
    last: dict[str, Outcome] = {}
    while clock.now - T0 < until:
        clock.now = T0 + VERIFY_EVERY * ((clock.now - T0) // VERIFY_EVERY + 1)
        last.update({o.request_id: o for o in run(worker.verify(backend))})
    return last


def states(ledger: Ledger) -> dict[str, str]:
    return {r.target["network_message_id"]: r.state for r in ledger.list()}


def test_a_503_before_processing_is_resubmitted_once_after_the_short_grace(
        run: Any, fake: FakeGraph, ledger: Ledger, clock: Clock, mailboxes: Mailboxes) -> None:
    fake.inject("POST", REMEDIATE, 503, applied=False)
    reports: list[Report] = []
    worker = make_worker(fake, ledger, clock, reports)
    out = run(worker.process(requests()))
    assert [o.state for o in out] == ["submitted"] * 3 and not fake.remediations
    assert all(r.extra["unconfirmed_submission"] is True for r in ledger.list())
    backend = EmailEvents(mailboxes, clock)
    # Before the short grace (15 minutes) nothing is sent again: the service may still apply it.
    verify_until(run, worker, backend, clock, timedelta(minutes=10))
    assert not fake.remediations and set(states(ledger).values()) == {"submitted"}
    # At 15 minutes the messages are still in the Inbox: all three go out again, in one call.
    verify_until(run, worker, backend, clock, timedelta(minutes=15))
    assert len(fake.remediations) == 1 and submissions(fake) == {n: 1 for n, _ in EMAILS}
    rows = {r.target["network_message_id"]: r for r in ledger.list()}
    assert {r.state for r in rows.values()} == {"submitted"}
    for rec in rows.values():
        assert rec.extra["resubmitted_at"] == "2026-11-20T12:15:00Z"
        assert rec.extra["first_submitted_at"] == "2026-11-20T12:00:00Z"
        assert rec.extra["unconfirmed_submission"] is False      # the resubmission was answered 202
        assert rec.link and "action-center" in rec.link and rec.extra.get("intent_at")
    # The next verification confirms them; nobody was told anything failed.
    last = verify_until(run, worker, backend, clock, timedelta(minutes=20))
    assert {o.state for o in last.values()} == {"confirmed"} and set(states(ledger).values()) == {"confirmed"}
    verify_until(run, worker, backend, clock, timedelta(hours=3))
    assert submissions(fake) == {n: 1 for n, _ in EMAILS} and not reports


def test_a_503_after_processing_is_confirmed_and_never_resubmitted(
        run: Any, fake: FakeGraph, ledger: Ledger, clock: Clock, mailboxes: Mailboxes) -> None:
    fake.inject("POST", REMEDIATE, 503, applied=True)
    reports: list[Report] = []
    worker = make_worker(fake, ledger, clock, reports)
    run(worker.process(requests()))
    assert submissions(fake) == {n: 1 for n, _ in EMAILS}
    assert all(r.extra["unconfirmed_submission"] is True for r in ledger.list())   # the 503 was ambiguous
    last = verify_until(run, worker, EmailEvents(mailboxes, clock), clock, timedelta(minutes=5))
    assert {o.state for o in last.values()} == {"confirmed"}
    verify_until(run, worker, EmailEvents(mailboxes, clock), clock, timedelta(hours=3))
    assert submissions(fake) == {n: 1 for n, _ in EMAILS} and len(fake.calls_to("POST", REMEDIATE)) == 1
    assert not any(r.extra.get("resubmitted_at") for r in ledger.list()) and not reports


def test_a_resubmission_that_fails_ambiguously_again_is_not_sent_a_third_time(
        run: Any, fake: FakeGraph, ledger: Ledger, clock: Clock, mailboxes: Mailboxes) -> None:
    fake.inject("POST", REMEDIATE, 503, applied=False, times=2)
    reports: list[Report] = []
    worker = make_worker(fake, ledger, clock, reports)
    run(worker.process(requests()))
    backend = EmailEvents(mailboxes, clock)
    verify_until(run, worker, backend, clock, timedelta(minutes=15))
    assert len(fake.calls_to("POST", REMEDIATE)) == 2        # the first call and the one resubmission
    assert all(r.extra["unconfirmed_submission"] is True and r.extra["resubmitted_at"] for r in ledger.list())
    # Still in the Inbox: waits for the normal grace (2 h from the resubmission), then not_applied, told.
    verify_until(run, worker, backend, clock, timedelta(hours=2, minutes=10))
    assert set(states(ledger).values()) == {"submitted"}
    last = verify_until(run, worker, backend, clock, timedelta(hours=2, minutes=15))
    assert {o.state for o in last.values()} == {"not_applied"}
    assert len(fake.calls_to("POST", REMEDIATE)) == 2 and not fake.remediations
    assert {r.kind for r in reports} == {"failed"}
    assert {o.target["network_message_id"] for r in reports for o in r.outcomes} == {n for n, _ in EMAILS}


def test_an_answered_submission_is_never_resubmitted_by_verification(
        run: Any, fake: FakeGraph, ledger: Ledger, clock: Clock, mailboxes: Mailboxes) -> None:
    mailboxes.slow = True   # accepted (202) but Defender has not applied it: verification only waits
    reports: list[Report] = []
    worker = make_worker(fake, ledger, clock, reports)
    run(worker.process(requests()))
    assert not any(r.extra.get("unconfirmed_submission") for r in ledger.list())
    last = verify_until(run, worker, EmailEvents(mailboxes, clock), clock, timedelta(hours=2))
    assert {o.state for o in last.values()} == {"not_applied"}
    assert submissions(fake) == {n: 1 for n, _ in EMAILS} and len(fake.calls_to("POST", REMEDIATE)) == 1


def test_an_accepted_call_applied_late_costs_one_duplicate_entry_at_most(
        run: Any, fake: FakeGraph, ledger: Ledger, clock: Clock, mailboxes: Mailboxes) -> None:
    """The trade-off, measured: the service took the call (503 after processing) but applies it later
    than the short grace. One more entry per email, never two, and the emails end up confirmed."""
    fake.inject("POST", REMEDIATE, 503, applied=True)
    mailboxes.slow = True
    worker = make_worker(fake, ledger, clock, [])
    run(worker.process(requests()))
    backend = EmailEvents(mailboxes, clock)
    verify_until(run, worker, backend, clock, timedelta(minutes=15))
    assert submissions(fake) == {n: 2 for n, _ in EMAILS}
    mailboxes.slow = False
    mailboxes.on_remediate("moveToJunk", [{"networkMessageId": n, "recipientEmailAddress": r}
                                          for n, r in EMAILS])   # Defender catches up
    last = verify_until(run, worker, backend, clock, timedelta(hours=3))
    assert submissions(fake) == {n: 2 for n, _ in EMAILS}
    assert set(states(ledger).values()) == {"confirmed"} and {o.state for o in last.values()} == {"confirmed"}


def test_a_rule_disabled_since_is_not_resubmitted(run: Any, fake: FakeGraph, ledger: Ledger, clock: Clock,
                                                  mailboxes: Mailboxes) -> None:
    fake.inject("POST", REMEDIATE, 503, applied=False)
    reports: list[Report] = []
    worker = make_worker(fake, ledger, clock, reports)
    run(worker.process(requests()))
    worker.tenant = TenantConfig.from_mapping({"params": {"protected_recipients": PROTECTED},
                                               "rules": {RULE.slug: {"enabled": False}}}, source="test")
    verify_until(run, worker, EmailEvents(mailboxes, clock), clock, timedelta(minutes=15))
    assert not fake.remediations and set(states(ledger).values()) == {"skipped"}
    assert reports and all("disabled" in r.summary for r in reports)


def test_a_throttled_resubmission_is_taken_up_again_by_the_next_verification(
        run: Any, fake: FakeGraph, ledger: Ledger, clock: Clock, mailboxes: Mailboxes) -> None:
    """No queue message exists for a reopened row: verification is its redelivery."""
    fake.inject("POST", REMEDIATE, 503, applied=False)
    fake.inject("POST", REMEDIATE, 429, retry_after=60, times=1)   # longer than max_delay: ends the try
    worker = make_worker(fake, ledger, clock, [])
    run(worker.process(requests()))
    backend = EmailEvents(mailboxes, clock)
    verify_until(run, worker, backend, clock, timedelta(minutes=15))
    assert not fake.remediations and set(states(ledger).values()) == {"received"}
    verify_until(run, worker, backend, clock, timedelta(minutes=20))
    assert submissions(fake) == {n: 1 for n, _ in EMAILS}
    verify_until(run, worker, backend, clock, timedelta(minutes=25))
    assert set(states(ledger).values()) == {"confirmed"}


def test_a_tampered_stored_request_is_failed_not_resubmitted(run: Any, fake: FakeGraph, ledger: Ledger,
                                                             clock: Clock, mailboxes: Mailboxes) -> None:
    """The row is input like any message: a stored request that is no longer valid is not acted on."""
    fake.inject("POST", REMEDIATE, 503, applied=False)
    reports: list[Report] = []
    worker = make_worker(fake, ledger, clock, reports)
    run(worker.process(requests()))
    rec = next(r for r in ledger.list() if r.target["network_message_id"] == "nm-1")
    ledger.update(rec, request={**(rec.request or {}), "action": "disable_user"})   # id no longer matches
    verify_until(run, worker, EmailEvents(mailboxes, clock), clock, timedelta(minutes=15))
    assert states(ledger) == {"nm-1": "failed", "nm-2": "submitted", "nm-3": "submitted"}
    assert submissions(fake) == {"nm-2": 1, "nm-3": 1}
    failed = ledger.get(rec.request_id)
    assert failed is not None and "stored request invalid" in (failed.error or "")
    assert any("not resubmitted" in r.summary for r in reports)


def test_a_message_a_resubmission_cannot_reach_is_not_resubmitted(run: Any, fake: FakeGraph, ledger: Ledger,
                                                                  clock: Clock, mailboxes: Mailboxes) -> None:
    """Quarantine and on-premises are not actionable for a move to Junk (Microsoft's list): wait, report."""
    fake.inject("POST", REMEDIATE, 503, applied=False)
    worker = make_worker(fake, ledger, clock, [])
    run(worker.process(requests()))
    elsewhere = {"nm-1": "Quarantine", "nm-2": "On-premises/external", "nm-3": "Failed"}

    class Unreachable(EmailEvents):
        async def run(self, query: str, *, timespan: timedelta, shape: str = "defender") -> Any:
            rows = [{**r, "LatestDeliveryLocation": elsewhere[r["NetworkMessageId"]]}
                    for r in mailboxes.rows()]
            return await LocalBackend.from_rows({"EmailEvents": rows}, clock.now, source="t").run(
                query, timespan=timespan)

    verify_until(run, worker, Unreachable(mailboxes, clock), clock, timedelta(minutes=30))
    assert not fake.remediations and set(states(ledger).values()) == {"submitted"}


# --- the ledger: submitted -> received for an unconfirmed submission only, once ------------------------

def test_only_an_unconfirmed_submission_can_be_reopened_and_only_once(ledger: Ledger) -> None:
    assert "received" not in TRANSITIONS["submitted"]
    answered, _ = ledger.receive(email_request("nm-a"))
    answered = ledger.transition(answered, "submitted", link="https://security.microsoft.com/action-center/1")
    with pytest.raises(IllegalTransition):
        ledger.reopen_unconfirmed(answered, "no")
    with pytest.raises(IllegalTransition):
        ledger.transition(answered, "received")
    unconfirmed, _ = ledger.receive(email_request("nm-b"))
    unconfirmed = ledger.transition(unconfirmed, "submitted", unconfirmed_submission=True)
    reopened = ledger.reopen_unconfirmed(unconfirmed, "resubmitting once")
    assert reopened.state == "received" and reopened.extra["resubmitted_at"]
    again = ledger.transition(reopened, "submitted", unconfirmed_submission=True)
    with pytest.raises(IllegalTransition):
        ledger.reopen_unconfirmed(again, "twice")
    not_submitted, _ = ledger.receive(email_request("nm-c"))
    with pytest.raises(IllegalTransition):
        ledger.reopen_unconfirmed(replace(not_submitted, extra={"unconfirmed_submission": True}), "no")
