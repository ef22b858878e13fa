"""Remediation reports through the OutcomeReporter protocol; the Teams cards are one implementation of it
(notifications/reporter.py), and remediation/ imports nothing from the notifications, app or CLI side."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import pytest

from notifications.reporter import CardReporter
from remediation.outcome import Outcome
from remediation.reporting import Report, ReportQueue, report_to

ROOT = Path(__file__).resolve().parents[2]
# Packages remediation may not import (today's names and the names issue 12 gives them).
FORBIDDEN = ("notifications", "app", "responder.cli", "responder.commands", "devtools",
             "devtools.demo", "devtools.sample", "responder.bench", "notifications", "app", "devtools")


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import``/``from`` anywhere in the file names (functions, TYPE_CHECKING too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def forbidden_imports(package: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{p.relative_to(package)}: {m}" for p in package.rglob("*.py") for m in imported_modules(p)
                  if any(m == f or m.startswith(f + ".") for f in forbidden))


def test_remediation_imports_nothing_from_notifications_app_or_cli() -> None:
    assert forbidden_imports(ROOT / "remediation", FORBIDDEN) == []


def test_the_import_check_sees_function_level_imports(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("def f():\n    from notifications.cards import approval_card\n")
    assert forbidden_imports(tmp_path, FORBIDDEN) == ["m.py: notifications.cards"]


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = fail

    async def _note(self, method: str, report: Report) -> None:
        self.calls.append((method, report.summary))
        if self.fail:
            raise RuntimeError("webhook down")

    async def approval_needed(self, report: Report) -> None:
        await self._note("approval_needed", report)

    async def out_of_scope(self, report: Report) -> None:
        await self._note("out_of_scope", report)

    async def failed(self, report: Report) -> None:
        await self._note("failed", report)

    async def poison(self, report: Report) -> None:
        await self._note("poison", report)


class Markers:
    """The ledger's once-markers, in memory."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def claim_once(self, key: str) -> bool:
        if key in self.taken:
            return False
        self.taken.add(key)
        return True

    def forget_once(self, key: str) -> None:
        self.taken.discard(key)


def outcome(rid: str, rule: str = "r", error: str | None = None) -> Outcome:
    return Outcome(request_id=rid, rule=rule, action="move_to_junk", target={}, mode="auto", state="failed",
                   error=error)


def in_run(run: str = "run-1") -> dict[str, Any]:
    return {"run": {"id": run, "index": 0, "total": 2}}


def test_each_kind_goes_to_its_method_and_an_unknown_kind_is_refused() -> None:
    rec = Recorder()
    for kind in ("held", "skipped", "failed", "poison"):
        asyncio.run(report_to(rec, Report(kind, kind)))
    assert rec.calls == [("approval_needed", "held"), ("out_of_scope", "skipped"), ("failed", "failed"),
                         ("poison", "poison")]
    with pytest.raises(ValueError, match="unknown report kind 'odd'"):
        asyncio.run(report_to(rec, Report("odd", "x")))


def test_the_outbox_merges_a_run_tells_it_once_and_keeps_distinct_errors_apart() -> None:
    rec, markers = Recorder(), Markers()
    box = ReportQueue(rec, markers)
    box.add(Report("held", "cap", [outcome("1")], [in_run()]))
    box.add(Report("held", "cap", [outcome("2")], [in_run()]))
    box.add(Report("failed", "boom", [outcome("3", error="403")], [in_run()]))
    box.add(Report("failed", "bang", [outcome("4", error="404")], [in_run()]))
    asyncio.run(box.flush())
    assert rec.calls == [("approval_needed", "cap (2 requests)"), ("failed", "boom"), ("failed", "bang")]
    box.add(Report("held", "cap", [outcome("5")], [in_run()]))   # a later delivery of the same run
    asyncio.run(box.flush())
    assert len(rec.calls) == 3 and len(box.all) == 5


def test_a_reporter_that_fails_releases_its_marker_and_breaks_nothing() -> None:
    markers = Markers()
    box = ReportQueue(Recorder(fail=True), markers)
    box.add(Report("held", "cap", [outcome("1")], [in_run()]))
    asyncio.run(box.flush())
    assert markers.taken == set()


class Cards:
    def __init__(self) -> None:
        self.cards: list[dict[str, Any]] = []

    async def send(self, card: dict[str, Any]) -> bool:
        self.cards.append(card)
        return True


def test_the_card_reporter_leaves_held_requests_of_a_run_to_the_runs_own_card() -> None:
    request = {"id": "a" * 32, "rule": "r", "action": "disable_connector", "mode": "approval",
               "target": {"connector": "Relay"}, "evidence": {}, **in_run()}
    held = Report("held", "approval", [outcome("a" * 32)], [request])
    quiet, loud = Cards(), Cards()
    asyncio.run(CardReporter(quiet, held_cards=False).approval_needed(held))
    asyncio.run(CardReporter(loud).approval_needed(held))
    assert quiet.cards == [] and len(loud.cards) == 1
    assert "Set-InboundConnector -Identity 'Relay' -Enabled:$false" in str(loud.cards[0])
    asyncio.run(CardReporter(quiet, held_cards=False).failed(Report("failed", "boom", [outcome("b")])))
    assert len(quiet.cards) == 1
