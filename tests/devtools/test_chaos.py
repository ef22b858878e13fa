"""The chaos harness itself (devtools/chaos, devtools/bench/chaos.py): it must see what it claims to
measure, so each scenario runs small with a worker planted to misbehave, and the planted requests must be
counted. The measurements (BENCHMARKS.md) are not asserted here; the harness's honesty is."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from devtools.bench import chaos
from devtools.chaos.fake import Applied, ChaosFake
from devtools.chaos.host import planted
from devtools.chaos.judge import judge
from devtools.chaos.workload import build, seed_fake
from remediation.ledger import Ledger

pytestmark = pytest.mark.azurite
N = 40


def _planted(kinds: tuple[str, ...] | None = None, plant: str = "act-twice") -> set[str]:
    """Ids of the workload's requests a plant misbehaves on (the same rule as the workers')."""
    w = build(N, 0)
    return {r["id"] for s, rs in w.queues.items() for r in rs
            if planted(r, s, plant) and (kinds is None or f"{r['action']}/{s}" in kinds
                                            or r["action"] in kinds)}


# Shorter waits than the benchmark's (the harness's counting is under test here, not the worker's timing),
# in the app's proportions: a message returned while another delivery holds the claim must not use up its
# five deliveries before that claim's lease ends (5 x 2 s > 6 s), or it goes to the poison queue unplanted.
FAST = {"lease_s": 6.0, "retry_visibility_s": 2, "invisible_s": 10}


def _scenario(conn: str, name: str, plant: str | None, rate: float = 0.3,
              inject: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return chaos.run_scenario(name, conn, requests=N, rate=rate, kinds=("503", "500-after"), workers=2,
                              seed=0, plant=plant, drain_timeout=30, fault_timeout=20, timing=FAST,
                              inject=inject)


# A 503 before the service acts, on the Defender POST: the first grouped submission holds every Defender
# request of the workload (one run), so all of them are left submitted, unconfirmed, their mail not moved.
DEFENDER_503 = [{"method": "POST", "path_regex": r"analyzedEmails/", "status": 503, "applied": False}]
DEFENDER = sum(1 for r in build(N, 0).queues["defender"] if r["action"] == "move_to_junk")


def test_a_worker_acting_twice_is_counted_and_nothing_else_is(storage_conn: str) -> None:
    # No faults: the only second actions are the planted ones (revokes and Defender submissions act
    # again; the mailbox move, account and connector actions look first and find the work done).
    out = _scenario(storage_conn, "faults", "act-twice", rate=0.0)
    must = _planted(("revoke_sessions", "move_to_junk/defender"))
    assert must and must <= set(out["ids"].get("acted_twice", []))
    assert set(out["ids"].get("acted_twice", [])) <= _planted()
    assert out["lost"] == 0 and out["mismatched"] == 0 and out["undrained"] == 0
    # Every submission got a clear answer, so verification confirmed each one and resubmitted none.
    assert out["resubmissions"] == 0 and out["pending"] == 0 and "submitted" not in out["states"]


def test_a_submission_refused_before_it_was_applied_is_resubmitted_by_verification(storage_conn: str) -> None:
    # The verify timer's rounds resubmit each once; after them nothing is lost or pending, and the
    # resubmissions are counted (each a first application, so none acted twice).
    out = _scenario(storage_conn, "faults", None, rate=0.0, inject=DEFENDER_503)
    assert out["lost"] == 0 and out["pending"] == 0 and out["mismatched"] == 0, out["examples"]
    assert out["resubmissions"] == DEFENDER and not out["ids"].get("acted_twice")
    assert out["states"] == {"confirmed": N} and out["verify_rounds"] == 2


def test_a_lost_request_is_still_counted_after_verification(storage_conn: str) -> None:
    out = _scenario(storage_conn, "faults", "lose", rate=0.0, inject=DEFENDER_503)
    assert out["resubmissions"] == DEFENDER
    assert _planted(plant="lose") <= set(out["ids"].get("lost", []))


def test_a_lost_request_is_counted_under_duplicate_deliveries(storage_conn: str) -> None:
    out = _scenario(storage_conn, "duplicate-delivery", "lose")
    assert _planted(plant="lose") <= set(out["ids"].get("lost", []))
    assert out["states"].get("received", 0) >= len(_planted(plant="lose"))   # registered, never worked on


def test_a_falsified_ledger_row_is_a_mismatch_under_ledger_errors(storage_conn: str) -> None:
    # The plant rewrites a row that says done and seen done (confirmed) to skipped. Under ledger faults
    # some planted requests end failed or held instead (true: nothing changed), and planted Defender moves
    # are still `submitted` (not known to have taken effect until verification), so the plant leaves those
    # alone. Every row it did falsify must be counted; the seven planted requests that are not Defender
    # moves confirm synchronously, so most of them must have been falsified.
    out = _scenario(storage_conn, "ledger-errors", "mismatch")
    planted_ids, falsified = _planted(plant="mismatch"), set(out["falsified"])
    synchronous = planted_ids - _planted(("move_to_junk/defender",), plant="mismatch")
    assert falsified <= planted_ids and len(falsified) * 2 >= len(synchronous)
    assert falsified <= set(out["ids"].get("mismatched", []))


def test_a_lost_request_is_counted_when_workers_are_killed(storage_conn: str) -> None:
    out = _scenario(storage_conn, "worker-killed", "lose", rate=0.5)   # a kill every 2 + ~2 s
    assert out["workers_killed"] >= 1
    assert _planted(plant="lose") <= set(out["ids"].get("lost", []))
    assert out["undrained"] == 0


# --- the parts, without worker processes -------------------------------------------------------------

def test_fake_counts_an_action_applied_under_a_503_and_a_reset_is_a_transport_error() -> None:
    with ChaosFake(client_timeout=1.0) as fake:
        user = fake.users.add("a@contoso.com")
        fake.chaos(1.0, ("503-after",))
        r = httpx.post(f"{fake.base_url}/users/{user.id}/revokeSignInSessions")
        assert r.status_code == 503 and fake.applications()[Applied("revoke", user.id)] == 1
        fake.chaos(1.0, ("503",))
        assert httpx.post(f"{fake.base_url}/users/{user.id}/revokeSignInSessions").status_code == 503
        assert fake.applications()[Applied("revoke", user.id)] == 1   # refused before: not applied
        fake.chaos(1.0, ("reset-after",))
        with pytest.raises(httpx.TransportError):
            httpx.post(f"{fake.base_url}/users/{user.id}/revokeSignInSessions")
        assert fake.applications()[Applied("revoke", user.id)] == 2
        fake.chaos(1.0, ("timeout",))
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{fake.base_url}/users/{user.id}/revokeSignInSessions", timeout=1.0)


def test_judge_definitions_on_a_hand_made_end_state(storage_conn: str, unique_name: str) -> None:
    w = build(10, 3)
    ledger = Ledger.from_connection_string(storage_conn, unique_name)
    with ChaosFake() as fake:
        seed_fake(fake, w)
        reqs = {f"{r['action']}/{s}": r for s, rs in w.queues.items() for r in rs}
        for r in w.requests:
            ledger.receive(r)
        # A mailbox move done and recorded skipped (mismatched); a revoke recorded confirmed for nothing
        # (mismatched and lost); a Defender email submitted twice (acted twice); the rest untouched and
        # still received (lost).
        move = reqs["move_to_junk/mailbox"]
        fake.mailboxes.move(fake.users.get(move["target"]["recipient"]).id,
                            fake.mailboxes.find(move["target"]["recipient"],
                                                move["target"]["internet_message_id"])[0].id, "junkemail")
        rec = ledger.read(move["rule"], move["id"])
        ledger.transition(rec, "skipped", detail="already in Junk")
        revoke = next(r for r in w.requests if r["action"] == "revoke_sessions")
        ledger.transition(ledger.read(revoke["rule"], revoke["id"]), "confirmed", detail="revoked")
        d = reqs["move_to_junk/defender"]
        email = f"{d['target']['network_message_id']}|{d['target']['recipient'].lower()}"
        fake.applied += [Applied("remediate", email)] * 2
        # Another Defender email: unconfirmed, resubmitted by verification, still submitted (pending: lost).
        d2 = next(r for r in w.queues["defender"] if r["action"] == "move_to_junk" and r["id"] != d["id"])
        row = ledger.transition(ledger.read(d2["rule"], d2["id"]), "submitted", unconfirmed_submission=True,
                                undo={"action": "move_to_inbox"})
        row = ledger.reopen_unconfirmed(row, "resubmitting once")
        ledger.transition(row, "submitted", unconfirmed_submission=True, undo={"action": "move_to_inbox"})
        v = judge(w.queues, fake, ledger)
    assert set(v.ids["mismatched"]) == {move["id"], revoke["id"], d["id"]}
    assert v.ids["acted_twice"] == [d["id"]] and v.resubmissions == 1 and v.ids["pending"] == [d2["id"]]
    assert d2["id"] in v.ids["lost"]
    assert move["id"] not in v.ids["lost"] and d["id"] not in v.ids["lost"]
    assert revoke["id"] in v.ids["lost"] and v.lost == len(w.requests) - 2


def test_cli_refuses_unknown_fault_kinds() -> None:
    with pytest.raises(SystemExit):
        chaos.main(["--faults", "503,meteor"])




def test_benchmarks_section_names_the_command_and_each_scenario() -> None:
    from devtools.bench.report import render

    scenario = {"name": "faults", "requests": 500, "lost": 1, "pending": 1, "acted_twice": 22,
                "mismatched": 33, "confirmed_without_undo": 4, "resubmissions": 55, "undrained": 0,
                "calls": 4321,
                "faults_injected": {"503": 7, "reset": 3}, "workers_killed": 0, "wall_s": 98.0,
                "examples": {"lost": ["move_to_junk/mailbox abc: ledger received, target unchanged"]}}
    result = {"requests": 500, "fault_rate": 0.3, "workers": 4, "seed": 0, "scenarios": [scenario],
              "command": "python -m responder.bench chaos --requests 500 --fault-rate 0.3 --workers 4"}
    text = render({"chaos": result}, command="python -m responder.bench", machine={}, elapsed_s=1.0)
    assert "`python -m responder.bench chaos --requests 500 --fault-rate 0.3 --workers 4`" in text
    assert "| faults | 500 | 1 | 1 | 22 | 33 | 4 | 55 | 0 | 4,321 | 10 Graph/Exchange | 98 |" in text
    assert "- faults, lost: move_to_junk/mailbox abc" in text
