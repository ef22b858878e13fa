"""Held-request expiry as the host runs it: the approve endpoint answers 409 with the state ``expired``,
and the verify and digest timers sweep, one card for everything that expired (remediation/expiry.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from app import bootstrap
from core.settings import ConfigError
from tests.functions.conftest import NOW, RULE
from tests.functions.test_decide_health_http import decide, held_request
from tests.functions.test_queue_functions import kinds
from tests.functions.test_startup import env_with


def test_the_app_does_not_start_with_a_bad_held_expiry(tenant_file: Path) -> None:
    assert bootstrap.load(env_with(tenant_file)).settings.held_expiry == timedelta(days=7)
    custom = bootstrap.load(env_with(tenant_file, RESPONDER_HELD_EXPIRY="P2D"))
    assert custom.settings.held_expiry == timedelta(days=2)
    with pytest.raises(ConfigError, match=r"RESPONDER_HELD_EXPIRY: .*ISO-8601"):
        bootstrap.load(env_with(tenant_file, RESPONDER_HELD_EXPIRY="7 days"))
    with pytest.raises(ConfigError, match=r"RESPONDER_HELD_EXPIRY: .*outside PT1H to P30D"):
        bootstrap.load(env_with(tenant_file, RESPONDER_HELD_EXPIRY="P90D"))


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
