"""Connector requests the app cannot run (RESPONDER_CONNECTOR_ACTIONS=manual): the cards ask for the
command and then a `--done`, never "to approve" (approving runs nothing there)."""

from __future__ import annotations

from devtools.cardrender import examples
from notifications.cards import approval_card, scan_card
from remediation.actions.connector import manual_command
from tests.notify.test_cards import all_text


def test_scan_card_held_section_says_run_then_mark_done() -> None:
    report = examples.connector_scan_report()
    report.outcomes = []
    report.commands = {r["id"]: c for r in report.requests if (c := manual_command(r))}
    connectors = [r for r in report.requests if r["action"] == "disable_connector"]
    assert connectors
    report.requests = connectors
    report.by_hand = {r["id"] for r in connectors}
    text = all_text(scan_card(report))
    for r in connectors:
        assert f"python -m responder approve {r['id']} --done" in text
        assert f"/api/requests/{r['id']}/approve with body {{\"done\": true}}" in text
        assert f"python -m responder approve {r['id']}\n" not in text
    assert "Run this command, then mark it done" in text and "Approve: " not in text


def test_approval_card_for_manual_connectors_has_no_approve_step() -> None:
    requests = [r for r in examples.connector_scan_report().requests if r["action"] == "disable_connector"]
    commands = {r["id"]: c for r in requests if (c := manual_command(r))}
    manual = all_text(approval_card(requests, commands=commands, by_hand={r["id"] for r in requests}))
    assert "To approve" not in manual and "then mark it done" in manual
    assert "RESPONDER_CONNECTOR_ACTIONS=manual" in manual
    for r in requests:
        assert commands[r["id"]] in manual and f"approve {r['id']} --done" in manual
    # With the permission granted (approval mode) the same requests are approved as before.
    granted = all_text(approval_card(requests, commands=commands))
    assert "To approve" in granted and "--done" not in granted
