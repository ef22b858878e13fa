"""Worker paths that end before any action runs: invalid input, rails, duplicates, people, poison, verify.

The ledger is real (Azurite). No Graph client is given: any attempt to act would fail the test.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from core.settings import Settings
from core.tenant import TenantConfig
from detections.backends.local import LocalBackend, parse_datetime
from notifications.reporter import CardReporter
from remediation.decisions import WorkerError
from remediation.ledger import INVALID, Ledger
from remediation.reporting import Report
from remediation.worker import TransientFailure, Worker
from tests.remediation.factories import (
    PROTECTED,
    T0,
    connector_request,
    email_request,
    make_rule,
    user_request,
)

pytestmark = pytest.mark.azurite

RULE = make_rule(max_targets=2)
CONNECTORS = make_rule("connectors", (("revoke_sessions", "auto"), ("disable_connector", "auto")),
                       recipients_param=None)
CATALOG = {RULE.slug: RULE, CONNECTORS.slug: CONNECTORS}
TENANT = TenantConfig.from_mapping({"params": {"protected_recipients": PROTECTED},
                                    "break_glass_accounts": ["bg@contoso.com"]}, source="test")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> Any:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(storage_conn: str, unique_name: str, clock: Clock) -> Ledger:
    return Ledger.from_connection_string(storage_conn, unique_name, clock=clock)


def make_worker(ledger: Ledger, reports: list[Report], **env: str) -> Worker:
    async def hook(report: Report) -> None:
        reports.append(report)

    settings = Settings.from_env(env, require=False)
    return Worker(settings, TENANT, CATALOG, ledger, graph=None, exchange=None, report_hook=hook)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_malformed_message_is_recorded_failed_and_reported(ledger: Ledger) -> None:
    reports: list[Report] = []
    worker = make_worker(ledger, reports)
    out = run(worker.process_message(b"{not json", dequeue_count=1))
    assert [o.state for o in out] == ["failed"] and "not JSON" in (out[0].error or "")
    tampered = email_request("nm-1")
    tampered["target"]["recipient"] = "other@contoso.com"   # id no longer matches the target
    out2 = run(worker.process_message(json.dumps(tampered), dequeue_count=1))
    assert out2[0].state == "failed" and "id" in (out2[0].error or "")
    rows = ledger.list(rule=INVALID)
    assert len(rows) == 2 and all(r.state == "failed" for r in rows)
    assert [r.kind for r in reports] == ["failed", "failed"]
    # Not retried: a redelivery of the same body does not raise, it updates the same row.
    run(worker.process_message(b"{not json", dequeue_count=2))
    assert len(ledger.list(rule=INVALID)) == 2


def test_approval_mode_is_held_and_reported(ledger: Ledger) -> None:
    reports: list[Report] = []
    worker = make_worker(ledger, reports)
    req = email_request("nm-1", mode="approval")
    [out] = run(worker.process_message(json.dumps(req), 1))
    assert (out.state, out.hold_reason) == ("held", "approval")
    assert [r.kind for r in reports] == ["held"] and reports[0].requests == [req]
    # The same message again changes nothing and reports nothing new.
    [again] = run(worker.process_message(json.dumps(req), 1))
    assert again.state == "held" and again.extra.get("duplicate") is True
    assert len(reports) == 1


def test_cap_holds_the_rest_of_the_run(ledger: Ledger) -> None:
    reports: list[Report] = []
    worker = make_worker(ledger, reports)
    # Targets #3 and #4 of a run whose rule caps at 2 (the first two would execute: see test_worker).
    out = run(worker.process([email_request(f"nm-{i}", index=i) for i in (2, 3)]))
    assert [(o.state, o.hold_reason) for o in out] == [("held", "cap"), ("held", "cap")]
    assert {r.kind for r in reports} == {"held"}


def test_global_dry_run_records_and_does_nothing(ledger: Ledger) -> None:
    reports: list[Report] = []
    worker = make_worker(ledger, reports, RESPONDER_DRY_RUN="true")
    out = run(worker.process([email_request("nm-1"), email_request("nm-2", index=5)]))
    assert [o.state for o in out] == ["skipped", "skipped"]
    assert all(o.extra.get("dry_run") for o in out)
    assert "RESPONDER_DRY_RUN" in out[0].detail
    assert all(r.state == "skipped" for r in ledger.list())


def test_out_of_scope_is_skipped_and_reported(ledger: Ledger) -> None:
    reports: list[Report] = []
    worker = make_worker(ledger, reports)
    out = run(worker.process([email_request("nm-1", "ceo@contoso.com"), user_request("bg@contoso.com")]))
    assert [o.state for o in out] == ["skipped", "skipped"]
    assert "protected_recipients" in out[0].detail and "break-glass" in out[1].detail
    assert [r.kind for r in reports] == ["skipped", "skipped"]


def test_reject_and_refusals(ledger: Ledger) -> None:
    worker = make_worker(ledger, [])
    req = email_request("nm-1", mode="approval")
    run(worker.process([req]))
    out = run(worker.reject(req["id"], "alice"))
    assert out.state == "rejected"
    with pytest.raises(WorkerError, match="rejected"):
        run(worker.approve(req["id"], "bob"))
    with pytest.raises(WorkerError, match="only a held request"):
        run(worker.reject(req["id"], "bob"))
    with pytest.raises(WorkerError, match="no request"):
        run(worker.approve("0" * 32, "bob"))
    with pytest.raises(WorkerError, match="only a confirmed move"):
        run(worker.undo(req["id"]))


def test_approve_refused_under_global_dry_run_keeps_it_held(ledger: Ledger) -> None:
    worker = make_worker(ledger, [])
    req = email_request("nm-1", mode="approval")
    run(worker.process([req]))
    dry = make_worker(ledger, [], RESPONDER_DRY_RUN="true")
    with pytest.raises(WorkerError, match="dry run"):
        run(dry.approve(req["id"], "bob"))
    rec = ledger.get(req["id"])
    assert rec is not None and rec.state == "held"


def test_a_live_claim_elsewhere_hands_the_message_back(ledger: Ledger) -> None:
    worker = make_worker(ledger, [])
    req = email_request("nm-1")
    rec, _ = ledger.receive(req)
    ledger.claim(rec, lease=timedelta(minutes=5), owner="someone-else")
    with pytest.raises(TransientFailure, match="another delivery"):
        run(worker.process_message(json.dumps(req), 1))
    stored = ledger.get(req["id"])
    assert stored is not None and stored.state == "received" and stored.claim_token == "someone-else"


def test_poison_message_is_recorded_failed_with_the_last_error(ledger: Ledger) -> None:
    reports: list[Report] = []
    worker = make_worker(ledger, reports)
    req = email_request("nm-1")
    rec, _ = ledger.receive(req)
    ledger.release(ledger.claim(rec, lease=timedelta(minutes=5)), error="HTTP 503 from Graph")
    out = run(worker.record_poison(json.dumps(req), 5))
    assert out.state == "failed" and "503" in (out.error or "") and "5 deliveries" in (out.error or "")
    assert reports[-1].kind == "poison"
    bad = run(worker.record_poison(b"garbage", 5))
    assert bad.state == "failed" and bad.rule == INVALID


def _submitted(ledger: Ledger, clock: Clock, nmid: str, recipient: str = "support@contoso.com",
               action: str = "move_to_junk") -> str:
    req = email_request(nmid, recipient, action=action)
    rec, _ = ledger.receive(req)
    ledger.transition(rec, "submitted", link="https://security.microsoft.com/action-center/1")
    return req["id"]


def test_verify_confirms_from_latest_delivery_location(ledger: Ledger, clock: Clock) -> None:
    reports: list[Report] = []
    worker = make_worker(ledger, reports)
    moved = _submitted(ledger, clock, 'nm"quoted\\id')         # the id must reach KQL escaped
    still_inbox = _submitted(ledger, clock, "nm-inbox")
    unseen = _submitted(ledger, clock, "nm-unseen")
    other_recipient = _submitted(ledger, clock, "nm-two", "sales@contoso.com")
    clock.now = T0 + timedelta(minutes=30)
    def row(nmid: str, recipient: str, location: str) -> dict[str, str]:
        return {"Timestamp": "now-40m", "NetworkMessageId": nmid, "RecipientEmailAddress": recipient,
                "LatestDeliveryLocation": location}

    backend = LocalBackend.from_rows({"EmailEvents": [
        row('nm"quoted\\id', "support@contoso.com", "Junk folder"),
        row("nm-inbox", "support@contoso.com", "Inbox/folder"),
        row("nm-two", "support@contoso.com", "Junk folder"),
        row("nm-two", "sales@contoso.com", "Inbox/folder"),
    ]}, clock.now, source="test")
    spans: list[timedelta] = []

    class Recording:   # the real local engine underneath; only the timespan it is given is kept
        name = "local"

        async def run(self, query: str, *, timespan: timedelta, shape: str = "defender") -> Any:
            spans.append(timespan)
            return await backend.run(query, timespan=timespan)

    clock.now = clock.now + timedelta(microseconds=250)
    out = {o.request_id: o for o in run(worker.verify(Recording()))}
    assert spans == [timedelta(days=1, minutes=30, seconds=1)]   # whole seconds, rounded up
    assert out[moved].state == "confirmed"
    assert out[still_inbox].state == "submitted" and "waiting" in out[still_inbox].detail
    assert out[unseen].state == "submitted"
    assert out[other_recipient].state == "submitted"    # judged per recipient, not per message
    # Past the grace period, what did not move is not_applied and reported.
    clock.now = T0 + timedelta(hours=3)
    backend.now = clock.now
    out = {o.request_id: o for o in run(worker.verify(backend))}
    assert moved not in out                             # settled ones are not queried again
    assert out[still_inbox].state == "not_applied" and out[unseen].state == "not_applied"
    assert {r.kind for r in reports} == {"failed"}
    stored = ledger.get(moved)
    assert stored is not None and stored.state == "confirmed" and "Junk folder" in stored.detail


class Cards:
    """A notifier that keeps what it is given (the Teams sender's interface: ``async send(card)``)."""

    def __init__(self, ok: bool = True) -> None:
        self.cards: list[dict[str, Any]] = []
        self.ok = ok

    async def send(self, card: dict[str, Any]) -> bool:
        self.cards.append(card)
        if not self.ok:
            raise RuntimeError("webhook down")
        return True


def card_kinds(cards: list[dict[str, Any]]) -> list[str]:
    return [kind for c in cards for kind in ("approval", "failure") if f'"xdr-{kind}"' in json.dumps(c)]


def test_with_a_notifier_holds_and_failures_become_teams_cards(ledger: Ledger) -> None:
    cards = Cards()
    settings = Settings.from_env({}, require=False)
    reporter = CardReporter(cards, connector_actions=settings.connector_actions)
    worker = Worker(settings, TENANT, CATALOG, ledger, graph=None, exchange=None, reporter=reporter)
    req = connector_request("Partner relay")
    run(worker.process([req]))
    run(worker.process_message(b"garbage", 1))
    assert card_kinds(cards.cards) == ["approval", "failure"]
    assert "Set-InboundConnector -Identity 'Partner relay' -Enabled:$false" in json.dumps(cards.cards[0])


def test_a_card_that_cannot_be_sent_never_breaks_remediation(ledger: Ledger) -> None:
    cards = Cards(ok=False)
    worker = Worker(Settings.from_env({}, require=False), TENANT, CATALOG, ledger, graph=None, exchange=None,
                    reporter=CardReporter(cards))
    [out] = run(worker.process([email_request("nm-1", mode="approval")]))
    assert out.state == "held" and len(cards.cards) == 1


def test_a_duplicate_never_settles_a_request_someone_is_executing(ledger: Ledger) -> None:
    """A later scan's copy of the request falls past the cap (index 9), while the first copy is being
    executed: the duplicate must neither hold nor skip the row under the executor's feet."""
    worker = make_worker(ledger, [])
    req = email_request("nm-1")
    rec, _ = ledger.receive(req)
    ledger.claim(rec, lease=timedelta(minutes=5), owner="executor")
    late = dict(req, run={"id": "run-2", "index": 9, "total": 10})
    with pytest.raises(TransientFailure):
        run(worker.process_message(json.dumps(late), 1))
    stored = ledger.get(req["id"])
    assert stored is not None and (stored.state, stored.claim_token) == ("received", "executor")


def test_on_call_hears_of_a_capped_run_once_not_once_per_message(ledger: Ledger) -> None:
    reports: list[Report] = []
    worker = make_worker(ledger, reports)
    for i in range(2, 6):    # four targets past the cap of 2, each its own queue message
        run(worker.process_message(json.dumps(email_request(f"nm-{i}", index=i)), 1))
    assert [(r.kind, len(r.outcomes)) for r in reports] == [("held", 1)]
    run(worker.process([email_request(f"nm-x{i}", index=i, run="run-2") for i in range(2, 5)]))
    assert [(r.kind, len(r.outcomes)) for r in reports] == [("held", 1), ("held", 3)]
    assert "(3 requests)" in reports[-1].summary
    assert all(r.state == "held" for r in ledger.list(state="held")) and len(ledger.list(state="held")) == 7


class ServiceTimespan:
    """The local engine under the hunting service's timespan: a query sees only rows whose Timestamp is
    within ``timespan`` of now ("If provided, the query will be executed within this timespan",
    https://learn.microsoft.com/graph/api/security-security-runhuntingquery)."""

    name = "local"

    def __init__(self, rows: list[dict[str, Any]], clock: Clock) -> None:
        self.rows, self.clock, self.spans = rows, clock, []

    async def run(self, query: str, *, timespan: timedelta, shape: str = "defender") -> Any:
        self.spans.append(timespan)
        since = self.clock.now - timespan
        seen = [r for r in self.rows if parse_datetime(r["Timestamp"], self.clock.now) >= since]
        return await LocalBackend.from_rows({"EmailEvents": seen}, self.clock.now, source="t").run(
            query, timespan=timespan)


def test_verify_finds_a_week_old_message_approved_today(ledger: Ledger, clock: Clock) -> None:
    # Detected (and mailed) at T0, approved and submitted a week later: EmailEvents has the row at the
    # mail's time, so the query must reach back a week, not a day before the submission.
    req = email_request("nm-old", Timestamp="2026-11-20T11:58:00Z")
    clock.now = T0 + timedelta(days=7)
    rec, _ = ledger.receive(req)
    ledger.transition(rec, "submitted", link="https://security.microsoft.com/action-center/1")
    clock.now += timedelta(minutes=20)
    backend = ServiceTimespan([{"Timestamp": "2026-11-20T11:58:00Z", "NetworkMessageId": "nm-old",
                                "RecipientEmailAddress": "support@contoso.com",
                                "LatestDeliveryLocation": "Junk folder"}], clock)
    [out] = run(make_worker(ledger, []).verify(backend))
    assert out.state == "confirmed"
    assert backend.spans == [timedelta(days=8, minutes=22)]   # from a day before the mail's time


def test_verify_timespan_is_at_most_the_30_days_hunting_keeps(ledger: Ledger, clock: Clock) -> None:
    req = email_request("nm-ancient", Timestamp="2026-10-01T00:00:00Z")
    clock.now = T0 + timedelta(days=20)
    rec, _ = ledger.receive(req)
    ledger.transition(rec, "submitted", link="https://security.microsoft.com/action-center/1")
    backend = ServiceTimespan([], clock)
    [out] = run(make_worker(ledger, []).verify(backend))
    assert backend.spans == [timedelta(days=30)]
    # Mailed 60 days ago: no row can ever show it, so it is not waited on until the grace period ends.
    assert out.state == "not_applied" and "older than the 30 days" in out.detail


def test_locations_compare_case_insensitively_and_an_unknown_one_is_settled_and_logged_once(
        ledger: Ledger, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    ids = {name: _submitted(ledger, clock, name) for name in ("nm-upper", "nm-docs", "nm-new-1", "nm-new-2")}
    clock.now = T0 + timedelta(minutes=10)
    rows = [{"Timestamp": "now-15m", "NetworkMessageId": n, "RecipientEmailAddress": "support@contoso.com",
             "LatestDeliveryLocation": loc}
            for n, loc in (("nm-upper", "JUNK FOLDER"), ("nm-docs", "Junk"),
                           ("nm-new-1", "Recoverable items (new spelling)"),
                           ("nm-new-2", "recoverable ITEMS (new spelling)"))]
    backend = ServiceTimespan(rows, clock)
    with caplog.at_level("WARNING", logger="remediation.verify"):
        out = {o.request_id: o for o in run(make_worker(ledger, []).verify(backend))}
        run(make_worker(ledger, []).verify(backend))
    assert out[ids["nm-upper"]].state == "confirmed" and out[ids["nm-docs"]].state == "confirmed"
    for name in ("nm-new-1", "nm-new-2"):   # within the grace period, yet settled: waiting cannot help
        assert out[ids[name]].state == "not_applied"
        assert "a location this app does not know" in out[ids[name]].detail
    warnings = [r for r in caplog.records if "verification does not know" in r.getMessage()]
    assert len(warnings) == 1 and "recoverable items (new spelling)" in warnings[0].getMessage().lower()
