"""``ledger``, ``ledger show`` and shortened ids (issue 14, "The operator's command line")."""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from core.request import make_request
from remediation.ledger import Ledger
from responder.cli import main
from tests.cli.conftest import run_cli

pytestmark = pytest.mark.azurite

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
JUNK_RULE = "consumer-sender-to-shared-mailboxes"
ACCOUNT_RULE = "admin-logon-failures-then-success"
CONNECTOR_RULE = "connector-sender-mismatch"
ADMIN_OID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
RUN = {"id": "run-cli", "index": 0, "total": 1}


def junk(nmid: str, mode: str = "approval") -> dict:
    return make_request(rule=JUNK_RULE, action="move_to_junk", mode=mode,
                        target={"network_message_id": nmid, "recipient": "support@contoso.com"},
                        evidence={"SenderFromAddress": "bad@gmail.com"}, detected_at=T0, run=RUN)


def revoke() -> dict:
    return make_request(rule=ACCOUNT_RULE, action="revoke_sessions", mode="approval",
                        target={"user": ADMIN_OID},
                        evidence={"AccountObjectId": ADMIN_OID, "AccountUpn": "admin@contoso.com",
                                  "SuccessIPAddress": "198.51.100.9"}, detected_at=T0, run=RUN)


@pytest.fixture
def ticking(env: Ledger) -> Ledger:
    """The same table, written with a clock that moves a minute per write (distinct, ordered times)."""
    minutes = itertools.count()
    return Ledger(env.table, clock=lambda: T0 + timedelta(minutes=next(minutes)))


def decided(ledger: Ledger) -> dict[str, str]:
    """An approved-and-done account request, a rejected move, and a confirmed move undone by carol."""
    acct, _ = ledger.receive(revoke())
    acct = ledger.transition(acct, "held", hold_reason="approval")
    acct = ledger.transition(acct, "approved", approved_by="alice")
    acct = ledger.update(acct, attempts=1)
    ledger.transition(acct, "confirmed", detail="sessions revoked")
    rej, _ = ledger.receive(junk("nm-rejected"))
    rej = ledger.transition(rej, "held", hold_reason="approval")
    ledger.transition(rej, "rejected", rejected_by="bob", detail="rejected by bob")
    moved, _ = ledger.receive(junk("nm-moved", mode="auto"))
    moved = ledger.transition(moved, "confirmed", detail="moved to junkemail",
                              undo={"from_folder": "inbox", "message_id": "AAMk1"})
    undo_req = make_request(rule=JUNK_RULE, action="move_to_inbox", mode="auto", target=moved.target,
                            evidence={}, detected_at=T0, run={"id": f"undo-{moved.request_id}", "index": 0,
                                                              "total": 1},
                            undo_of={"request_id": moved.request_id, "undo": moved.undo, "by": "carol"})
    undo, _ = ledger.receive(undo_req, undo_of=moved.request_id)
    ledger.transition(undo, "confirmed", detail="moved back to inbox")
    ledger.update(ledger.read(JUNK_RULE, moved.request_id), undone_by=undo.request_id)  # type: ignore[arg-type]
    return {"account": acct.request_id, "rejected": rej.request_id, "moved": moved.request_id,
            "undo": undo.request_id}


def row_of(out: str, request_id: str) -> str:
    [line] = [line for line in out.splitlines() if request_id in line.split()[:1]]
    return line


def test_ledger_lists_times_and_people_with_the_upn_beside_an_object_id(
        ticking: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    ids = decided(ticking)
    assert main(["ledger"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["id", "rule", "action", "state", "found", "target", "by", "created", "updated",
                      "detail"]
    account = row_of(out, ids["account"])
    assert f"user={ADMIN_OID} (admin@contoso.com)" in account
    assert "approved by alice" in account
    assert "2026-11-20T12:00:00Z" in account and "2026-11-20T12:04:00Z" in account   # created, updated
    assert "rejected by bob" in row_of(out, ids["rejected"])
    assert "undone by carol" in row_of(out, ids["moved"])
    assert f"undo of {ids['moved']} by carol" in row_of(out, ids["undo"])


def test_ledger_shows_which_path_found_a_request_first(env: Ledger,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The ledger keeps the first request of an id: a scan finding a copy the push path found first
    leaves the row saying push, and the other way round."""
    pushed, scanned = junk("nm-push-first", mode="auto"), junk("nm-scan-first", mode="auto")
    env.receive({**pushed, "source": "push"})
    env.receive({**pushed, "source": "scheduled"})        # the scan finds the same copy later
    env.receive({**scanned, "source": "scheduled"})
    env.receive({**scanned, "source": "push"})
    assert main(["ledger"]) == 0
    out = capsys.readouterr().out
    assert row_of(out, pushed["id"]).split()[4] == "push"
    assert row_of(out, scanned["id"]).split()[4] == "scheduled"
    assert main(["ledger", "show", pushed["id"]]) == 0
    fields = dict((line[:12].strip(), line[12:].strip()) for line in capsys.readouterr().out.splitlines())
    assert fields["found by"] == "the push path (Graph change notification)"
    assert main(["ledger", "--json"]) == 0
    sources = {r["id"]: r["source"] for r in json.loads(capsys.readouterr().out)}
    assert (sources[pushed["id"]], sources[scanned["id"]]) == ("push", "scheduled")


def test_ledger_show_prints_the_whole_record_and_its_history_in_order(
        ticking: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    ids = decided(ticking)
    assert main(["ledger", "show", ids["account"][:7]]) == 0
    out = capsys.readouterr().out
    fields = [(line[:12].strip(), line[12:].strip()) for line in out.splitlines()]
    history = [value for label, value in fields if label == "history"]
    assert history == ["2026-11-20T12:00:00Z  received", "2026-11-20T12:01:00Z  held",
                       "2026-11-20T12:02:00Z  approved by alice", "2026-11-20T12:04:00Z  confirmed"]
    values = dict(fields)
    assert values["request"] == ids["account"]
    assert values["target"] == f"user={ADMIN_OID} (admin@contoso.com)"
    assert values["state"] == "confirmed since 2026-11-20T12:04:00Z"
    assert values["attempts"] == "1" and values["approved by"] == "alice"
    assert ("evidence", "AccountUpn: admin@contoso.com") in fields

    assert main(["ledger", "show", ids["moved"]]) == 0
    moved = dict((line[:12].strip(), line[12:].strip()) for line in capsys.readouterr().out.splitlines())
    assert json.loads(moved["undo info"]) == {"from_folder": "inbox", "message_id": "AAMk1"}
    assert moved["undone by"] == f"carol (undo request {ids['undo']})"

    assert main(["ledger", "--json", "show", ids["rejected"][:6]]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["id"], shown["rejected_by"], [h["state"] for h in shown["history"]]) == (
        ids["rejected"], "bob", ["received", "held", "rejected"])


def test_a_connector_command_is_shown_whole(env: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    name = "Partner relay for the scanners in building 7 - second floor (B7)"   # 63: near the 64 limit
    req = make_request(rule=CONNECTOR_RULE, action="disable_connector", mode="approval",
                       target={"connector": name, "connector_type": "outbound"},
                       evidence={"Connector": name}, detected_at=T0, run=RUN)
    rec, _ = env.receive(req)
    env.transition(rec, "held", hold_reason="approval")
    assert main(["ledger", "show", req["id"][:10]]) == 0
    command = f"Set-OutboundConnector -Identity '{name}' -Enabled:$false"
    assert f"command      {command}" in capsys.readouterr().out.splitlines()


def collide(ledger: Ledger) -> tuple[str, list[str]]:
    """Held requests until two ids share a first character (pigeonhole: at most 17)."""
    seen: dict[str, list[str]] = {}
    for n in range(17):
        rec, _ = ledger.receive(junk(f"nm-{n}"))
        ledger.transition(rec, "held", hold_reason="approval")
        seen.setdefault(rec.request_id[0], []).append(rec.request_id)
        if len(seen[rec.request_id[0]]) == 2:
            return rec.request_id[0], seen[rec.request_id[0]]
    raise AssertionError("unreachable")


def test_ids_may_be_shortened_to_a_unique_beginning(env: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    _, pair = collide(env)
    unique = next(pair[0][:n] for n in range(2, 33) if pair[0][:n] != pair[1][:n])
    assert main(["reject", unique, "--by", "dana", "--json"]) == 0
    [outcome] = json.loads(capsys.readouterr().out)
    assert (outcome["request_id"], outcome["state"]) == (pair[0], "rejected")
    stored = env.get(pair[0])
    assert stored is not None and stored.extra["rejected_by"] == "dana"
    assert main(["ledger", "show", unique.upper()]) == 0     # ids are hexadecimal: any case
    assert pair[0] in capsys.readouterr().out


@pytest.mark.parametrize("command", [["ledger", "show"], ["approve"], ["reject"], ["undo"]])
def test_an_ambiguous_prefix_lists_the_candidates_and_exits_2(
        env: Ledger, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    first, pair = collide(env)
    assert main([*command, first]) == 2
    err = capsys.readouterr().err
    assert f"id {first} matches" in err
    assert all(rid in err for rid in pair)
    assert [r.state for r in env.list()] == ["held"] * len(env.list())     # nothing was decided


@pytest.mark.parametrize("command", [["ledger", "show"], ["approve"], ["reject"], ["undo"]])
def test_no_match_exits_1_and_a_malformed_id_exits_2(
        env: Ledger, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rec, _ = env.receive(junk("nm-only"))
    other = next(c for c in "0123456789abcdef" if c != rec.request_id[0])
    assert main([*command, other * 5]) == 1
    assert f"no request {other * 5}" in capsys.readouterr().err
    assert main([*command, "not-an-id"]) == 2
    assert "is not a request id" in capsys.readouterr().err


def test_tables_on_a_terminal_never_cut_ids_or_slugs(env: Ledger) -> None:
    ids = [env.receive(junk(f"nm-{n}"))[0].request_id for n in range(2)]
    acct, _ = env.receive(revoke())
    for columns in (80, 120):
        shown = run_cli("ledger", tty=True, columns=columns)
        assert shown.code == 0, shown.out
        for rid in (*ids, acct.request_id):
            assert rid in shown.out, (columns, shown.out)
        assert JUNK_RULE in shown.out and ACCOUNT_RULE in shown.out, shown.out
    wide = run_cli("ledger", tty=True, columns=250)
    assert "┃" in wide.out or "│" in wide.out          # a rich table where it fits
    assert all(rid in wide.out for rid in (*ids, acct.request_id)) and "created" in wide.out


def test_plain_output_off_a_terminal_is_one_line_per_row(env: Ledger) -> None:
    long_target = "x" * 120
    rec, _ = env.receive(junk(long_target))
    shown = run_cli("ledger")
    assert shown.code == 0 and shown.err == ""
    lines = shown.out.splitlines()
    assert len(lines) == 2 and not re.search(r"[─│┃━]", shown.out)
    assert lines[1].startswith(rec.request_id) and f"network_message_id={long_target}" in lines[1]



def test_ledger_show_prints_fields_it_has_no_label_for() -> None:
    # The whole record: a field the row carries (one the worker adds later) is printed without a dedicated
    # line for it.
    import io

    from remediation.ledger import Record
    from responder.commands.ledger_view import print_record

    rec = Record(request_id="a" * 32, rule=JUNK_RULE, action="move_to_junk", target={"recipient": "x@y"},
                 mode="auto", state="received",
                 extra={"intent_at": "2026-11-20T12:00:03Z", "approved_by": "al"})
    out = io.StringIO()
    print_record(rec, out, command=None, undo=None, now="2026-11-20T12:00:00Z")
    lines = out.getvalue().splitlines()
    assert "intent at    2026-11-20T12:00:03Z" in lines and "approved by  al" in lines
