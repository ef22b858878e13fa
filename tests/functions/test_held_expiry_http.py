"""Held-request expiry as the host runs it: the approve endpoint answers 409 with the state ``expired``,
and the verify and digest timers sweep, one card for everything that expired (remediation/expiry.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from azure.functions.timer import TimerRequest

from tests.functions.conftest import NOW, RULE
from tests.functions.test_decide_health_http import decide, held_request
from tests.functions.test_queue_functions import kinds


def test_approving_an_expired_request_is_a_409_with_its_state(make_env: Any) -> None:
    env = make_env()
    rid = held_request(env)
    env.clock.now = NOW + timedelta(days=8)
    status, doc = decide(env, "approve", rid, {"by": "oncall@contoso.com"})
    assert status == 409 and doc["state"] == "expired" and "expired" in doc["message"], doc
    assert env.rt.ledger().read(RULE, rid).state == "expired"
    # Still refused later, still naming the state.
    assert decide(env, "approve", rid)[1]["state"] == "expired"


def test_the_timers_sweep_and_announce_expired_requests_once(make_env: Any) -> None:
    env = make_env()
    rids = [held_request(env, f"held-{i}") for i in range(2)]
    cards = len(env.notifier.cards)            # the approval cards of the two runs
    env.clock.now = NOW + timedelta(days=7, minutes=1)
    env.call("verify", TimerRequest())
    assert kinds(env)[cards:] == ["failure"]
    text = str(env.notifier.cards[-1])
    assert "2 held requests expired" in text and all(r in text for r in rids)
    assert {env.rt.ledger().read(RULE, r).state for r in rids} == {"expired"}
    env.call("verify", TimerRequest())         # five minutes later, same hour
    env.clock.now += timedelta(days=1)
    env.call("digest", TimerRequest())         # the next day's digest timer sweeps too: nothing new
    assert kinds(env)[cards:] == ["failure", "digest"]
