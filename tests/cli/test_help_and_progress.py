"""Every sub-command's ``--help`` says what it does and its exit codes; ``rules test`` shows progress on a
terminal and plain lines anywhere else (issue 14)."""

from __future__ import annotations

import argparse
import re

import pytest

from responder.cli import build_parser
from tests.cli.conftest import run_cli

RULE = "connector-sender-mismatch"


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...],
                                                                                           argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(((*path, name), sub))
                found += subcommands(sub, (*path, name))
    return found


def test_every_subcommand_has_a_description_and_its_exit_codes() -> None:
    commands = subcommands(build_parser())
    names = {" ".join(path) for path, _ in commands}
    assert {"remediate", "ledger", "ledger show", "approve", "reject", "undo", "verify", "scan", "demo",
            "rules", "rules list", "rules test", "rules export"} <= names
    for path, parser in commands:
        text = parser.format_help()
        assert parser.description, path
        codes = re.findall(r"^  ([0-9])  \S", text.split("exit codes:", 1)[-1], flags=re.MULTILINE)
        assert "exit codes:" in text and "0" in codes and len(codes) >= 2, (path, text)


def test_help_is_printed_whole_as_a_process() -> None:
    shown = run_cli("ledger", "show", "--help")
    assert shown.code == 0
    assert "exit codes:" in shown.out and "ambiguous id" in shown.out


@pytest.mark.parametrize("tty", [True, False])
def test_rules_test_shows_progress_only_on_a_terminal(tty: bool) -> None:
    shown = run_cli("rules", "test", "--rule", RULE, tty=tty, columns=120)
    assert shown.code == 0, shown.out + shown.err
    lines = [line for line in shown.out.splitlines() if line.strip()]
    summary = re.compile(r"^\d+ passed, 0 failed, 1 rules, 0 parser-check problems$")
    if tty:
        # rich's bar: the case count over the total, redrawn in place, then the same lines as off a terminal
        assert re.search(r"rules test .*\b\d+/\d+\b", shown.out)
        assert "\x1b[" in shown.out
        assert summary.match(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", lines[-1]).strip())
    else:
        assert "\x1b" not in shown.out and "\r" not in shown.out
        assert all(line.startswith("PASS  ") for line in lines[:-1]) and summary.match(lines[-1])
