"""The worker end to end: real msgraph-sdk client -> loopback FakeGraph, ledger on Azurite, faults injected.

Each test asserts the exact calls the fake received, the ledger rows, and that nothing is lost or done
twice. The worker's sleeps are recorded instead of slept (no timing assertions); the SDK's own
RetryHandler is off (``max_retries=0``) except in the test about it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from core.graph import make_graph_client
from core.settings import Settings
from core.tenant import TenantConfig
from devtools.fakegraph import FakeGraph
from remediation.decisions import WorkerError
from remediation.exchange import ExchangeClient
from remediation.ledger import Ledger
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

REMEDIATE = r"analyzedEmails/microsoft\.graph\.security\.remediate$"
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


class Harness:
    """A worker wired to the fake and the ledger, with its reports and sleeps recorded."""

    def __init__(self, fake: FakeGraph, ledger: Ledger) -> None:
        self.fake, self.ledger = fake, ledger
        self.reports: list[Report] = []
        self.sleeps: list[float] = []

    def worker(self, *, strategy: str = "defender", max_retries: int = 0, exchange: Any = None,
               timeout: float = 60.0, **env: str) -> Worker:
        settings = Settings.from_env({"RESPONDER_GRAPH_BASE_URL": self.fake.base_url,
                                      "RESPONDER_EMAIL_STRATEGY": strategy,
                                      "RESPONDER_TENANT_ID": self.fake.tenant_id, **env}, require=False)

        async def hook(report: Report) -> None:
            self.reports.append(report)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        graph = make_graph_client(base_url=self.fake.base_url, max_retries=max_retries, timeout=timeout)
        return Worker(settings, TENANT, CATALOG, self.ledger, graph, exchange, report_hook=hook, sleep=sleep)

    def run(self, body: Callable[[Worker], Awaitable[Any]], **kw: Any) -> Any:
        async def main() -> Any:   # the clients are built inside the running loop
            exchange = ExchangeClient(self.fake.tenant_id, base_url=self.fake.exchange_base_url)
            try:
                return await body(self.worker(exchange=exchange, **kw))
            finally:
                await exchange.aclose()
        return asyncio.run(main())

    def row(self, request: dict[str, Any]) -> Any:
        rec = self.ledger.get(request["id"])
        assert rec is not None
        return rec


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def h(storage_conn: str, unique_name: str, clock: Clock) -> Any:
    with FakeGraph() as fake:
        yield Harness(fake, Ledger.from_connection_string(storage_conn, unique_name, clock=clock))


def body(request: dict[str, Any]) -> str:
    return json.dumps(request)


def emails(call: Any) -> list[tuple[str, str]]:
    return [(e["networkMessageId"], e["recipientEmailAddress"]) for e in call.json["analyzedEmails"]]


# --- the happy paths ------------------------------------------------------------------------------------

def test_batch_submits_a_run_in_one_defender_call_and_records_it(h: Harness) -> None:
    reqs = [email_request("nm-1"), email_request("nm-1", "sales@contoso.com", index=1)]
    out = h.run(lambda w: w.process(reqs))
    [call] = h.fake.calls
    assert call.method == "POST" and call.path.endswith("analyzedEmails/microsoft.graph.security.remediate")
    assert emails(call) == [("nm-1", "support@contoso.com"), ("nm-1", "sales@contoso.com")]
    assert call.json["action"] == "moveToJunk" and call.json["remediateSendersCopy"] is False
    location = h.fake.remediations[0].location
    assert [(o.state, o.link, o.attempts) for o in out] == [("submitted", location, 1)] * 2
    for r in reqs:
        rec = h.row(r)
        assert (rec.state, rec.link, rec.claim_token is None) == ("submitted", location, True)
        assert set(rec.state_times) == {"received", "submitted"}


def test_mailbox_strategy_moves_and_confirms_at_once(h: Harness) -> None:
    h.fake.mailboxes.add("support@contoso.com", "<m1@x>")
    req = email_request("nm-1", imid="<m1@x>")
    [out] = h.run(lambda w: w.process_message(body(req), 1), strategy="mailbox")
    assert out.state == "confirmed"
    assert h.fake.mailboxes.folder_of("support@contoso.com", "<m1@x>") == "junkemail"
    assert [c.method for c in h.fake.calls_to("POST", r"/move$")] == ["POST"]
    assert h.row(req).undo["original_folder"]


def test_account_action_runs_and_break_glass_is_never_called(h: Harness) -> None:
    h.fake.users.add("mallory@contoso.com")
    h.fake.users.add("bg@contoso.com")
    out = h.run(lambda w: w.process([user_request("mallory@contoso.com"), user_request("bg@contoso.com")]))
    assert [o.state for o in out] == ["confirmed", "skipped"]
    assert [c.path for c in h.fake.calls] == ["/v1.0/users/mallory@contoso.com/revokeSignInSessions"]


def test_privileged_target_is_recorded_not_retried_and_explained_on_the_card(h: Harness) -> None:
    from notifications.reporter import card_for

    admin = h.fake.users.add("ga@contoso.com", privileged_role="Global Administrator")
    req = user_request(admin.id)
    [out] = h.run(lambda w: w.process([req]), max_retries=3)
    assert (out.state, out.extra.get("blocked"), out.attempts) == ("failed", "privileged_target", 1)
    assert len(h.fake.calls_to("POST", "revokeSignInSessions$")) == 1 and h.sleeps == []
    assert h.row(req).extra["blocked"] == "privileged_target"
    [report] = h.reports
    text = json.dumps(card_for(report))
    assert "target is privileged: the identity needs role Privileged Authentication Administrator" in text
    assert "Privileged targets" in text and "Not retried" in text


# --- idempotency ----------------------------------------------------------------------------------------

def test_duplicate_delivery_never_acts_twice(h: Harness) -> None:
    req = email_request("nm-1")

    async def twice(w: Worker) -> list[Any]:
        first = await w.process_message(body(req), 1)
        again = await w.process_message(body(req), 1)
        # A later scan finds the same thing again (new run, same id): still nothing new.
        later = dict(req, run={"id": "run-2", "index": 0, "total": 1})
        return first + again + await w.process_message(body(later), 1)

    out = h.run(twice)
    assert len(h.fake.remediations) == 1
    assert [o.state for o in out] == ["submitted"] * 3
    assert [bool(o.extra.get("duplicate")) for o in out] == [False, True, True]


def test_mailbox_already_moved_is_skipped_not_failed(h: Harness) -> None:
    h.fake.mailboxes.add("support@contoso.com", "<m1@x>", folder="junkemail")
    [out] = h.run(lambda w: w.process([email_request("nm-1", imid="<m1@x>")]), strategy="mailbox")
    assert out.state == "skipped" and "already" in out.detail
    assert h.fake.calls_to("POST", r"/move$") == []


def test_crash_between_action_and_ledger_write_redelivery_converges(
        h: Harness, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The move happened, then the process died before recording it. No delivery takes a live claim
    over, not even the same message redelivered: it is handed back until the lease expires. Then the
    next delivery takes the expired claim, re-checks the mailbox and finds the message already in Junk.
    One move in total; nothing is lost. (The row's intent makes it a prior attempt: once the actions
    recognise prior attempts it is recorded ``confirmed`` with its undo information, issue 13.)"""
    h.fake.mailboxes.add("support@contoso.com", "<m1@x>")
    req = email_request("nm-1", imid="<m1@x>")
    real = h.ledger.transition

    def crash_on_confirm(rec: Any, state: str, **fields: Any) -> Any:
        if state == "confirmed":
            raise RuntimeError("host died")
        return real(rec, state, **fields)

    monkeypatch.setattr(h.ledger, "transition", crash_on_confirm)
    with pytest.raises(RuntimeError, match="host died"):
        h.run(lambda w: w.process_message(body(req), 1), strategy="mailbox")
    monkeypatch.setattr(h.ledger, "transition", real)
    crashed = h.row(req)
    assert crashed.state == "received" and crashed.claim_token and crashed.extra["intent_at"]
    # Neither another message carrying the same request nor this one redelivered acts while it is live.
    other = dict(req, run={"id": "run-2", "index": 0, "total": 1})
    for again, count in ((other, 1), (req, 2)):
        with pytest.raises(TransientFailure) as info:
            h.run(lambda w, a=again, c=count: w.process_message(body(a), c), strategy="mailbox")
        assert info.value.outcomes[0].extra["in_flight"] is True
    clock.now += timedelta(minutes=5, seconds=1)   # the dead delivery's lease ends
    [out] = h.run(lambda w: w.process_message(body(req), 3), strategy="mailbox")
    assert out.state in ("skipped", "confirmed") and "already in Junk" in out.detail
    assert len(h.fake.calls_to("POST", r"/move$")) == 1
    assert h.row(req).attempts == 2


def test_crash_with_defender_is_left_to_verification_not_resubmitted(h: Harness, clock: Clock,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Defender has no status API to re-check, so after a crash between the POST and the ledger write the
    delivery after the lease does not submit again: it records the email ``submitted`` and unconfirmed, and
    verification resends it once if the mail has not moved (docs/remediation.md, "Work done before an
    error"). Before issue 13 this was a second Action-center entry for the same email."""
    req = email_request("nm-1")
    real = h.ledger.transition

    def crash(rec: Any, state: str, **fields: Any) -> Any:
        raise RuntimeError("host died")

    monkeypatch.setattr(h.ledger, "transition", crash)
    with pytest.raises(RuntimeError):
        h.run(lambda w: w.process_message(body(req), 1))
    monkeypatch.setattr(h.ledger, "transition", real)
    with pytest.raises(TransientFailure):   # the claim is still live
        h.run(lambda w: w.process_message(body(req), 2))
    clock.now += timedelta(minutes=5, seconds=1)
    [out] = h.run(lambda w: w.process_message(body(req), 3))
    assert out.state == "submitted" and len(h.fake.remediations) == 1
    assert h.ledger.get(req["id"]).extra.get("unconfirmed_submission") is True
    [again] = h.run(lambda w: w.process_message(body(req), 4))
    assert again.extra.get("duplicate") and len(h.fake.remediations) == 1


def test_a_processed_503_is_submitted_once_and_never_replayed(h: Harness) -> None:
    """Decision pinned (issue 13): the remediate POST is never replayed, by the SDK or the worker. A 503
    after the service did the work is recorded ``submitted`` (verification settles it): one entry at
    the service, one attempt, no sleep; a redelivery adds nothing."""
    h.fake.inject("POST", REMEDIATE, 503, retry_after=1, applied=True)
    req = email_request("nm-1")
    [out] = h.run(lambda w: w.process_message(body(req), 1), max_retries=1)
    assert [c.status for c in h.fake.calls] == [503] and len(h.fake.remediations) == 1
    assert (out.state, out.attempts) == ("submitted", 1) and h.sleeps == []
    h.run(lambda w: w.process_message(body(req), 2), max_retries=1)
    assert len(h.fake.remediations) == 1


# --- faults ---------------------------------------------------------------------------------------------

def test_429_with_retry_after_is_honoured_then_retried(h: Harness) -> None:
    h.fake.inject("POST", REMEDIATE, 429, retry_after=7)
    req = email_request("nm-1")
    [out] = h.run(lambda w: w.process_message(body(req), 1))
    assert h.sleeps == [7.0]
    assert [c.status for c in h.fake.calls] == [429, 202]
    assert (out.state, out.attempts) == ("submitted", 2)


def test_persistent_429_returns_the_message_then_the_redelivery_succeeds(h: Harness) -> None:
    h.fake.inject("POST", REMEDIATE, 429, times=3)
    req = email_request("nm-1")
    with pytest.raises(TransientFailure) as info:
        h.run(lambda w: w.process_message(body(req), 1))
    assert h.sleeps == [2.0, 4.0]                         # bounded: 3 attempts, exponential backoff
    assert [c.status for c in h.fake.calls] == [429, 429, 429] and h.fake.remediations == []
    rec = h.row(req)
    assert (rec.state, rec.claim_token, rec.attempts) == ("received", None, 3) and "429" in rec.error
    assert info.value.outcomes[0].extra["transient"] is True
    [out] = h.run(lambda w: w.process_message(body(req), 2))
    assert (out.state, out.attempts, out.error) == ("submitted", 4, None)
    assert len(h.fake.remediations) == 1


def test_a_timeout_is_submitted_unconfirmed_and_not_resubmitted(h: Harness) -> None:
    """The call outlasts the client's timeout: the service may still carry it out, so it is recorded
    ``submitted`` (verification settles it) and never sent a second time."""
    h.fake.add_latency(1.5, "POST", REMEDIATE, times=1)
    req = email_request("nm-1")
    [out] = h.run(lambda w: w.process_message(body(req), 1), timeout=0.5)
    assert (out.state, out.attempts) == ("submitted", 1) and h.sleeps == []
    assert len(h.fake.calls_to("POST", REMEDIATE)) == 1
    assert h.row(req).state == "submitted"


def test_retry_after_longer_than_the_cap_ends_the_delivery_without_sleeping(h: Harness) -> None:
    h.fake.inject("POST", REMEDIATE, 429, retry_after=600)
    with pytest.raises(TransientFailure) as info:
        h.run(lambda w: w.process_message(body(email_request("nm-1")), 1))
    assert h.sleeps == [] and info.value.retry_after == 600.0


@pytest.mark.parametrize("status", [400, 403])
def test_permanent_errors_are_failed_reported_and_not_retried(h: Harness, status: int) -> None:
    h.fake.inject("POST", REMEDIATE, status, message=f"nope {status}")
    req = email_request("nm-1")
    [out] = h.run(lambda w: w.process_message(body(req), 1))   # no raise: the message is consumed
    assert out.state == "failed" and f"HTTP {status}" in (out.error or "")
    assert len(h.fake.calls) == 1 and h.sleeps == []
    assert [r.kind for r in h.reports] == ["failed"]
    assert h.row(req).state == "failed"


def test_404_mailbox_is_failed(h: Harness) -> None:
    h.fake.inject("GET", r"/users/support@contoso.com/messages$", 404, code="ErrorItemNotFound", times=None)
    [out] = h.run(lambda w: w.process([email_request("nm-1", imid="<m1@x>")]), strategy="mailbox")
    assert out.state == "failed" and "404" in (out.error or "")
    assert h.sleeps == [] and h.row(email_request("nm-1", imid="<m1@x>")).state == "failed"


def test_sdk_replay_of_a_processed_mailbox_move_is_not_a_failure(h: Harness) -> None:
    """The move succeeded but answered 503; the SDK replays it with the old message id and gets 404.
    The action re-reads the mailbox, so the worker records one confirmed move with its undo info."""
    h.fake.mailboxes.add("support@contoso.com", "<m1@x>")
    h.fake.inject("POST", r"/move$", 503, retry_after=1, applied=True)
    req = email_request("nm-1", imid="<m1@x>")
    [out] = h.run(lambda w: w.process_message(body(req), 1), strategy="mailbox", max_retries=1)
    assert [c.status for c in h.fake.calls_to("POST", r"/move$")] == [503, 404]
    assert (out.state, out.attempts) == ("confirmed", 1) and h.reports == []
    assert h.fake.mailboxes.folder_of("support@contoso.com", "<m1@x>") == "junkemail"
    assert h.row(req).undo["original_folder"]


def test_malformed_message_is_recorded_and_reported(h: Harness) -> None:
    [out] = h.run(lambda w: w.process_message("{]", 1))
    assert out.state == "failed" and h.fake.calls == [] and [r.kind for r in h.reports] == ["failed"]


# --- rails through the worker ---------------------------------------------------------------------------

def test_cap_holds_past_max_targets_and_tells_on_call(h: Harness) -> None:
    reqs = [email_request(f"nm-{i}", index=i) for i in range(3)]

    async def each(w: Worker) -> list[Any]:
        return [o for r in reqs for o in await w.process_message(body(r), 1)]

    out = h.run(each)
    assert [(o.state, o.hold_reason) for o in out] == [("submitted", None)] * 2 + [("held", "cap")]
    assert sorted(p for c in h.fake.calls for p in emails(c)) == [("nm-0", "support@contoso.com"),
                                                                  ("nm-1", "support@contoso.com")]
    assert [r.kind for r in h.reports] == ["held"]


def test_global_dry_run_calls_nothing(h: Harness) -> None:
    out = h.run(lambda w: w.process([email_request("nm-1"), user_request("mallory@contoso.com")]),
                RESPONDER_DRY_RUN="true")
    assert [o.state for o in out] == ["skipped", "skipped"] and h.fake.calls == []


def test_approval_runs_exactly_once(h: Harness) -> None:
    req = email_request("nm-1", mode="approval")
    [held] = h.run(lambda w: w.process_message(body(req), 1))
    assert (held.state, held.hold_reason) == ("held", "approval") and h.fake.calls == []
    out = h.run(lambda w: w.approve(req["id"], "alice"))
    assert out.state == "submitted" and len(h.fake.remediations) == 1
    assert h.row(req).extra["approved_by"] == "alice"
    with pytest.raises(WorkerError, match="submitted"):
        h.run(lambda w: w.approve(req["id"], "bob"))
    with pytest.raises(WorkerError):
        h.run(lambda w: w.reject(req["id"], "bob"))
    h.run(lambda w: w.process_message(body(req), 1))          # a late duplicate message
    assert len(h.fake.remediations) == 1


def test_approving_a_capped_request_runs_it(h: Harness) -> None:
    req = email_request("nm-9", index=5)
    h.run(lambda w: w.process([req]))
    assert h.row(req).hold_reason == "cap"
    assert h.run(lambda w: w.approve(req["id"], "alice")).state == "submitted"
    assert emails(h.fake.calls[0]) == [("nm-9", "support@contoso.com")]


def test_connector_waits_for_approval_with_the_exact_command_then_runs_once(h: Harness) -> None:
    h.fake.connectors.add("Partner relay", "inbound")
    req = connector_request("Partner relay")
    approval = {"RESPONDER_CONNECTOR_ACTIONS": "approval"}
    [held] = h.run(lambda w: w.process_message(body(req), 1), **approval)
    assert held.hold_reason == "approval"
    assert "Set-InboundConnector -Identity 'Partner relay' -Enabled:$false" in held.detail
    assert h.fake.calls == [] and h.fake.connectors.get("Partner relay")["Enabled"] is True
    out = h.run(lambda w: w.approve(req["id"], "alice"), **approval)
    assert out.state == "confirmed" and h.fake.connectors.get("Partner relay")["Enabled"] is False
    cmdlets = [(c.json or {}).get("CmdletInput", {}).get("CmdletName") for c in h.fake.calls]
    assert cmdlets.count("Set-InboundConnector") == 1


def test_connector_runs_at_once_when_the_tenant_opted_in(h: Harness) -> None:
    h.fake.connectors.add("Partner relay", "inbound")
    [out] = h.run(lambda w: w.process([connector_request("Partner relay")]),
                  RESPONDER_CONNECTOR_ACTIONS="auto")
    assert out.state == "confirmed" and h.fake.connectors.get("Partner relay")["Enabled"] is False


def test_manual_connector_approve_calls_nothing_and_done_records_who_ran_it(h: Harness) -> None:
    # The default deployment (connectorActions=manual) grants no Exchange permission: approving must not
    # call Exchange (it would answer 401/403 and the request would end failed).
    h.fake.connectors.add("Partner relay", "inbound")
    req = connector_request("Partner relay")
    [held] = h.run(lambda w: w.process_message(body(req), 1))
    assert held.state == "held" and "RESPONDER_CONNECTOR_ACTIONS=manual" in held.detail
    with pytest.raises(WorkerError) as refused:
        h.run(lambda w: w.approve(req["id"], "alice"))
    message = str(refused.value)
    assert "Set-InboundConnector -Identity 'Partner relay' -Enabled:$false" in message
    assert f"python -m responder approve {req['id']} --done" in message and '{"done": true}' in message
    assert h.row(req).state == "held"
    out = h.run(lambda w: w.approve(req["id"], "alice", claimed_by="Alice A.", done=True))
    assert (out.state, out.detail.split(":")[0]) == ("confirmed", "run by hand by alice")
    row = h.row(req)
    assert row.extra["approved_by"] == "alice" and row.extra["claimed_by"] == "Alice A."
    assert h.fake.calls == [] and h.fake.connectors.get("Partner relay")["Enabled"] is True
    with pytest.raises(WorkerError, match="confirmed"):
        h.run(lambda w: w.approve(req["id"], "bob", done=True))


def test_done_is_refused_where_approving_runs_the_action(h: Harness) -> None:
    email = email_request("nm-done", mode="approval")
    h.run(lambda w: w.process([email]))
    with pytest.raises(WorkerError, match="only for connector requests"):
        h.run(lambda w: w.approve(email["id"], "alice", done=True))
    h.fake.connectors.add("Partner relay", "inbound")
    req = connector_request("Partner relay")
    h.run(lambda w: w.process([req]), RESPONDER_CONNECTOR_ACTIONS="approval")
    with pytest.raises(WorkerError, match="only for connector requests"):
        h.run(lambda w: w.approve(req["id"], "alice", done=True), RESPONDER_CONNECTOR_ACTIONS="approval")
    assert h.row(email).state == h.row(req).state == "held" and h.fake.calls == []


# --- undo -----------------------------------------------------------------------------------------------

def test_undo_puts_a_confirmed_move_back_where_it_was(h: Harness) -> None:
    h.fake.mailboxes.add("support@contoso.com", "<m1@x>")
    req = email_request("nm-1", imid="<m1@x>")
    h.run(lambda w: w.process([req]), strategy="mailbox")
    assert h.fake.mailboxes.folder_of("support@contoso.com", "<m1@x>") == "junkemail"
    out = h.run(lambda w: w.undo(req["id"], "alice"), strategy="mailbox")
    assert (out.action, out.state) == ("move_to_inbox", "confirmed")
    assert h.fake.mailboxes.folder_of("support@contoso.com", "<m1@x>") == "inbox"
    assert h.row(req).extra["undone_by"] == out.request_id
    undo_row = h.ledger.get(out.request_id)
    assert undo_row is not None and undo_row.extra["undo_of"] == req["id"]
    with pytest.raises(WorkerError, match="already undone"):
        h.run(lambda w: w.undo(req["id"]), strategy="mailbox")
    assert len(h.fake.calls_to("POST", r"/move$")) == 2


def test_undo_needs_a_confirmed_move(h: Harness) -> None:
    req = email_request("nm-1")
    h.run(lambda w: w.process([req]))                          # defender: submitted, not confirmed
    with pytest.raises(WorkerError, match="confirmed"):
        h.run(lambda w: w.undo(req["id"]))


# --- grouping on the queue path -------------------------------------------------------------------------

def test_registered_siblings_are_submitted_together_and_their_messages_do_nothing(h: Harness) -> None:
    reqs = [email_request("nm-a", index=0), email_request("nm-b", "sales@contoso.com", index=1),
            email_request("nm-c", "info@contoso.com", index=2)]   # #3 is past the cap of 2

    async def flow(w: Worker) -> list[Any]:
        assert w.register(reqs) == 3
        return [await w.process_message(body(r), 1) for r in reqs]

    first, second, third = h.run(flow)
    [call] = h.fake.calls
    assert emails(call) == [("nm-a", "support@contoso.com"), ("nm-b", "sales@contoso.com")]
    # The first message reports its own request, then the sibling it took along.
    assert [(o.request_id, o.state) for o in first] == [(reqs[0]["id"], "submitted"),
                                                         (reqs[1]["id"], "submitted")]
    assert [(o.state, o.extra.get("duplicate")) for o in second] == [("submitted", True)]
    assert [(o.state, o.hold_reason) for o in third] == [("held", "cap")]
    assert h.row(reqs[1]).extra["executed_by"] == h.row(reqs[0]).extra["executed_by"]


def test_a_sibling_claimed_elsewhere_is_left_alone(h: Harness) -> None:
    reqs = [email_request("nm-a"), email_request("nm-b", "sales@contoso.com", index=1)]

    async def flow(w: Worker) -> list[Any]:
        w.register(reqs)
        other = h.ledger.get(reqs[1]["id"])
        h.ledger.claim(other, lease=timedelta(minutes=5), owner="another-worker")
        return await w.process_message(body(reqs[0]), 1)

    h.run(flow)
    assert emails(h.fake.calls[0]) == [("nm-a", "support@contoso.com")]
    assert h.row(reqs[1]).state == "received" and h.row(reqs[1]).claim_token == "another-worker"


# --- dry run first, then live (request ids do not depend on the mode) ---------------------------------

@pytest.mark.parametrize("how", ["global", "rule"])
def test_dry_run_then_live_acts_once_and_the_row_keeps_its_history(h: Harness, how: str) -> None:
    # "rule": the scan gave the request its rule's dry_run mode. "global": an auto-mode message meets
    # RESPONDER_DRY_RUN at the worker (e.g. queued just before the switch was turned on).
    dry = email_request("nm-1", mode="dry_run" if how == "rule" else "auto", run="run-dry")
    env = {"RESPONDER_DRY_RUN": "true"} if how == "global" else {}
    [first] = h.run(lambda w: w.process_message(body(dry), 1), **env)
    assert first.state == "skipped" and first.extra["dry_run"] is True and h.fake.calls == []
    # The same delivery again while the decision is still dry run: a no-op.
    [again] = h.run(lambda w: w.process_message(body(dry), 2), **env)
    assert again.state == "skipped" and again.extra.get("duplicate") and h.fake.calls == []
    # The live run's request for the same finding: same id, and now it is acted on, once.
    live = email_request("nm-1", run="run-live")
    assert live["id"] == dry["id"]
    [acted] = h.run(lambda w: w.process_message(body(live), 1))
    assert acted.state == "submitted" and not acted.extra.get("duplicate")
    assert [e["networkMessageId"] for r in h.fake.remediations for e in r.emails] == ["nm-1"]
    row = h.row(live)
    # History: dry run first (when, why, which run), then what happened.
    assert row.state == "submitted" and {"skipped", "received", "submitted"} <= set(row.state_times)
    assert row.extra["dry_run_at"] == row.state_times["skipped"]
    assert row.extra["dry_run_run_id"] == "run-dry" and row.run_id == "run-live"
    assert ("RESPONDER_DRY_RUN" if how == "global" else "mode dry_run") in row.extra["dry_run_detail"]
    assert row.mode == "auto" and row.request["run"]["id"] == "run-live"
    # Neither message acts again (the dry one included, now that the row is past the dry run).
    for late in (live, dry):
        [dup] = h.run(lambda w, late=late: w.process_message(body(late), 3))
        assert dup.state == "submitted" and dup.extra.get("duplicate")
    assert len(h.fake.remediations) == 1


def test_a_skip_that_was_not_a_dry_run_stays_settled(h: Harness) -> None:
    out_of_scope = email_request("nm-1", "ceo@contoso.com", mode="dry_run")
    [first] = h.run(lambda w: w.process_message(body(out_of_scope), 1))
    assert first.state == "skipped" and "out of scope" in first.detail and not first.extra.get("dry_run")
    [later] = h.run(lambda w: w.process_message(body(email_request("nm-1", "ceo@contoso.com")), 1))
    assert later.state == "skipped" and later.extra.get("duplicate") and h.fake.calls == []


def test_a_live_delivery_still_dry_run_by_the_global_switch_is_a_no_op(h: Harness) -> None:
    dry = email_request("nm-1", mode="dry_run")
    h.run(lambda w: w.process_message(body(dry), 1), RESPONDER_DRY_RUN="true")
    # An auto-mode message (e.g. queued before the switch was turned on) while the switch is on.
    [out] = h.run(lambda w: w.process_message(body(email_request("nm-1")), 1), RESPONDER_DRY_RUN="true")
    assert out.state == "skipped" and out.extra.get("duplicate") and h.fake.calls == []
    assert "reopened_at" not in h.row(dry).extra


# --- decisions through the queue (the approval page, the CLI without --local) -----------------------------

def test_an_approved_row_on_the_queue_runs_once(h: Harness) -> None:
    from remediation.decisions import Decisions, RecordOnly

    req = email_request("nm-q", mode="approval")
    h.run(lambda w: w.process_message(body(req), 1))
    assert h.row(req).state == "held" and h.fake.calls == []
    settings = Settings.from_env({"RESPONDER_GRAPH_BASE_URL": h.fake.base_url}, require=False)
    Decisions(RecordOnly(settings, TENANT, CATALOG, h.ledger)).record_approval(req["id"], "alice",
                                                                                decided_via="page")
    assert h.row(req).state == "approved" and h.fake.calls == []
    h.run(lambda w: w.process_message(body(req), 1))
    h.run(lambda w: w.process_message(body(req), 1))          # a second delivery
    assert h.row(req).state == "submitted" and len(h.fake.remediations) == 1


def test_a_message_claiming_to_be_an_undo_is_not_a_restore(h: Harness) -> None:
    from core.request import make_request

    h.fake.mailboxes.add("support@contoso.com", "<f@x>")
    req = email_request("nm-f", imid="<f@x>")
    h.run(lambda w: w.process([req]), strategy="mailbox")
    assert h.fake.mailboxes.folder_of("support@contoso.com", "<f@x>") == "junkemail"
    forged = make_request(rule=req["rule"], action="move_to_inbox", mode="auto", target=req["target"],
                          evidence={}, detected_at=T0, run={"id": "x", "index": 0, "total": 1},
                          undo_of={"request_id": req["id"], "undo": {}, "by": "mallory"})
    h.run(lambda w: w.process_message(body(forged), 1), strategy="mailbox")
    assert h.row(forged).state != "confirmed"
    assert h.fake.mailboxes.folder_of("support@contoso.com", "<f@x>") == "junkemail"
