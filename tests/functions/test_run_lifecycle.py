"""Runs over time: dry run then live, overlapping runs and their outcome cards, approval-mode runs as one
message, and the verify timer. Real Azurite ledger (and queue where the host's queue matters), the real
msgraph-sdk against the loopback fake Graph, cards at a memory notifier or the loopback webhook sink."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient

from core.tenant import TenantConfig
from devtools.fakegraph import FakeGraph
from devtools.webhook_sink import WebhookSink
from notifications.elements import card_kind
from notifications.teams import TeamsWebhookNotifier
from tests.functions.conftest import PROTECTED, RULE, Env, SpyBackend, inbox_row
from tests.functions.test_integration import email_rows, host_deliver, host_write, local_hunting
from tests.functions.test_queue_functions import kinds, msg, run_timer


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    """EmailEvents of the integration test's campaign (three copies in Inbox, one partner mail)."""
    out = tmp_path / "tables"
    out.mkdir()
    write_email_events(out, email_rows())
    return out


def write_email_events(tables: Path, events: list[dict[str, Any]]) -> None:
    (tables / "EmailEvents.jsonl").write_text("".join(json.dumps(r) + "\n" for r in events), encoding="utf-8")


@pytest.fixture
def fake() -> Iterator[FakeGraph]:
    with FakeGraph() as graph:
        yield graph


def rows(*nmids: str) -> list[dict[str, Any]]:
    return [inbox_row(n, PROTECTED[i % len(PROTECTED)]) for i, n in enumerate(nmids)]


def set_rule_mode(env: Env, mode: str | None) -> None:
    """What an operator does in the tenant config (rules.<slug>.mode); None: the rule file's mode."""
    tenant = env.rt.config.tenant
    base = dataclasses.replace(tenant, rules={k: v for k, v in tenant.rules.items() if k != RULE})
    if mode is not None:
        base = base.merged(TenantConfig.from_mapping({"rules": {RULE: {"mode": mode}}}, source="test"))
    env.rt.config = dataclasses.replace(env.rt.config, tenant=base)


def set_global_dry_run(env: Env, on: bool) -> None:
    env.rt.config = dataclasses.replace(env.rt.config,
                                        settings=dataclasses.replace(env.rt.settings, dry_run=on))


def ids(bodies: list[str]) -> list[str]:
    return [json.loads(b)["id"] for b in bodies]


def _facts(node: Any) -> list[dict[str, Any]]:
    """Every FactSet fact in a card, wherever it sits."""
    if isinstance(node, dict):
        found = list(node.get("facts", [])) if node.get("type") == "FactSet" else []
        return found + [f for v in node.values() for f in _facts(v)]
    if isinstance(node, list):
        return [f for v in node for f in _facts(v)]
    return []


def card_text(card: dict[str, Any]) -> str:
    return json.dumps(card)


# --- 1. dry run, then live ------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["rule", "global"])
def test_findings_first_seen_in_dry_run_are_remediated_once_the_rule_goes_live(make_env: Any, fake: FakeGraph,
                                                                               how: str) -> None:
    env = make_env(backend=SpyBackend(rows("m0", "m1")), graph_base_url=fake.base_url)
    set_rule_mode(env, "dry_run") if how == "rule" else set_global_dry_run(env, True)
    dry = run_timer(env)
    assert {json.loads(b)["mode"] for b in dry} == {"dry_run"}
    for i, body in enumerate(dry):
        env.call("worker", msg(body, mid=f"d{i}"))
    ledger = env.rt.ledger()
    assert {ledger.read(RULE, i).state for i in ids(dry)} == {"skipped"} and fake.remediations == []
    # Still in dry run: the next run finds the same ids settled; nothing is queued again.
    assert run_timer(env) == []

    set_rule_mode(env, None) if how == "rule" else set_global_dry_run(env, False)
    env.backend.rows = rows("m0", "m1", "m2")     # the window still holds m0, m1; m2 is new
    live = run_timer(env)
    assert len(live) == 3 and set(ids(dry)) < set(ids(live))
    assert {json.loads(b)["mode"] for b in live} == {"auto"}
    assert {json.loads(b)["run"]["total"] for b in live} == {3}
    for i, body in enumerate(live):
        env.call("worker", msg(body, mid=f"l{i}"))
    assert sorted(e["networkMessageId"] for r in fake.remediations for e in r.emails) == ["m0", "m1", "m2"]
    for rid in ids(dry):
        row = ledger.read(RULE, rid)
        assert row.state == "submitted" and row.extra["dry_run_at"] and row.extra["dry_run_detail"]
    # A stray redelivery of a dry-run message changes nothing; the next live run queues nothing.
    env.call("worker", msg(dry[0], dequeue_count=2))
    assert len(fake.remediations) == 1 and run_timer(env) == []


# --- 3. overlapping runs and their outcome cards --------------------------------------------------------

def test_overlapping_runs_each_send_their_own_outcome_card_once(make_env: Any, fake: FakeGraph) -> None:
    env = make_env(backend=SpyBackend(rows("a", "b")), graph_base_url=fake.base_url)
    first = run_timer(env)                           # a, b: new in run 1, not processed yet
    env.backend.rows = rows("a", "b", "c")
    second = run_timer(env)                          # overlaps: a, b in flight, c new
    assert len(second) == 1
    numbered = json.loads(second[0])["run"]
    assert (numbered["index"], numbered["total"]) == (0, 1)   # run 2 counts only its new finding
    run1, run2 = json.loads(first[0])["run"]["id"], json.loads(second[0])["run"]["id"]
    env.call("worker", msg(second[0], mid="c"))      # run 2 settles first
    for i, body in enumerate(first):
        env.call("worker", msg(body, mid=f"f{i}"))
    for body in (*first, *second):                   # redeliveries change nothing
        env.call("worker", msg(body, dequeue_count=2))
    assert kinds(env) == ["scan", "scan", "scan", "scan"]   # two scan cards, two outcome cards
    outcome2, outcome1 = (card_text(c) for c in env.notifier.cards[2:])
    assert run2 in outcome2 and "1 submitted" in outcome2 and run1 in outcome1 and "2 submitted" in outcome1
    # The outcome card says when the run finished (it said "unknown": the report had no times).
    for card in env.notifier.cards[2:]:
        finished = [f["value"] for f in _facts(card) if f.get("title") == "Finished"]
        assert finished and finished[0] != "unknown" and finished[0].endswith(" UTC")


def test_a_dry_run_run_still_gets_its_card_when_a_live_run_takes_part_of_it_over(make_env: Any,
                                                                                fake: FakeGraph) -> None:
    env = make_env(backend=SpyBackend(rows("a", "b")), graph_base_url=fake.base_url)
    set_rule_mode(env, "dry_run")
    a_dry, b_dry = run_timer(env)
    run1 = json.loads(a_dry)["run"]["id"]
    env.call("worker", msg(a_dry, mid="a"))          # a: dry-run skip; b still waits in the queue
    set_rule_mode(env, None)
    env.backend.rows = rows("a", "b", "c")
    live = run_timer(env)                            # a reopened into run 2, b in flight, c new
    assert sorted(json.loads(b)["target"]["network_message_id"] for b in live) == ["a", "c"]
    run2 = json.loads(live[0])["run"]["id"]
    for i, body in enumerate(live):
        env.call("worker", msg(body, mid=f"l{i}"))
    env.call("worker", msg(b_dry, mid="b"))          # run 1's last message: b, a dry run
    assert kinds(env) == ["scan", "scan", "scan", "scan"]
    run2_card, run1_card = (card_text(c) for c in env.notifier.cards[2:])
    assert run2 in run2_card and "2 submitted" in run2_card
    # Run 1's card counts a as the dry run it was in run 1, not as run 2's live outcome.
    assert run1 in run1_card and "submitted" not in run1_card.replace("Submitted / in progress", "")
    assert '"title": "Skipped", "value": "2"' in run1_card


# --- 4. approval-mode runs: one message --------------------------------------------------------------------

def test_an_approval_mode_run_is_one_card_with_every_id_and_how_to_approve(make_env: Any, storage_conn: str,
                                                                            tables: Path) -> None:
    with FakeGraph(hunting=local_hunting(tables)) as graph, WebhookSink() as sink:
        env = make_env(backend="real", graph_base_url=graph.base_url, api_base="https://func-xdr.example.net",
                       notifier=TeamsWebhookNotifier(sink.url, retries=0))
        set_rule_mode(env, "approval")
        queue = QueueClient.from_connection_string(storage_conn, env.rt.settings.requests_queue)
        queue.create_queue()
        messages = run_timer(env)
        assert len(messages) == 3 and {json.loads(m)["mode"] for m in messages} == {"approval"}
        host_write(queue, messages)
        assert host_deliver(env, queue) == 3
        ledger = env.rt.ledger()
        assert {ledger.read(RULE, i).state for i in ids(messages)} == {"held"}
        assert graph.remediations == []
        (delivery,) = sink.wait_for(1)
        assert len(sink.deliveries) == 1 and delivery.problems == []
        assert card_kind(delivery.card) == "approval"
        text = card_text(delivery.card)
        assert "https://func-xdr.example.net" in text
        for rid in ids(messages):
            assert f"python -m responder approve {rid}" in text
            assert f"POST /api/requests/{rid}/approve" in text
            assert f"POST /api/requests/{rid}/reject" in text
        # Overlapping runs find them held: nothing queued, no further card.
        assert run_timer(env) == []
        assert len(sink.deliveries) == 1


def test_a_run_past_its_cap_carries_the_approval_commands_on_its_outcome_card(make_env: Any,
                                                                              fake: FakeGraph) -> None:
    env = make_env(backend=SpyBackend(rows("a", "b", "c")), graph_base_url=fake.base_url)
    tenant = env.rt.config.tenant.merged(TenantConfig.from_mapping({"rules": {RULE: {"max_targets": 1}}},
                                                                   source="test"))
    env.rt.config = dataclasses.replace(env.rt.config, tenant=tenant)
    messages = run_timer(env)
    for i, body in enumerate(messages):
        env.call("worker", msg(body, mid=f"q{i}"))
    held = [i for i in ids(messages) if env.rt.ledger().read(RULE, i).state == "held"]
    assert len(held) == 2
    # The scan card when queued, the outcome card when settled: no separate approval card.
    assert kinds(env) == ["scan", "scan"]
    outcome = card_text(env.notifier.cards[-1])
    for rid in held:
        assert f"python -m responder approve {rid}" in outcome and f"/api/requests/{rid}/approve" in outcome


# --- 2. the verify timer ------------------------------------------------------------------------------------

def test_verify_timer_confirms_submitted_remediations_from_email_events(make_env: Any, tables: Path) -> None:
    with FakeGraph(hunting=local_hunting(tables)) as graph:
        env = make_env(backend="real", graph_base_url=graph.base_url)
        messages = run_timer(env)
        for i, body in enumerate(messages):
            env.call("worker", msg(body, mid=f"q{i}"))
        ledger = env.rt.ledger()
        assert {ledger.read(RULE, i).state for i in ids(messages)} == {"submitted"}
        graph.clear_calls()

        # Defender has not applied it yet: still in the Inbox, within the grace period.
        env.call("verify", TimerRequest(past_due=False))
        (query,) = graph.calls_to("POST", "runHuntingQuery")
        kql = query.json["Query"]
        assert "NetworkMessageId in" in kql and "LatestDeliveryLocation" in kql
        assert {ledger.read(RULE, i).state for i in ids(messages)} == {"submitted"}

        # Defender applied it: EmailEvents now shows the copies in Junk.
        write_email_events(tables, [{**r, "LatestDeliveryLocation": "Junk folder"} for r in email_rows()])
        env.call("verify", TimerRequest(past_due=False))
        assert {ledger.read(RULE, i).state for i in ids(messages)} == {"confirmed"}
        assert all("Junk folder" in ledger.read(RULE, i).detail for i in ids(messages))

        # Nothing submitted any more: no query, no hunting quota spent.
        graph.clear_calls()
        env.call("verify", TimerRequest(past_due=True))
        assert graph.calls_to("POST", "runHuntingQuery") == []


def test_verify_timer_reports_what_never_took_effect(make_env: Any, tables: Path) -> None:
    with FakeGraph(hunting=local_hunting(tables)) as graph:
        env = make_env(backend="real", graph_base_url=graph.base_url)
        for i, body in enumerate(run_timer(env)):
            env.call("worker", msg(body, mid=f"q{i}"))
        env.notifier.cards.clear()
        env.clock.now += timedelta(hours=3)          # past the 2-hour grace, still in the Inbox
        env.call("verify", TimerRequest(past_due=False))
    states = {r.state for r in env.rt.ledger().list(rule=RULE)}
    assert states == {"not_applied"}
    assert kinds(env) == ["failure"]                 # one card for the run's failures, not one per request
    assert "not applied" in card_text(env.notifier.cards[0])


def test_verify_timer_resubmits_once_a_call_defender_did_not_take(make_env: Any, tables: Path) -> None:
    """A 503 before processing (nothing reached the Action center): the verify timer sends the copies
    again once 15 minutes have passed with them still in the Inbox, and confirms them afterwards."""
    with FakeGraph(hunting=local_hunting(tables)) as graph:
        graph.inject("POST", "analyzedEmails", 503, applied=False)
        env = make_env(backend="real", graph_base_url=graph.base_url)
        messages = run_timer(env)
        for i, body in enumerate(messages):
            env.call("worker", msg(body, mid=f"q{i}"))
        ledger = env.rt.ledger()
        assert graph.remediations == []
        assert {ledger.read(RULE, i).state for i in ids(messages)} == {"submitted"}
        env.clock.now += timedelta(minutes=10)       # within the short grace: only waits
        env.call("verify", TimerRequest(past_due=False))
        assert graph.remediations == []
        env.clock.now += timedelta(minutes=5)        # 15 minutes, still in the Inbox: sent again, once
        env.call("verify", TimerRequest(past_due=False))
        assert sorted(e["networkMessageId"] for r in graph.remediations for e in r.emails) == sorted(
            json.loads(b)["target"]["network_message_id"] for b in messages)
        write_email_events(tables, [{**r, "LatestDeliveryLocation": "Junk folder"} for r in email_rows()])
        env.clock.now += timedelta(minutes=5)
        env.call("verify", TimerRequest(past_due=False))
        assert {ledger.read(RULE, i).state for i in ids(messages)} == {"confirmed"}
        assert "failure" not in kinds(env)
