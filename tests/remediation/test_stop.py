"""The emergency stop (remediation/stop.py): one row in the ledger's table holds every action till cleared."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.fakegraph import FakeGraph
from remediation.decisions import WorkerError
from remediation.ledger import Ledger
from remediation.stop import StopSwitch, read_stop, set_stop
from tests.remediation.factories import email_request, user_request
from tests.remediation.test_worker import Clock, Harness

pytestmark = pytest.mark.azurite


@pytest.fixture
def h(storage_conn: str, unique_name: str) -> Any:
    with FakeGraph() as fake:
        yield Harness(fake, Ledger.from_connection_string(storage_conn, unique_name, clock=Clock()))


def test_an_auto_run_while_stopped_holds_everything_and_calls_nothing(h: Harness) -> None:
    for box, imid in (("support@contoso.com", "<m1@x>"), ("sales@contoso.com", "<m2@x>")):
        h.fake.mailboxes.add(box, imid)
    set_stop(h.ledger, True, "alice", "rule shared-mailboxes misfires")
    reqs = [email_request("nm-1", imid="<m1@x>"), email_request("nm-2", "sales@contoso.com", index=1,
                                                                imid="<m2@x>"),
            user_request("mallory@contoso.com")]
    out = h.run(lambda w: w.process(reqs), strategy="mailbox")
    assert [(o.state, o.hold_reason) for o in out] == [("held", "emergency_stop")] * 3
    assert [c for c in h.fake.calls if c.method != "GET"] == []
    assert h.fake.mailboxes.folder_of("support@contoso.com", "<m1@x>") == "inbox"
    assert "alice" in h.row(reqs[0]).detail and "misfires" in h.row(reqs[0]).detail


def test_clearing_lets_the_next_run_act_and_stopped_requests_stay_held(h: Harness) -> None:
    h.fake.mailboxes.add("support@contoso.com", "<m1@x>")
    h.fake.mailboxes.add("sales@contoso.com", "<m2@x>")
    first = email_request("nm-1", imid="<m1@x>")
    set_stop(h.ledger, True, "alice", "misfire")
    h.run(lambda w: w.process([first]), strategy="mailbox")
    set_stop(h.ledger, False, "bob")
    second = email_request("nm-2", "sales@contoso.com", run="run-2", imid="<m2@x>")
    [out] = h.run(lambda w: w.process([second]), strategy="mailbox")
    assert out.state == "confirmed"
    assert h.fake.mailboxes.folder_of("sales@contoso.com", "<m2@x>") == "junkemail"
    # What the stop held waits for a person: clearing does not replay a misfiring rule.
    assert (h.row(first).state, h.row(first).hold_reason) == ("held", "emergency_stop")
    assert h.fake.mailboxes.folder_of("support@contoso.com", "<m1@x>") == "inbox"
    approved = h.run(lambda w: w.approve(first["id"], "carol"), strategy="mailbox")
    assert approved.state == "confirmed"


def test_approve_while_stopped_is_refused_and_runs_nothing(h: Harness) -> None:
    h.fake.mailboxes.add("support@contoso.com", "<m1@x>")
    req = email_request("nm-1", mode="approval", imid="<m1@x>")
    h.run(lambda w: w.process([req]), strategy="mailbox")
    assert h.row(req).state == "held"
    set_stop(h.ledger, True, "alice", "incident")

    async def approve(w: Any) -> Any:
        w.stop.current()   # a cached "off" must not let it through: approval reads the switch afresh
        return await w.approve(req["id"], "bob")

    with pytest.raises(WorkerError, match="stop means stop") as err:
        h.run(approve, strategy="mailbox")
    assert err.value.state == "held"
    assert h.row(req).state == "held" and [c for c in h.fake.calls if c.method == "POST"] == []


def test_an_undo_still_runs_while_stopped(h: Harness) -> None:
    h.fake.mailboxes.add("support@contoso.com", "<m1@x>")
    req = email_request("nm-1", imid="<m1@x>")
    h.run(lambda w: w.process([req]), strategy="mailbox")
    set_stop(h.ledger, True, "alice", "misfire")
    out = h.run(lambda w: w.undo(req["id"], "alice"), strategy="mailbox")
    assert out.state == "confirmed"
    assert h.fake.mailboxes.folder_of("support@contoso.com", "<m1@x>") == "inbox"


def test_the_switch_records_who_when_why_and_is_read_at_most_every_ttl(h: Harness) -> None:
    ledger: Ledger = h.ledger
    assert read_stop(ledger).on is False
    state = set_stop(ledger, True, "alice", "misfire", claimed_by="Alice A.")
    assert read_stop(ledger) == state and state.at == ledger.iso_now()
    assert ledger.list() == []   # never a request row
    ticks = [0.0]
    switch = StopSwitch(ledger, ttl=10, monotonic=lambda: ticks[0])
    assert switch.current().on
    set_stop(ledger, False, "bob")
    ticks[0] = 9.9
    assert switch.current().on          # cached
    ticks[0] = 10.0
    assert not switch.current().on      # read again
    with pytest.raises(ValueError, match="reason"):
        set_stop(ledger, True, "alice", " ")
    with pytest.raises(ValueError, match="by"):
        set_stop(ledger, True, "", "x")
