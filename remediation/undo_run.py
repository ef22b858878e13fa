"""Undo a run: reverse everything one rule run did, in one step, with one summary card.

When an auto rule misfires, on-call wants the run's effects gone, not forty ``undo ID`` calls. Each
request of the run is looked at once:

* confirmed, with a declared inverse (remediation/actions/: move_to_junk -> move_to_inbox, back to the
  recorded original folder) and not undone yet: undone through ``Decisions.undo``, the same per-request
  undo as ``undo ID`` (a new ledger request, linked both ways, through the rails with ``restore``);
* already undone (``undone_by``): counted, nothing more is done (so a second undo-run is a no-op and says so);
* confirmed without an inverse (revoke sessions, confirm compromised: the platform cannot take them
  back): listed as such, for a person to judge;
* submitted (a Defender remediation not yet confirmed) or still in flight: listed as pending (undo it
  once verification confirms it);
* everything else did nothing (held, rejected, skipped, failed, expired): counted.

A failure on one target never stops the others. The per-request reports of the undos are not sent one by
one: the run gets one ``undone`` report (remediation/reporting.py) that lists every category.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from remediation.decisions import WorkerError
from remediation.ledger import Record
from remediation.outcome import Outcome
from remediation.reporting import Report

if TYPE_CHECKING:
    from remediation.actions.registry import Registry
    from remediation.decisions import Decisions
    from remediation.worker import Worker

log = logging.getLogger(__name__)

# Categories, as ``extra["undo_run"]`` on the summary report's outcomes (the card groups by it).
CATEGORIES = ("undone", "failed", "already_undone", "cannot_undo", "pending", "nothing_done")


@dataclass
class RunUndo:
    run_id: str
    by: str
    undone: list[Outcome] = field(default_factory=list)         # the new undo requests' outcomes
    failed: list[Outcome] = field(default_factory=list)         # the originals whose undo failed (error set)
    already_undone: list[Record] = field(default_factory=list)
    cannot_undo: list[Record] = field(default_factory=list)
    pending: list[Record] = field(default_factory=list)
    nothing_done: list[Record] = field(default_factory=list)

    @property
    def found(self) -> int:
        return (len(self.undone) + len(self.failed) + len(self.already_undone) + len(self.cannot_undo)
                + len(self.pending) + len(self.nothing_done))

    def summary(self) -> str:
        if not self.found:
            return f"run {self.run_id}: no request of this run is in the ledger"
        parts = [f"{len(self.undone)} undone"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.already_undone:
            parts.append(f"{len(self.already_undone)} undone before")
        if self.cannot_undo:
            parts.append(f"{len(self.cannot_undo)} cannot be undone")
        if self.pending:
            parts.append(f"{len(self.pending)} not confirmed yet")
        if self.nothing_done:
            parts.append(f"{len(self.nothing_done)} had done nothing")
        more = "" if self.undone or self.failed else "; nothing more to undo"
        return f"run {self.run_id} undone by {self.by}: {', '.join(parts)}{more}"

    def to_dict(self) -> dict[str, Any]:
        """For JSON answers (CLI --json, HTTP)."""
        def ids(recs: list[Record]) -> list[str]:
            return [r.request_id for r in recs]
        return {"run_id": self.run_id, "by": self.by, "summary": self.summary(),
                "undone": [{"request_id": o.request_id, "undo_of": (o.extra or {}).get("undo_of"),
                            "state": o.state} for o in self.undone],
                "failed": [{"request_id": o.request_id, "error": o.error} for o in self.failed],
                "already_undone": ids(self.already_undone), "cannot_undo": ids(self.cannot_undo),
                "pending": ids(self.pending), "nothing_done": ids(self.nothing_done)}

    def report(self) -> Report:
        """The one summary report: every original and undo, each tagged with its category."""
        def tag(o: Outcome, category: str) -> Outcome:
            return replace(o, extra={**o.extra, "undo_run": category, "undo_run_id": self.run_id,
                                     "undo_run_by": self.by})
        outcomes = [tag(o, "undone") for o in self.undone] + [tag(o, "failed") for o in self.failed]
        for category in ("already_undone", "cannot_undo", "pending", "nothing_done"):
            outcomes += [tag(r.outcome(), category) for r in getattr(self, category)]
        return Report("undone", self.summary(), outcomes)


def classify(rec: Record, registry: Registry, connector_actions: str) -> str:
    """What undoing ``rec`` as part of its run means: ``undo`` (do it), or the RunUndo list it goes in.
    Shared with the approval page's "undo all done" (app/pages.py), which records and enqueues instead."""
    spec = registry.find(rec.action)
    if rec.extra.get("undone_by"):
        return "already_undone"
    if rec.state in ("submitted", "received", "approved"):
        return "pending"
    if rec.state != "confirmed":
        return "nothing_done"
    if spec is None or spec.inverse is None or registry.run_by_hand(spec.inverse, connector_actions):
        return "cannot_undo"   # no way back, or only by hand (connectors under manual)
    return "undo"


@dataclass
class QueuedRunUndo:
    """``record_run_undo``'s answer: the undos recorded for the caller to enqueue, and the rest listed."""
    run_id: str
    by: str
    queued: list[tuple[Record, dict[str, Any]]] = field(default_factory=list)   # (original, undo request)
    problems: list[tuple[str, str]] = field(default_factory=list)               # (original id, why not)
    others: dict[str, list[Record]] = field(default_factory=dict)               # category -> originals

    @property
    def found(self) -> int:
        return len(self.queued) + len(self.problems) + sum(len(v) for v in self.others.values())

    def summary(self) -> str:
        if not self.found:
            return f"run {self.run_id}: no request of this run is in the ledger"
        words = {"already_undone": "undone before", "cannot_undo": "cannot be undone",
                 "pending": "not confirmed yet", "nothing_done": "had done nothing"}
        parts = [f"{len(self.queued)} undo(s) recorded and queued"] + [
            f"{len(recs)} {words[c]}" for c, recs in sorted(self.others.items())]
        if self.problems:
            parts.append(f"{len(self.problems)} not undone")
        return f"run {self.run_id} by {self.by}: {', '.join(parts)}"

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "by": self.by, "summary": self.summary(),
                "queued": [{"request_id": u["id"], "undo_of": rec.request_id} for rec, u in self.queued],
                "not_undone": [{"request_id": rid, "error": err} for rid, err in self.problems],
                **{c: [r.request_id for r in recs] for c, recs in sorted(self.others.items())}}


def record_run_undo(decisions: Decisions, run_id: str, by: str, connector_actions: str,
                    **fields: Any) -> QueuedRunUndo:
    """Undo a run through the queue: one undo recorded (``Decisions.record_undo``) per request ``classify``
    says to undo, for the caller to enqueue; the worker in Azure runs each with its own identity. The
    approval page's "undo all done" and the CLI's ``undo --run`` share it; nothing here calls Graph."""
    result = QueuedRunUndo(run_id=run_id, by=by)
    for rec in decisions.runner.ledger.list(run_id=run_id):
        category = classify(rec, decisions.registry, connector_actions)
        if category != "undo":
            result.others.setdefault(category, []).append(rec)
            continue
        try:
            _, undo_req = decisions.record_undo(rec.request_id, by, **fields)
        except WorkerError as exc:
            result.problems.append((rec.request_id, str(exc)))
            continue
        result.queued.append((rec, undo_req))
    return result


async def undo_run(worker: Worker, run_id: str, by: str, *, claimed_by: str | None = None) -> RunUndo:
    """Undo every undoable request of ``run_id``; one summary report goes to the worker's reporter.
    ``claimed_by``: a name the caller gave but nobody verified, recorded on each undo request."""
    result = RunUndo(run_id=run_id, by=by)
    registry = worker.registry
    rows = worker.ledger.list(run_id=run_id)
    outbox = worker.outbox
    reporter, outbox.reporter = outbox.reporter, None   # the per-undo reports: summarised below instead
    try:
        for rec in rows:
            category = classify(rec, registry, worker.settings.connector_actions)
            if category == "undo":
                await _undo_one(worker, rec, by, result, claimed_by)
            else:
                getattr(result, category).append(rec)
    finally:
        outbox.reporter = reporter
    if result.undone or result.failed:
        outbox.add(result.report())
        await worker.flush_reports()
    log.info("%s", result.summary())
    return result


async def _undo_one(worker: Worker, rec: Record, by: str, result: RunUndo, claimed_by: str | None) -> None:
    """One target; whatever goes wrong is recorded against it and the run goes on."""
    try:
        outcome = await worker.undo(rec.request_id, by, claimed_by=claimed_by)
    except WorkerError as exc:
        result.failed.append(replace(rec.outcome(), error=str(exc)))
        return
    except Exception as exc:   # a storage or client error on one target must not stop the others
        log.exception("run %s: undo of %s failed", result.run_id, rec.request_id)
        result.failed.append(replace(rec.outcome(), error=f"{type(exc).__name__}: {exc}"[:500]))
        return
    if outcome.state in ("confirmed", "submitted"):
        result.undone.append(outcome)
    else:
        result.failed.append(replace(rec.outcome(), error=outcome.error or outcome.detail or outcome.state,
                                     extra={**rec.outcome().extra, "undo_request": outcome.request_id}))
