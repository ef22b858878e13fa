"""The approval page in real headless Chromium: open the card's Open URL, see the request (hostile
evidence inert), click Approve, and the worker does it on the fake Graph. The page is served by
devtools/pageserver.py, which sets the principal headers the way App Service authentication does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from core.request import make_request
from core.settings import ROOT
from devtools.cardrender.render import chromium_path
from devtools.fakegraph import FakeGraph
from devtools.pageserver import Identity, PageServer
from remediation.stop import read_stop, set_stop
from tests.functions.conftest import NOW, PROTECTED, RULE
from tests.functions.test_approval_page import EVIL, OID, ON, ONCALL, confirmed_move, held

CLICK = ROOT / "devtools" / "pagebrowser" / "click.mjs"


def browse(url: str, button: str | None = None, png: Path | None = None,
           fill: dict[str, str] | None = None) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is needed for the browser tests"
    args = [node, str(CLICK), chromium_path(), url] + ([button] if button else [""] if png else [])
    if png:
        args.append(str(png))
    env = {**os.environ, "PAGE_FILL": json.dumps(fill or {})}
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_open_see_approve_in_chromium_and_the_worker_does_it(make_env: Any, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    with FakeGraph() as fake:
        env = make_env(graph_base_url=fake.base_url)
        monkeypatch.setattr(env.fa, "page_auth", ON)
        rid = held(env)
        queued: list[str] = []
        alice = Identity("alice@contoso.com", OID, (ONCALL,))
        with PageServer(env.rt, ON, alice, on_queue=queued.extend) as server:
            url = f"{server.base_url}/requests/{rid}"
            seen = browse(url, "Approve")
        assert seen["status"] == 200 and rid in seen["text"] and "held" in seen["text"]
        assert EVIL in seen["text"]                                   # shown as text...
        assert seen["scripts"] == 0 and seen["dialogs"] == [] and seen["pageErrors"] == []   # ...never run
        assert seen["after"]["status"] == 200 and "Approved" in seen["after"]["text"]
        row = env.rt.ledger().read(RULE, rid)
        assert (row.state, row.extra["approved_by"], row.extra["decided_via"]) == ("approved",
                                                                                  "alice@contoso.com", "page")
        assert row.extra["decided_from"].startswith("127.0.0.1:")
        (body,) = queued
        env.call("worker", QueueMessage(id="q2", body=body.encode(), dequeue_count=1))
        assert [e["networkMessageId"] for r in fake.remediations for e in r.emails] == ["held-1"]
        assert env.rt.ledger().read(RULE, rid).state == "submitted"


def test_someone_outside_on_call_gets_403_in_the_browser(make_env: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_env()
    monkeypatch.setattr(env.fa, "page_auth", ON)
    rid = held(env)
    bob = Identity("bob@contoso.com", "0a1b2c3d-0000-4000-8000-0000000b0b00", ("another-group",))
    with PageServer(env.rt, ON, bob) as server:
        seen = browse(f"{server.base_url}/requests/{rid}")
    assert seen["status"] == 403 and "not in the on-call group" in seen["text"]
    assert env.rt.ledger().read(RULE, rid).state == "held"


def test_the_emergency_stop_holds_a_new_auto_run_and_the_page_says_so(
        make_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeGraph() as fake:
        env = make_env(graph_base_url=fake.base_url)
        monkeypatch.setattr(env.fa, "page_auth", ON)
        set_stop(env.rt.ledger(), True, "alice@contoso.com", "rule misfires")
        req = make_request(rule=RULE, action="move_to_junk", mode="auto",
                           target={"network_message_id": "auto-1", "recipient": PROTECTED[0]},
                           evidence={"Subject": "s"}, detected_at=NOW,
                           run={"id": "run-auto", "index": 0, "total": 1}, severity="High", rule_name="r")
        env.call("worker", QueueMessage(id="q", body=json.dumps(req).encode(), dequeue_count=1))
        alice = Identity("alice@contoso.com", OID, (ONCALL,))
        with PageServer(env.rt, ON, alice) as server:
            seen = browse(f"{server.base_url}/requests/{req['id']}")
        assert fake.remediations == []                               # nothing ran
        assert seen["status"] == 200 and "held" in seen["text"]
        assert "emergency stop" in seen["text"].lower() and "rule misfires" in seen["text"]
        assert env.rt.ledger().read(RULE, req["id"]).state == "held"


def test_undo_in_chromium_and_the_worker_restores_the_message(make_env: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeGraph() as fake:
        env = make_env(graph_base_url=fake.base_url, email_strategy="mailbox")
        monkeypatch.setattr(env.fa, "page_auth", ON)
        rid = confirmed_move(env, fake)
        queued: list[str] = []
        alice = Identity("alice@contoso.com", OID, (ONCALL,))
        with PageServer(env.rt, ON, alice, on_queue=queued.extend) as server:
            seen = browse(f"{server.base_url}/requests/{rid}", "Undo")
        assert seen["status"] == 200 and "confirmed" in seen["text"]
        assert seen["after"]["status"] == 200 and "Undo recorded and queued" in seen["after"]["text"]
        assert fake.mailboxes.folder_of(PROTECTED[0], "<held-1@mail.gmail.com>") == "junkemail"
        (body,) = queued
        env.call("worker", QueueMessage(id="u", body=body.encode(), dequeue_count=1))
        assert fake.mailboxes.folder_of(PROTECTED[0], "<held-1@mail.gmail.com>") == "inbox"
        undo = env.rt.ledger().get(json.loads(body)["id"])
        assert (undo.state, undo.extra["undo_of"], undo.extra["decided_via"]) == ("confirmed", rid, "page")


def test_oncall_turns_the_emergency_stop_on_and_clears_it_in_chromium(
        make_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_env()
    monkeypatch.setattr(env.fa, "page_auth", ON)
    rid = held(env)
    alice = Identity("alice@contoso.com", OID, (ONCALL,))
    with PageServer(env.rt, ON, alice) as server:
        seen = browse(f"{server.base_url}/stop", "Turn the emergency stop on",
                      fill={"Reason": "rule misfires"})
        assert seen["status"] == 200 and seen["after"]["status"] == 200
        state = read_stop(env.rt.ledger())
        assert (state.on, state.by, state.reason) == (True, "alice@contoso.com", "rule misfires")
        assert "rule misfires" in browse(f"{server.base_url}/requests/{rid}")["text"]
        seen = browse(f"{server.base_url}/stop", "Clear the emergency stop")
        assert seen["after"]["status"] == 200 and "cleared" in seen["after"]["text"]
    assert read_stop(env.rt.ledger()).on is False
