"""Held requests expire (issue 13): after RESPONDER_HELD_EXPIRY a held request can no longer be approved,
is recorded ``expired`` with when and why, cannot be undone, and the timers' sweep announces every expired
request on one card. The worker runs for real against the loopback fake Graph, the ledger on Azurite; the
ledger's clock is moved forward by hand."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from app.expiry import sweep_and_announce
from core.settings import ConfigError, Settings
from devtools.fakegraph import FakeGraph
from notifications.teams import MemoryNotifier
from remediation.decisions import WorkerError
from remediation.ledger import IllegalTransition, Ledger
from tests.remediation.factories import T0, connector_request, email_request
from tests.remediation.test_worker import Clock, Harness, body

pytestmark = pytest.mark.azurite

WEEK = timedelta(days=7)


@pytest.fixture
def clk() -> Clock:
    return Clock()


@pytest.fixture
def hx(storage_conn: str, unique_name: str, clk: Clock) -> Any:
    with FakeGraph() as fake:
        yield Harness(fake, Ledger.from_connection_string(storage_conn, unique_name, clock=clk))


def hold(hx: Harness, nmid: str, **kw: Any) -> dict[str, Any]:
    req = email_request(nmid, mode="approval", **kw)
    [out] = hx.run(lambda w: w.process_message(body(req), 1))
    assert out.state == "held"
    return req


def test_approve_within_the_expiry_runs(hx: Harness, clk: Clock) -> None:
    req = hold(hx, "nm-6d")
    clk.now = T0 + timedelta(days=6)
    assert hx.run(lambda w: w.approve(req["id"], "alice")).state == "submitted"
    assert len(hx.fake.remediations) == 1


def test_approve_after_the_expiry_is_refused_recorded_and_cannot_be_undone(hx: Harness, clk: Clock) -> None:
    req = hold(hx, "nm-8d")
    clk.now = T0 + timedelta(days=8)
    with pytest.raises(WorkerError, match=r"expired.*RESPONDER_HELD_EXPIRY.*P7D") as err:
        hx.run(lambda w: w.approve(req["id"], "alice"))
    assert err.value.state == "expired"
    assert hx.fake.calls == [] and hx.fake.remediations == []
    row = hx.row(req)
    assert row.state == "expired" and row.state_times["expired"] == "2026-11-28T12:00:00Z"
    assert "held since 2026-11-20T12:00:00Z" in row.detail and "P7D" in row.detail
    assert "approved_by" not in row.extra
    # Final: a second approve, a reject, an undo are all refused; the ledger refuses any move out of it.
    with pytest.raises(WorkerError, match="expired"):
        hx.run(lambda w: w.approve(req["id"], "bob"))
    with pytest.raises(WorkerError, match="expired"):
        hx.run(lambda w: w.reject(req["id"], "bob"))
    with pytest.raises(WorkerError, match="nothing to undo") as undo:
        hx.run(lambda w: w.undo(req["id"], "bob"))
    assert undo.value.state == "expired"
    with pytest.raises(IllegalTransition):
        hx.ledger.transition(hx.row(req), "approved")
    assert hx.fake.calls == []


def test_the_expiry_is_the_app_setting(hx: Harness, clk: Clock) -> None:
    short = {"RESPONDER_HELD_EXPIRY": "PT12H"}
    early, late = hold(hx, "nm-a"), hold(hx, "nm-b")
    clk.now = T0 + timedelta(hours=11)
    assert hx.run(lambda w: w.approve(early["id"], "alice"), **short).state == "submitted"
    clk.now = T0 + timedelta(hours=13)
    with pytest.raises(WorkerError, match="PT12H"):
        hx.run(lambda w: w.approve(late["id"], "alice"), **short)
    assert hx.row(late).state == "expired"


def test_marking_a_manual_connector_done_after_the_expiry_is_refused(hx: Harness, clk: Clock) -> None:
    req = connector_request("Partner relay", mode="approval")
    [held] = hx.run(lambda w: w.process_message(body(req), 1))
    assert held.state == "held"
    clk.now = T0 + timedelta(days=8)
    with pytest.raises(WorkerError, match="expired"):
        hx.run(lambda w: w.approve(req["id"], "alice", done=True))
    assert hx.row(req).state == "expired" and "run_by_hand" not in hx.row(req).extra


# --- the sweep: one card per sweep, every expired request on it, once ------------------------------------

def sweep(hx: Harness, clk: Clock, notifier: Any) -> int:
    return asyncio.run(sweep_and_announce(hx.ledger, notifier, now=clk.now, ttl=WEEK, tenant_id=None))


def test_the_sweep_expires_what_is_overdue_and_announces_it_once_on_one_card(hx: Harness, clk: Clock) -> None:
    old = [hold(hx, f"nm-old-{i}", index=i) for i in range(3)]
    clk.now = T0 + timedelta(days=3)
    fresh = hold(hx, "nm-fresh")
    clk.now = T0 + timedelta(days=8)
    with pytest.raises(WorkerError):                       # expired by a late approval: listed too
        hx.run(lambda w: w.approve(old[0]["id"], "alice"))
    notifier = MemoryNotifier()
    assert sweep(hx, clk, notifier) == 3
    (card,) = notifier.cards
    text = str(card)
    assert "3 held requests expired without a decision" in text
    assert all(r["id"] in text for r in old) and fresh["id"] not in text
    assert {hx.row(r).state for r in old} == {"expired"} and hx.row(fresh).state == "held"
    assert all(hx.row(r).extra["expiry_announced"] is True for r in old)
    # The same hour again (a second timer, a restart), and the next hour: nothing new, no card.
    assert sweep(hx, clk, notifier) == 0
    clk.now += timedelta(hours=1)
    assert sweep(hx, clk, notifier) == 0 and len(notifier.cards) == 1
    # Days later the fresh one is overdue too: its own card, listing only it.
    clk.now = T0 + timedelta(days=11)
    assert sweep(hx, clk, notifier) == 1
    assert fresh["id"] in str(notifier.cards[1]) and old[1]["id"] not in str(notifier.cards[1])


def test_a_card_that_does_not_go_out_is_sent_by_the_next_sweep(hx: Harness, clk: Clock) -> None:
    req = hold(hx, "nm-x")
    clk.now = T0 + timedelta(days=8)
    down = MemoryNotifier(deliver=False)
    assert sweep(hx, clk, down) == 0
    assert hx.row(req).state == "expired" and hx.row(req).extra["expiry_announced"] is False
    clk.now += timedelta(hours=1)
    up = MemoryNotifier()
    assert sweep(hx, clk, up) == 1 and req["id"] in str(up.cards)


# --- the setting ---------------------------------------------------------------------------------------

def settings(**env: str) -> Settings:
    return Settings.from_env(env, require=False)


@pytest.mark.parametrize(("raw", "expected"), [
    (None, WEEK), ("", WEEK), ("P7D", WEEK), ("PT12H", timedelta(hours=12)), ("P1DT6H", timedelta(hours=30)),
    ("P2W", timedelta(days=14)), ("pt90m", timedelta(minutes=90)), ("P30D", timedelta(days=30)),
])
def test_held_expiry_setting_values(raw: str | None, expected: timedelta) -> None:
    env = {} if raw is None else {"RESPONDER_HELD_EXPIRY": raw}
    assert settings(**env).held_expiry == expected


@pytest.mark.parametrize(("raw", "why"), [
    ("7", "ISO-8601"), ("7 days", "ISO-8601"), ("P", "ISO-8601"), ("PT", "ISO-8601"), ("P1M", "ISO-8601"),
    ("P1Y", "ISO-8601"), ("-P1D", "ISO-8601"), ("P1DT", "ISO-8601"), ("PT30M", "outside"),
    ("P31D", "outside"),
    ("P90D", "outside"),
])
def test_a_bad_held_expiry_stops_the_start_naming_the_setting(raw: str, why: str) -> None:
    with pytest.raises(ConfigError, match=f"RESPONDER_HELD_EXPIRY.*{why}"):
        settings(RESPONDER_HELD_EXPIRY=raw)
