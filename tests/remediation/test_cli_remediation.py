"""The remediation commands, run in-process through ``python -m responder``'s entry point."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.request import make_request
from devtools.fakegraph import FakeGraph
from remediation.ledger import INVALID, Ledger
from responder.cli import main

pytestmark = pytest.mark.azurite

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
RULE = "consumer-sender-to-shared-mailboxes"


def junk(nmid: str, recipient: str = "support@contoso.com", mode: str = "auto", imid: str = "") -> dict:
    target = {"network_message_id": nmid, "recipient": recipient, "internet_message_id": imid}
    return make_request(rule=RULE, action="move_to_junk", mode=mode, target=target,
                        evidence={"SenderFromAddress": "bad@gmail.com"}, detected_at=T0,
                        run={"id": "run-cli", "index": 0, "total": 1})


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, storage_conn: str, unique_name: str, tmp_path: Path) -> Ledger:
    monkeypatch.setenv("RESPONDER_STORAGE_CONNECTION", storage_conn)
    monkeypatch.setenv("RESPONDER_LEDGER_TABLE", unique_name)
    monkeypatch.setenv("RESPONDER_DRY_RUN", "false")
    tenant = tmp_path / "tenant.yaml"
    tenant.write_text("params:\n  protected_recipients: [support@contoso.com, sales@contoso.com]\n")
    monkeypatch.setenv("RESPONDER_TENANT_CONFIG", str(tenant))
    # Nothing listens there: these commands must not call Graph.
    monkeypatch.setenv("RESPONDER_GRAPH_BASE_URL", "http://127.0.0.1:9/v1.0")
    return Ledger.from_connection_string(storage_conn, unique_name)


def test_ledger_lists_and_filters(env: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = env.receive(junk("a"))
    env.receive(junk("b"))
    env.transition(a, "held", hold_reason="approval")
    assert main(["ledger", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["target"]["network_message_id"] for r in rows} == {"a", "b"}
    assert main(["ledger", "--state", "held", "--json"]) == 0
    held = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["hold_reason"]) for r in held] == [(a.request_id, "approval")]
    assert main(["ledger", "--rule", "another-rule", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["ledger", "--state", "held"]) == 0
    assert a.request_id in capsys.readouterr().out


def test_reject_then_approve_is_refused(env: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    rec, _ = env.receive(junk("a", mode="approval"))
    env.transition(rec, "held", hold_reason="approval")
    assert main(["reject", rec.request_id, "--by", "alice", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["state"] == "rejected"
    stored = env.get(rec.request_id)
    assert stored is not None and stored.extra["rejected_by"] == "alice"
    assert main(["approve", rec.request_id, "--by", "bob"]) == 2
    assert "rejected" in capsys.readouterr().err
    stored = env.get(rec.request_id)
    assert stored is not None and stored.state == "rejected"


def test_unknown_id_is_not_found(env: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    # issue 14: no request with that id exits 1 (an ambiguous prefix or a malformed id is bad input: 2)
    assert main(["approve", "0" * 32]) == 1
    assert "no request" in capsys.readouterr().err


def test_invalid_lines_are_recorded_not_dropped(env: Ledger, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    queue = tmp_path / "queue.jsonl"
    queue.write_text('not json at all\n{"schema": "remediation-request/1"}\n')
    assert main(["remediate", "--queue-file", str(queue), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [o["state"] for o in out] == ["failed", "failed"]
    failed = env.list(rule=INVALID)
    assert len(failed) == 2
    assert {f.request["raw"] for f in failed if f.request} == {"not json at all",
                                                              '{"schema": "remediation-request/1"}'}


def test_a_broken_json_array_is_refused_before_anything_runs(env: Ledger, tmp_path: Path) -> None:
    queue = tmp_path / "queue.json"
    queue.write_text('[{"id": 1},')
    assert main(["remediate", "--queue-file", str(queue)]) == 2
    assert env.list() == []


def test_no_storage_configured_is_bad_input(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("RESPONDER_STORAGE_CONNECTION", raising=False)
    monkeypatch.delenv("AzureWebJobsStorage__accountName", raising=False)
    assert main(["ledger"]) == 2
    assert "RESPONDER_STORAGE_CONNECTION" in capsys.readouterr().err


def test_remediate_approve_undo_through_the_fake_graph(env: Ledger, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with FakeGraph() as fake:
        monkeypatch.setenv("RESPONDER_GRAPH_BASE_URL", fake.base_url)
        monkeypatch.setenv("RESPONDER_EMAIL_STRATEGY", "mailbox")
        fake.mailboxes.add("support@contoso.com", "<a@x>")
        fake.mailboxes.add("sales@contoso.com", "<b@x>")
        auto = junk("a", imid="<a@x>")
        held = junk("b", "sales@contoso.com", mode="approval", imid="<b@x>")
        queue = tmp_path / "queue.json"
        queue.write_text(json.dumps([auto, held]))
        assert main(["remediate", "--queue-file", str(queue), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert [(o["request_id"], o["state"]) for o in out] == [(auto["id"], "confirmed"),
                                                                (held["id"], "held")]
        assert fake.mailboxes.folder_of("sales@contoso.com", "<b@x>") == "inbox"

        # --local: run here with the operator's sign-in (development against the fake Graph).
        assert main(["approve", held["id"], "--by", "alice", "--json", "--local"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["state"] == "confirmed"
        assert fake.mailboxes.folder_of("sales@contoso.com", "<b@x>") == "junkemail"
        assert main(["approve", held["id"], "--by", "alice", "--local"]) == 2       # exactly once
        assert main(["approve", held["id"], "--by", "alice"]) == 2                  # also through the queue

        assert main(["undo", auto["id"], "--json", "--local"]) == 0
        undone = json.loads(capsys.readouterr().out)[0]
        assert (undone["action"], undone["state"]) == ("move_to_inbox", "confirmed")
        assert fake.mailboxes.folder_of("support@contoso.com", "<a@x>") == "inbox"
        assert len(fake.calls_to("POST", r"/move$")) == 3


def test_remediate_reads_json_lines_from_stdin_and_verify_confirms(env: Ledger, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with FakeGraph() as fake:
        monkeypatch.setenv("RESPONDER_GRAPH_BASE_URL", fake.base_url)
        monkeypatch.setenv("RESPONDER_EMAIL_STRATEGY", "defender")
        reqs = [junk("nm-1"), junk("nm-2", "sales@contoso.com")]
        monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(json.dumps(r) for r in reqs) + "\n"))
        assert main(["remediate", "--queue-file", "-", "--json"]) == 0
        assert [o["state"] for o in json.loads(capsys.readouterr().out)] == ["submitted", "submitted"]
        assert len(fake.remediations) == 1
    tables = tmp_path / "tables"
    tables.mkdir()
    rows = [{"Timestamp": "now-5m", "NetworkMessageId": nmid, "RecipientEmailAddress": rcpt,
             "LatestDeliveryLocation": where}
            for nmid, rcpt, where in (("nm-1", "support@contoso.com", "Junk folder"),
                                      ("nm-2", "sales@contoso.com", "Inbox/folder"))]
    (tables / "EmailEvents.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["verify", "--tables", str(tables), "--now", "2026-11-20T12:00:00Z", "--json"]) == 0
    verified = {o["request_id"]: o["state"] for o in json.loads(capsys.readouterr().out)}
    assert verified == {reqs[0]["id"]: "confirmed", reqs[1]["id"]: "submitted"}
    assert main(["ledger", "--state", "confirmed", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [reqs[0]["id"]]


@pytest.mark.parametrize("command", [["remediate", "--queue-file", "QUEUE"], ["approve", "0" * 32]])
def test_a_mistyped_config_path_is_refused_not_read_as_empty(env: Ledger, tmp_path: Path, command: list[str],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # An empty config would drop the allowlists and break-glass accounts: a typo must stop the command.
    queue = tmp_path / "queue.jsonl"
    queue.write_text(json.dumps(junk("a")) + "\n")
    typo = tmp_path / "tennant.yaml"
    args = [str(queue) if a == "QUEUE" else a for a in command]
    assert main([*args, "--config", str(typo)]) == 2
    assert str(typo) in capsys.readouterr().err
    assert env.list() == []


def test_a_missing_config_from_the_app_setting_is_refused(env: Ledger, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    queue = tmp_path / "queue.jsonl"
    queue.write_text(json.dumps(junk("a")) + "\n")
    monkeypatch.setenv("RESPONDER_TENANT_CONFIG", "config/tennant.yaml")
    assert main(["remediate", "--queue-file", str(queue)]) == 2
    assert "tennant.yaml" in capsys.readouterr().err
    assert env.list() == []


def test_hand_written_requests_without_a_run_are_numbered_per_rule_and_action() -> None:
    from responder.commands.remediate import number_batch

    def bare(nmid: str, action: str = "move_to_junk") -> str:
        req = make_request(rule=RULE, action=action, mode="auto",
                           target={"network_message_id": nmid, "recipient": "support@contoso.com"},
                           evidence={}, detected_at=T0)
        return json.dumps(req)

    scanned = json.dumps(junk("s"))           # carries its own run: left as it is
    bodies = [bare("a"), bare("b", "soft_delete"), "not json", bare("c"), scanned, bare("d", "soft_delete")]
    out = number_batch(bodies, "cli-1")
    assert out[2] == "not json" and out[4] == scanned
    runs = [json.loads(out[i])["run"] for i in (0, 1, 3, 5)]
    assert runs == [{"id": "cli-1", "index": i, "total": 4} for i in (0, 0, 1, 1)]


def test_the_cap_applies_to_hand_written_requests(env: Ledger, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "capped.yaml"
    config.write_text("params:\n  protected_recipients: [support@contoso.com]\n"
                      f"rules:\n  {RULE}:\n    max_targets: 1\n", encoding="utf-8")
    bare = []
    for nmid in ("a", "b", "c"):
        req = junk(nmid)
        del req["run"]
        bare.append(json.dumps(req))
    queue = tmp_path / "queue.jsonl"
    queue.write_text("\n".join(bare) + "\n")
    monkeypatch.setenv("RESPONDER_DRY_RUN", "true")    # shows what each rail would do, touches nothing
    assert main(["remediate", "--queue-file", str(queue), "--config", str(config), "--json"]) == 0
    details = [o["detail"] for o in json.loads(capsys.readouterr().out)]
    assert details[0].endswith("would execute")
    assert all("past the cap of 1" in d for d in details[1:]), details


def test_deeply_nested_input_is_an_invalid_row_not_a_crash(env: Ledger, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # issue 13: hostile nesting in a JSON array element or a JSON line is recorded invalid, the rest runs
    deep = '{"a":' * 50_000 + "1" + "}" * 50_000
    for name, text in (("queue.json", f"[{deep}, {{\"schema\": 1}}]"), ("queue.jsonl", deep + "\n")):
        queue = tmp_path / name
        queue.write_text(text)
        assert main(["remediate", "--queue-file", str(queue), "--json"]) == 1
        out = json.loads(capsys.readouterr().out)
        assert {o["state"] for o in out} == {"failed"}
        assert any("nested deeper" in (o.get("error") or "") for o in out)
    assert len(env.list(rule=INVALID)) == 2


def test_the_command_line_cleans_log_records(env: Ledger, caplog: pytest.LogCaptureFixture) -> None:
    # issue 13: as in the function app, once the CLI runs no log line carries a newline or a sig
    import logging

    main(["ledger", "--json"])
    logging.getLogger("remediation.worker").warning("request %s: %s", "a\nforged line",
                                                    "https://x.logic.azure.com/w?sv=1&sig=s3cr3tvalue")
    line = caplog.records[-1].getMessage()
    assert "\n" not in line and "s3cr3tvalue" not in line


def test_approve_writes_the_decision_and_queues_it_for_the_worker(env: Ledger, storage_conn: str,
                                                                  unique_name: str,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Without --local the CLI needs storage only: the worker (in Azure, managed identity) runs it."""
    import asyncio
    import base64

    from azure.storage.queue import QueueClient

    from core.graph import make_graph_client
    from core.settings import Settings
    from core.tenant import load_tenant_config
    from detections.catalog import load_catalog
    from remediation.worker import Worker

    queue = QueueClient.from_connection_string(storage_conn, unique_name + "q")
    queue.create_queue()
    monkeypatch.setenv("RESPONDER_REQUESTS_QUEUE", unique_name + "q")
    rec, _ = env.receive(junk("q-1", mode="approval"))
    env.transition(rec, "held", hold_reason="approval")
    # Graph at 127.0.0.1:9 answers nothing: the CLI must not call it.
    assert main(["approve", rec.request_id[:10], "--by", "alice", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)[0]
    assert (out["state"], out["extra"]["queued"]) == ("approved", True)
    row = env.get(rec.request_id)
    assert (row.state, row.extra["approved_by"], row.extra["decided_via"]) == ("approved", "alice", "cli")
    (msg,) = list(queue.receive_messages())
    body = base64.b64decode(msg.content).decode()
    assert json.loads(body)["id"] == rec.request_id
    with FakeGraph() as fake:
        monkeypatch.setenv("RESPONDER_GRAPH_BASE_URL", fake.base_url)
        settings = Settings.from_env(require=False)

        async def deliver() -> None:
            graph = make_graph_client(base_url=fake.base_url, credential=None)
            worker = Worker(settings, load_tenant_config(settings.tenant_config_path, settings.params_json),
                            load_catalog(), env, graph, None)
            await worker.process_message(body, 1)
            await worker.process_message(body, 2)   # a second delivery: nothing runs twice

        asyncio.run(deliver())
        assert [e["networkMessageId"] for r in fake.remediations for e in r.emails] == ["q-1"]
    assert env.get(rec.request_id).state == "submitted"
    assert main(["approve", rec.request_id, "--by", "alice"]) == 2


def test_undo_is_recorded_and_queued_then_the_worker_restores(env: Ledger, storage_conn: str,
                                                              unique_name: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio
    import base64

    from azure.storage.queue import QueueClient

    from core.graph import make_graph_client
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
        fake.mailboxes.add("support@contoso.com", "<u@x>")
        moved = junk("u", imid="<u@x>")
        file = tmp_path / "queue.json"
        file.write_text(json.dumps([moved]))
        assert main(["remediate", "--queue-file", str(file), "--json"]) == 0
        capsys.readouterr()
        assert fake.mailboxes.folder_of("support@contoso.com", "<u@x>") == "junkemail"
        monkeypatch.setenv("RESPONDER_GRAPH_BASE_URL", "http://127.0.0.1:9/v1.0")   # the CLI calls no Graph
        assert main(["undo", moved["id"], "--by", "alice", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)[0]
        assert (out["action"], out["state"], out["extra"]["queued"]) == ("move_to_inbox", "received", True)
        assert fake.mailboxes.folder_of("support@contoso.com", "<u@x>") == "junkemail"
        (msg,) = list(queue.receive_messages())
        body = base64.b64decode(msg.content).decode()
        settings = Settings.from_env(require=False)

        async def deliver() -> None:
            graph = make_graph_client(base_url=fake.base_url, credential=None)
            worker = Worker(settings, load_tenant_config(settings.tenant_config_path, settings.params_json),
                            load_catalog(), env, graph, None)
            await worker.process_message(body, 1)

        asyncio.run(deliver())
        assert fake.mailboxes.folder_of("support@contoso.com", "<u@x>") == "inbox"
    assert env.get(out["request_id"]).state == "confirmed"
    assert main(["undo", moved["id"], "--by", "alice"]) == 2      # once
