"""``remediate --queue-file``: requests left in flight by another delivery, and storage errors in a batch
(issue 13, the CLI's part)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.data.tables import TableClient

from core.request import make_request
from devtools.fakegraph import FakeGraph
from remediation.ledger import Ledger
from remediation.outcome import Outcome
from responder.cli import main

pytestmark = pytest.mark.azurite

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
RULE = "consumer-sender-to-shared-mailboxes"


def junk(nmid: str, mode: str = "auto", index: int = 0) -> dict:
    return make_request(rule=RULE, action="move_to_junk", mode=mode,
                        target={"network_message_id": nmid, "recipient": "support@contoso.com",
                                "internet_message_id": f"<{nmid}@x>"},
                        evidence={"SenderFromAddress": "bad@gmail.com"}, detected_at=T0,
                        run={"id": "run-batch", "index": index, "total": 3})


def write_queue(tmp_path: Path, requests: list[dict]) -> Path:
    queue = tmp_path / "queue.jsonl"
    queue.write_text("".join(json.dumps(r) + "\n" for r in requests))
    return queue


def test_requests_in_flight_elsewhere_exit_1_and_say_what_to_do(
        env: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    busy, held = junk("nm-busy"), junk("nm-held", mode="approval", index=1)
    rec, _ = env.receive(busy)
    env.claim(rec, lease=timedelta(minutes=5), owner="queue-delivery-1")   # a queue worker is on it
    assert main(["remediate", "--queue-file", str(write_queue(tmp_path, [busy, held])), "--json"]) == 1
    captured = capsys.readouterr()
    states = {o["request_id"]: o["state"] for o in json.loads(captured.out)}
    assert states == {busy["id"]: "received", held["id"]: "held"}
    assert "1 request(s) left in flight" in captured.err and busy["id"] in captured.err
    assert "ledger show" in captured.err
    stored = env.get(busy["id"])
    assert stored is not None and stored.claim_token == "queue-delivery-1"   # left alone


def test_a_storage_error_mid_batch_is_reported_with_what_was_recorded(
        env: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    requests = [junk(f"nm-{n}", index=n) for n in range(3)]
    real_update = TableClient.update_entity
    calls = {"n": 0}

    def flaky_update(self: TableClient, *args: Any, **kwargs: Any) -> Any:
        # The table service stops answering after the first four writes of the batch.
        calls["n"] += 1
        if calls["n"] > 4:
            raise ServiceRequestError("Connection reset by peer")
        return real_update(self, *args, **kwargs)

    with FakeGraph() as fake:
        monkeypatch.setenv("RESPONDER_GRAPH_BASE_URL", fake.base_url)
        monkeypatch.setenv("RESPONDER_EMAIL_STRATEGY", "mailbox")
        for r in requests:
            fake.mailboxes.add("support@contoso.com", r["target"]["internet_message_id"])
        monkeypatch.setattr(TableClient, "update_entity", flaky_update)
        queue = write_queue(tmp_path, requests)
        queue.write_text("not json\n" + queue.read_text())   # an invalid line is accounted for too
        code = main(["remediate", "--queue-file", str(queue), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.err and "storage" in captured.err
    invalid, *out = json.loads(captured.out)
    assert (invalid["rule"], invalid["state"]) == ("~invalid", "failed")
    assert [o["request_id"] for o in out] == [r["id"] for r in requests]   # every request accounted for
    monkeypatch.setattr(TableClient, "update_entity", real_update)
    for o in out:   # what is printed is what the ledger holds (unless marked as not recorded)
        if o["extra"].get("storage_error"):
            continue
        stored = env.get(o["request_id"])
        assert stored is not None and stored.state == o["state"]


@pytest.mark.parametrize("marker", [{"in_flight": True}, {"storage_error": "HTTP 503 ServerBusy"}])
def test_outcomes_the_worker_marks_make_the_batch_fail(
        env: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, marker: dict,
        capsys: pytest.CaptureFixture[str]) -> None:
    # The worker's markers for a request left to another delivery or not recorded (issue 13): the
    # command exits 1 and says how many, whatever the state.
    req = junk("nm-marked")

    async def process_bodies(self: Any, bodies: list[str]) -> list[Outcome]:
        return [Outcome(request_id=req["id"], rule=RULE, action="move_to_junk", target=req["target"],
                        mode="auto", state="received", detail="", extra=dict(marker))]

    monkeypatch.setattr("remediation.worker.Worker.process_bodies", process_bodies)
    assert main(["remediate", "--queue-file", str(write_queue(tmp_path, [req]))]) == 1
    err = capsys.readouterr().err
    assert "1 request(s)" in err and req["id"] in err
    assert ("left in flight" in err) if "in_flight" in marker else ("HTTP 503 ServerBusy" in err)


def test_a_storage_error_during_a_decision_is_one_line(env: Ledger, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    req = junk("nm-held", mode="approval")
    rec, _ = env.receive(req)
    env.transition(rec, "held", hold_reason="approval")

    def down(self: TableClient, *args: Any, **kwargs: Any) -> Any:
        raise ServiceRequestError("Connection reset by peer")

    monkeypatch.setattr(TableClient, "update_entity", down)
    assert main(["reject", req["id"][:8], "--by", "erin"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot reach the storage endpoint")
    assert f"ledger show {req['id'][:8]}" in err
