"""How remediation tells people what happened, without knowing how they are told.

The worker produces ``Report`` objects (failures, holds, scope surprises, poison messages) and hands them
to an ``OutcomeReporter``: the function app and the command line wire in the Teams cards
(notifications/reporter.py), tests a list. Remediation never imports the notifications side.

``ReportQueue`` is the worker's outbox: it merges the reports of one flush per (kind, rule, run), tells
on-call of a given (kind, rule, run) once across deliveries (a ``claim_once`` marker in the ledger, since
a run of 400 capped targets arrives as 400 queue messages), tells failures once per distinct error, and
never lets a reporter's failure break remediation (logged, marker released).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from remediation.outcome import Outcome

log = logging.getLogger(__name__)

# undone: one run's undo (remediation/undo_run.py), one summary for the whole run.
REPORT_KINDS = ("failed", "held", "skipped", "poison", "undone")


@dataclass
class Report:
    """Something on-call should hear about: failures, holds (approval or cap), scope surprises."""

    kind: str                   # "failed" | "held" | "skipped" | "poison" | "undone"
    summary: str
    outcomes: list[Outcome] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


class OutcomeReporter(Protocol):
    """Where reports go. Each method receives one merged report of its kind."""

    async def approval_needed(self, report: Report) -> None:
        """Held requests: approval mode, past the cap, or an allowlist that cannot be checked."""

    async def out_of_scope(self, report: Report) -> None:
        """Requests that were not run because their target is outside what the rule may touch."""

    async def failed(self, report: Report) -> None:
        """Failed, not applied, or invalid requests."""

    async def poison(self, report: Report) -> None:
        """A message that failed every delivery and went to the poison queue."""

    async def run_undone(self, report: Report) -> None:
        """One run undone (remediation/undo_run.py): each request of the run, tagged with its fate."""


async def report_to(reporter: OutcomeReporter, report: Report) -> None:
    """Call the reporter's method for ``report.kind``."""
    method = {"held": reporter.approval_needed, "skipped": reporter.out_of_scope, "failed": reporter.failed,
              "poison": reporter.poison, "undone": getattr(reporter, "run_undone", None)}.get(report.kind)
    if method is None and report.kind == "undone":
        log.info("the reporter takes no run-undone summaries: %s", report.summary)   # an older reporter
        return
    if method is None:
        raise ValueError(f"unknown report kind {report.kind!r} (expected one of {REPORT_KINDS})")
    await method(report)


class HookReporter:
    """Every kind to one callable (tests, and callers that only collect reports)."""

    def __init__(self, hook: Callable[[Report], Awaitable[None]]) -> None:
        self.hook = hook

    async def approval_needed(self, report: Report) -> None:
        await self.hook(report)

    async def out_of_scope(self, report: Report) -> None:
        await self.hook(report)

    async def failed(self, report: Report) -> None:
        await self.hook(report)

    async def poison(self, report: Report) -> None:
        await self.hook(report)

    async def run_undone(self, report: Report) -> None:
        await self.hook(report)


class ReportQueue:
    def __init__(self, reporter: OutcomeReporter | None, ledger: Any) -> None:
        self.reporter, self.ledger = reporter, ledger
        self.all: list[Report] = []   # everything reported, for the CLI and demo summaries
        self._sent = 0

    def add(self, report: Report) -> None:
        self.all.append(report)

    async def flush(self) -> None:
        pending, self._sent = self.all[self._sent:], len(self.all)
        if self.reporter is None or not pending:
            return
        merged: dict[tuple[str, ...], Report] = {}
        for report in pending:
            key = report_key(report)
            if key in merged:
                merged[key].outcomes += report.outcomes
                merged[key].requests += report.requests
            else:
                merged[key] = Report(report.kind, report.summary, list(report.outcomes),
                                     list(report.requests))
        for key, report in merged.items():
            marker = "report:" + ":".join(key) if key[2] else None
            if marker is not None and not self.ledger.claim_once(marker):
                continue   # on-call was already told about this run (the run's card lists them all)
            if len(report.outcomes) > 1:
                report.summary += f" ({len(report.outcomes)} requests)"
            try:
                await report_to(self.reporter, report)
            except Exception:
                log.exception("report %s could not be delivered", report.kind)
                if marker is not None:
                    self.ledger.forget_once(marker)


def report_key(report: Report) -> tuple[str, ...]:
    first = report.outcomes[0] if report.outcomes else None
    request = report.requests[0] if report.requests else {}
    run = str((request.get("run") or {}).get("id") or "")
    key: tuple[str, ...] = (report.kind, first.rule if first else "", run)
    if report.kind in ("failed", "poison"):
        # Different errors are different news; the same error on many targets is one.
        error = (first.error or first.detail) if first else report.summary
        key += (hashlib.sha256((error or "").encode("utf-8")).hexdigest()[:12],)
    return key
