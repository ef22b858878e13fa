"""The ledger against a real Table service (Azurite): records, transitions, ETags, claims, markers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.core.credentials import AzureNamedKeyCredential

from core.request import make_request
from devtools.azurite import DEV_ACCOUNT, DEV_KEY, Azurite
from remediation.ledger import INVALID, IllegalTransition, Ledger, LedgerConflict

pytestmark = pytest.mark.azurite

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def junk_request(nmid: str = "nm-1", recipient: str = "support@contoso.com", rule: str = "consumer-sender",
                 index: int = 0) -> dict:
    return make_request(rule=rule, action="move_to_junk", mode="auto",
                        target={"network_message_id": nmid, "recipient": recipient},
                        evidence={"SenderFromAddress": "bad@gmail.com"}, detected_at=T0,
                        run={"id": "run-1", "index": index, "total": 3})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(storage_conn: str, unique_name: str, clock: Clock) -> Ledger:
    return Ledger.from_connection_string(storage_conn, unique_name, clock=clock)


def test_receive_records_the_request_once(ledger: Ledger) -> None:
    req = junk_request()
    rec, created = ledger.receive(req)
    assert created and rec.state == "received" and rec.etag
    again, created_again = ledger.receive(req)
    assert not created_again
    assert again.request_id == req["id"] and again.etag == rec.etag
    stored = ledger.get(req["id"])
    assert stored is not None
    assert (stored.rule, stored.action, stored.mode, stored.run_id) == ("consumer-sender", "move_to_junk",
                                                                         "auto", "run-1")
    assert stored.target == req["target"] and stored.request == req
    assert stored.created_at == "2026-11-20T12:00:00Z"
    assert stored.state_times == {"received": "2026-11-20T12:00:00Z"}
    assert stored.extra["network_message_id"] == "nm-1"


def test_get_finds_a_request_in_any_partition_and_none_when_absent(ledger: Ledger) -> None:
    a = junk_request(rule="rule-a")
    b = junk_request(rule="rule-b", nmid="nm-2")
    ledger.receive(a)
    ledger.receive(b)
    found = ledger.get(b["id"])
    assert found is not None and found.rule == "rule-b"
    assert ledger.get("0" * 32) is None
    assert ledger.read("rule-a", b["id"]) is None


def test_transition_keeps_per_state_times_and_fields(ledger: Ledger, clock: Clock) -> None:
    rec, _ = ledger.receive(junk_request())
    clock.now = T0 + timedelta(minutes=1)
    rec = ledger.transition(rec, "held", hold_reason="cap", detail="past the cap of 2")
    clock.now = T0 + timedelta(minutes=5)
    rec = ledger.transition(rec, "approved", approved_by="alice@contoso.com")
    clock.now = T0 + timedelta(minutes=6)
    ledger.transition(rec, "confirmed", link="https://security.microsoft.com/action-center/x",
                      undo={"original_folder": "inbox"}, detail="moved")
    stored = ledger.get(rec.request_id)
    assert stored is not None
    assert stored.state == "confirmed"
    assert stored.state_times == {"received": "2026-11-20T12:00:00Z", "held": "2026-11-20T12:01:00Z",
                                  "approved": "2026-11-20T12:05:00Z", "confirmed": "2026-11-20T12:06:00Z"}
    assert stored.hold_reason == "cap" and stored.extra["approved_by"] == "alice@contoso.com"
    assert stored.undo == {"original_folder": "inbox"}
    assert stored.link.endswith("/x") and stored.updated_at == "2026-11-20T12:06:00Z"


def test_stale_etag_loses(ledger: Ledger) -> None:
    rec, _ = ledger.receive(junk_request())
    stale = ledger.get(rec.request_id)
    assert stale is not None
    ledger.transition(rec, "held", hold_reason="approval")
    with pytest.raises(LedgerConflict):
        ledger.transition(stale, "skipped", detail="racing worker")
    stored = ledger.get(rec.request_id)
    assert stored is not None and stored.state == "held"


def test_illegal_transitions_are_refused(ledger: Ledger) -> None:
    rec, _ = ledger.receive(junk_request())
    rec = ledger.transition(rec, "held", hold_reason="approval")
    rec = ledger.transition(rec, "rejected", rejected_by="bob")
    with pytest.raises(IllegalTransition):
        ledger.transition(rec, "approved")
    done, _ = ledger.receive(junk_request(nmid="nm-9"))
    done = ledger.transition(done, "confirmed")
    with pytest.raises(IllegalTransition):
        ledger.transition(done, "held")


def test_only_one_of_two_workers_wins_the_claim(ledger: Ledger, clock: Clock) -> None:
    rec, _ = ledger.receive(junk_request())
    seen_by_a = ledger.get(rec.request_id)
    seen_by_b = ledger.get(rec.request_id)
    assert seen_by_a is not None and seen_by_b is not None
    won = ledger.claim(seen_by_a, lease=timedelta(minutes=5), owner="a")
    with pytest.raises(LedgerConflict):
        ledger.claim(seen_by_b, lease=timedelta(minutes=5), owner="b")
    # A fresh read shows the live lease, so B still cannot take it ...
    fresh = ledger.get(rec.request_id)
    assert fresh is not None and fresh.claim_token == "a" and fresh.attempts == 1
    with pytest.raises(LedgerConflict):
        ledger.claim(fresh, lease=timedelta(minutes=5), owner="b")
    # ... until the lease has expired (the holder crashed).
    clock.now = T0 + timedelta(minutes=6)
    taken = ledger.claim(fresh, lease=timedelta(minutes=5), owner="b")
    assert taken.claim_token == "b" and taken.attempts == 2
    with pytest.raises(LedgerConflict):
        ledger.transition(won, "confirmed")  # A's write after losing the lease is refused


def test_transition_and_release_clear_the_claim(ledger: Ledger) -> None:
    rec, _ = ledger.receive(junk_request())
    rec = ledger.claim(rec, lease=timedelta(minutes=5))
    rec = ledger.release(rec, error="HTTP 503")
    stored = ledger.get(rec.request_id)
    assert stored is not None and stored.claim_token is None and stored.claim_until is None
    assert stored.error == "HTTP 503" and stored.state == "received"
    rec = ledger.claim(stored, lease=timedelta(minutes=5))
    ledger.transition(rec, "submitted", error=None)
    stored = ledger.get(rec.request_id)
    assert stored is not None and stored.claim_until is None and stored.error is None
    assert stored.attempts == 2


def test_list_filters_by_rule_state_and_run(ledger: Ledger, clock: Clock) -> None:
    r1, _ = ledger.receive(junk_request(nmid="a", rule="rule-a"))
    clock.now = T0 + timedelta(seconds=1)
    ledger.receive(junk_request(nmid="b", rule="rule-a"))
    clock.now = T0 + timedelta(seconds=2)
    ledger.receive(junk_request(nmid="c", rule="rule-b"))
    ledger.transition(r1, "held", hold_reason="cap")
    ledger.claim_once("card:run-1")
    ledger.record_invalid("not json", "(message): not JSON")
    assert [r.target["network_message_id"] for r in ledger.list(rule="rule-a")] == ["a", "b"]
    assert [r.request_id for r in ledger.list(state="held")] == [r1.request_id]
    assert {r.target.get("network_message_id") for r in ledger.list(state="received")} == {"b", "c"}
    assert len(ledger.list(run_id="run-1")) == 3
    everything = ledger.list()
    assert len(everything) == 4  # three requests and the invalid message, never the marker
    assert [r.rule for r in ledger.list(state="failed")] == [INVALID]


def test_invalid_message_is_kept_and_redelivery_updates_the_same_row(ledger: Ledger) -> None:
    first = ledger.record_invalid(b'{"schema": "nope"}', "schema: 'nope' is not valid", dequeue_count=1)
    again = ledger.record_invalid(b'{"schema": "nope"}', "schema: 'nope' is not valid", dequeue_count=2)
    assert first.request_id == again.request_id
    stored = ledger.read(INVALID, first.request_id)
    assert stored is not None and stored.state == "failed" and stored.attempts == 2
    assert stored.request == {"raw": '{"schema": "nope"}'} and "nope" in (stored.error or "")


def test_claim_once_is_true_exactly_once(ledger: Ledger) -> None:
    assert ledger.claim_once("card sent for run 7/rule x?") is True
    assert ledger.claim_once("card sent for run 7/rule x?") is False
    assert ledger.claim_once("card sent for run 8") is True
    ledger.forget_once("card sent for run 7/rule x?")
    assert ledger.claim_once("card sent for run 7/rule x?") is True


def test_huge_evidence_is_trimmed_not_refused(ledger: Ledger) -> None:
    req = junk_request()
    req["evidence"] = {"blob": "x" * 100_000}
    rec, created = ledger.receive(req)
    assert created
    stored = ledger.get(rec.request_id)
    assert stored is not None and stored.request is not None
    assert "_truncated" in stored.request["evidence"] and stored.request["id"] == req["id"]


def test_account_url_constructor_with_a_credential(azurite: Azurite, unique_name: str) -> None:
    """The production constructor (account URL + credential); here the emulator's key stands in for
    the managed identity's token credential."""
    url = f"http://127.0.0.1:{azurite.table_port}/{DEV_ACCOUNT}"
    ledger = Ledger.from_account_url(url, unique_name, AzureNamedKeyCredential(DEV_ACCOUNT, DEV_KEY))
    rec, created = ledger.receive(junk_request())
    assert created and ledger.get(rec.request_id) is not None
