"""``stop on|off|status`` and ``ledger --hold-reason`` (issue 14, the emergency stop)."""

from __future__ import annotations

import getpass
import json

import pytest

from remediation.ledger import Ledger
from remediation.stop import read_stop
from responder.cli import main
from tests.cli.test_ledger_cli import junk

pytestmark = pytest.mark.azurite


def test_stop_on_status_off_records_who_and_why(env: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stop", "on", "--reason", "rule X misfires", "--by", "alice"]) == 0
    state = read_stop(env)
    assert (state.on, state.by, state.reason) == (True, "alice", "rule X misfires") and state.at
    capsys.readouterr()
    assert main(["stop", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"on": True, "by": "alice", "at": state.at,
                                                   "reason": "rule X misfires"}
    assert main(["stop", "off"]) == 0   # by: the login name
    state = read_stop(env)
    assert (state.on, state.by) == (False, getpass.getuser())
    assert main(["stop", "status"]) == 0
    assert "off (cleared by" in capsys.readouterr().out


def test_stop_on_needs_a_reason(env: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stop", "on"]) == 2
    assert "--reason" in capsys.readouterr().err
    assert read_stop(env).on is False


def test_ledger_lists_by_hold_reason(env: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    stopped, other = junk("nm-stop"), junk("nm-other")
    env.receive(stopped, state="held", hold_reason="emergency_stop")
    env.receive(other, state="held", hold_reason="approval")
    assert main(["ledger", "--hold-reason", "emergency_stop", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [stopped["id"]]
