"""``undo --run RUN_ID`` (issue 14, undo a run): through the queue by default (the app's worker restores each,
the CLI calls no Graph); ``--local`` runs Worker.undo_run here, every move back, one summary card."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from devtools.fakegraph import FakeGraph
from devtools.webhook_sink import WebhookSink
from remediation.ledger import Ledger
from responder.cli import main
from tests.remediation.test_cli_remediation import T0, junk

pytestmark = pytest.mark.azurite


def test_undo_run_local_restores_the_run_and_sends_one_card(env: Ledger, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with FakeGraph() as fake, WebhookSink() as sink:
        monkeypatch.setenv("RESPONDER_GRAPH_BASE_URL", fake.base_url)
        monkeypatch.setenv("RESPONDER_EMAIL_STRATEGY", "mailbox")
        monkeypatch.setenv("RESPONDER_TEAMS_WEBHOOK_URL", sink.url)
        reqs = []
        for i, box in enumerate(["support@contoso.com", "sales@contoso.com"]):
            fake.mailboxes.add(box, f"<m{i}@x>")
            req = junk(f"nm-{i}", box, imid=f"<m{i}@x>")
            req["run"] = {"id": "run-cli", "index": i, "total": 2}
            reqs.append(req)
        queue = tmp_path / "queue.json"
        queue.write_text(json.dumps(reqs))
        assert main(["remediate", "--queue-file", str(queue)]) == 0
        assert {fake.mailboxes.folder_of(r["target"]["recipient"], r["target"]["internet_message_id"])
                for r in reqs} == {"junkemail"}
        capsys.readouterr()
        assert main(["undo", "--run", "run-cli", "--by", "alice", "--json", "--local"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert sorted(u["undo_of"] for u in doc["undone"]) == sorted(r["id"] for r in reqs)
        assert {fake.mailboxes.folder_of(r["target"]["recipient"], r["target"]["internet_message_id"])
                for r in reqs} == {"inbox"}
        [delivery] = sink.wait_for(1)
        assert delivery.problems == [] and "Run run-cli undone" in json.dumps(delivery.card)
        # A second time: nothing more, said so, no second card.
        assert main(["undo", "--run", "run-cli", "--local"]) == 0
        assert "nothing more to undo" in capsys.readouterr().out
        assert len(sink.deliveries) == 1


def test_undo_needs_an_id_or_a_run_not_both(env: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["undo"]) == 2
    assert main(["undo", "0" * 32, "--run", "r"]) == 2
    assert "one of them" in capsys.readouterr().err


def test_undo_of_an_unknown_run_says_so(env: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["undo", "--run", "no-such-run"]) == 1
    assert "no request of this run" in capsys.readouterr().out
    assert main(["undo", "--run", "no-such-run", "--local"]) == 1
    assert "no request of this run" in capsys.readouterr().out


def test_undo_run_records_and_queues_each_undo_then_the_worker_restores(
        env: Ledger, storage_conn: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Without --local the CLI needs storage only: one undo per confirmed move is recorded and queued,
    a revoke is listed as not undoable, and nothing is called on Graph until the worker runs them."""
    from azure.storage.queue import QueueClient

    from core.graph import make_graph_client
    from core.request import make_request
    from core.settings import Settings
    from core.tenant import load_tenant_config
    from detections.catalog import load_catalog
    from remediation.worker import Worker

    queue = QueueClient.from_connection_string(storage_conn, unique_name + "q")
    queue.create_queue()
    monkeypatch.setenv("RESPONDER_REQUESTS_QUEUE", unique_name + "q")
    monkeypatch.setenv("RESPONDER_EMAIL_STRATEGY", "mailbox")
    with FakeGraph() as fake:
        monkeypatch.setenv("RESPONDER_GRAPH_BASE_URL", fake.base_url)
        reqs = []
        for i, box in enumerate(["support@contoso.com", "sales@contoso.com"]):
            fake.mailboxes.add(box, f"<q{i}@x>")
            req = junk(f"nq-{i}", box, imid=f"<q{i}@x>")
            req["run"] = {"id": "run-q", "index": i, "total": 3}
            reqs.append(req)
        file = tmp_path / "queue.json"
        file.write_text(json.dumps(reqs))
        assert main(["remediate", "--queue-file", str(file)]) == 0
        revoke, _ = env.receive(make_request(
            rule=reqs[0]["rule"], action="revoke_sessions", mode="auto",
            target={"user": "0a1b2c3d-0000-4000-8000-0000000000b0"}, evidence={}, detected_at=T0,
            run={"id": "run-q", "index": 2, "total": 3}))
        env.transition(revoke, "confirmed")
        capsys.readouterr()
        fake.clear_calls()

        assert main(["undo", "--run", "run-q", "--by", "alice", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert fake.calls == []                                   # the CLI called no Graph
        assert sorted(q["undo_of"] for q in doc["queued"]) == sorted(r["id"] for r in reqs)
        assert doc["cannot_undo"] == [revoke.request_id] and doc["not_queued"] == []
        for r in reqs:
            row = env.get(r["id"])
            undo = env.get(row.extra["undone_by"])
            assert (undo.action, undo.state, undo.extra["decided_via"]) == ("move_to_inbox", "received",
                                                                             "cli")
        bodies = [base64.b64decode(m.content).decode() for m in queue.receive_messages(max_messages=32)]
        assert sorted(json.loads(b)["id"] for b in bodies) == sorted(q["request_id"] for q in doc["queued"])
        assert {fake.mailboxes.folder_of(r["target"]["recipient"], r["target"]["internet_message_id"])
                for r in reqs} == {"junkemail"}

        settings = Settings.from_env(require=False)

        async def deliver() -> None:
            graph = make_graph_client(base_url=fake.base_url, credential=None)
            worker = Worker(settings, load_tenant_config(settings.tenant_config_path, settings.params_json),
                            load_catalog(), env, graph, None)
            for body in bodies:
                await worker.process_message(body, 1)

        asyncio.run(deliver())
        assert {fake.mailboxes.folder_of(r["target"]["recipient"], r["target"]["internet_message_id"])
                for r in reqs} == {"inbox"}
        # A second time: every move is undone already, nothing more is queued.
        assert main(["undo", "--run", "run-q"]) == 0
        out = capsys.readouterr().out
        assert "0 undo(s) recorded and queued" in out and "2 undone before" in out
        assert list(queue.receive_messages()) == []
