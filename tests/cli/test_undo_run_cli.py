"""``undo --run RUN_ID`` (issue 14, undo a run): every move of a run back, one summary card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.fakegraph import FakeGraph
from devtools.webhook_sink import WebhookSink
from remediation.ledger import Ledger
from responder.cli import main
from tests.remediation.test_cli_remediation import junk

pytestmark = pytest.mark.azurite


def test_undo_run_restores_the_run_and_sends_one_card(env: Ledger, tmp_path: Path,
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
        assert main(["undo", "--run", "run-cli", "--by", "alice", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert sorted(u["undo_of"] for u in doc["undone"]) == sorted(r["id"] for r in reqs)
        assert {fake.mailboxes.folder_of(r["target"]["recipient"], r["target"]["internet_message_id"])
                for r in reqs} == {"inbox"}
        [delivery] = sink.wait_for(1)
        assert delivery.problems == [] and "Run run-cli undone" in json.dumps(delivery.card)
        # A second time: nothing more, said so, no second card.
        assert main(["undo", "--run", "run-cli"]) == 0
        assert "nothing more to undo" in capsys.readouterr().out
        assert len(sink.deliveries) == 1


def test_undo_needs_an_id_or_a_run_not_both(env: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["undo"]) == 2
    assert main(["undo", "0" * 32, "--run", "r"]) == 2
    assert "one of them" in capsys.readouterr().err


def test_undo_of_an_unknown_run_says_so(env: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["undo", "--run", "no-such-run"]) == 1
    assert "no request of this run" in capsys.readouterr().out
