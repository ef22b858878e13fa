"""What the card builders take as input: plain dataclasses that the function app, worker and demo fill.

Nothing here talks to Teams or Graph. Three reports, one per card kind:

- ``RunReport``: one rule run (the scan card, and the held part of it becomes the approval card).
- ``FailureReport``: something broke: a poison message, a backend error, quota exhaustion, a failed
  action, an undeliverable card.
- ``DigestReport``: ledger counts per rule and state over a period (the daily digest card).

Ledger states (remediation/outcome.py) are grouped into the buckets on-call reads on a card; the
grouping is ``STATE_BUCKETS`` and a request without an outcome yet counts as ``queued``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from remediation.outcome import Outcome

BUCKETS = ("done", "submitted", "held", "skipped", "failed", "queued")
BUCKET_LABELS = {
    "done": "Done",
    "submitted": "Submitted / in progress",
    "held": "Held for approval",
    "skipped": "Skipped",
    "failed": "Failed",
    "queued": "Queued",
}
# Ledger state -> card bucket. "approved" and "received" are on their way (the worker has them);
# "not_applied" means Defender accepted a submission that never took effect, which on-call must
# treat as a failure; "rejected" is a person's decision not to act, so it sits with skipped, and so
# does "expired" (nobody decided in time: nothing was done).
STATE_BUCKETS: dict[str, str] = {
    "confirmed": "done",
    "submitted": "submitted",
    "approved": "submitted",
    "received": "submitted",
    "held": "held",
    "skipped": "skipped",
    "rejected": "skipped",
    "expired": "skipped",
    "failed": "failed",
    "not_applied": "failed",
}


def bucket_of(state: str | None) -> str:
    """The card bucket of a ledger state; ``None`` (no outcome yet) is ``queued``."""
    if state is None:
        return "queued"
    return STATE_BUCKETS.get(state, "submitted")


class RuleRunLike(Protocol):
    """The parts of ``detections.scan.RuleRun`` that ``RunReport.from_rule_run`` reads."""

    rule: Any            # detections.catalog.Rule: slug, name, severity
    rows: Sequence[Any]
    requests: list[dict[str, Any]]
    partial: bool
    error: str | None
    run_id: str


@dataclass
class RunReport:
    """One run of one rule: what the query found and what became of each request.

    ``requests`` are remediation-request/1 dicts exactly as queued. ``outcomes`` are what the worker
    made of them, when known: a report built right after the scan (timer path) has none and every
    request counts as queued; a report built after processing (CLI, demo) has one per request.
    Outcomes are matched to requests by ``request_id``.
    """

    rule: str                                   # slug: the rule file name without .yaml
    rule_name: str
    severity: str                               # Informational | Low | Medium | High
    rows: int                                   # result rows the query returned
    requests: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    run_id: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None                    # the query failed: no rows, no requests
    partial: bool = False                       # the backend returned a partial result
    partial_reason: str | None = None
    backend: str | None = None                  # defender | sentinel | local
    dry_run: bool = False                       # the whole run was a dry run
    tenant_id: str | None = None                # adds ?tid= to portal links (multi-tenant admins)
    # For held requests: the function app's URL (approve over HTTP) and, per request id, the exact
    # command on-call may run instead (connectors). The app's outcome card is the approval message.
    api_base: str | None = None
    commands: dict[str, str] = field(default_factory=dict)
    # Ids the app cannot run (connectors under RESPONDER_CONNECTOR_ACTIONS=manual): run by hand, then
    # marked done; the card shows that instead of approve commands.
    by_hand: set[str] = field(default_factory=set)
    # The emergency stop's line when it is on (remediation/stop.py StopState.describe()), else None.
    emergency_stop: str | None = None

    @classmethod
    def from_rule_run(cls, run: RuleRunLike, *, outcomes: Iterable[Outcome] = (),
                      started_at: datetime | None = None, finished_at: datetime | None = None,
                      partial_reason: str | None = None, backend: str | None = None,
                      dry_run: bool = False, tenant_id: str | None = None) -> RunReport:
        """Build from a ``detections.scan.RuleRun`` (duck-typed so this module imports no scanner)."""
        return cls(
            rule=run.rule.slug, rule_name=run.rule.name, severity=run.rule.severity,
            rows=len(run.rows), requests=list(run.requests), outcomes=list(outcomes),
            run_id=run.run_id, started_at=started_at, finished_at=finished_at, error=run.error,
            partial=run.partial, partial_reason=partial_reason, backend=backend, dry_run=dry_run,
            tenant_id=tenant_id,
        )

    def outcome_for(self, request_id: str) -> Outcome | None:
        return self._outcomes_by_id().get(request_id)

    def _outcomes_by_id(self) -> dict[str, Outcome]:
        return {o.request_id: o for o in self.outcomes}

    def bucket_counts(self) -> dict[str, int]:
        """Requests per bucket (every bucket present, zeros included)."""
        by_id = self._outcomes_by_id()
        counts = Counter(bucket_of(by_id[r["id"]].state if r["id"] in by_id else None)
                         for r in self.requests)
        # Outcomes whose request is not in the list (e.g. a report built from ledger rows only).
        known = {r["id"] for r in self.requests}
        counts.update(bucket_of(o.state) for o in self.outcomes if o.request_id not in known)
        return {b: counts.get(b, 0) for b in BUCKETS}

    def held(self) -> list[dict[str, Any]]:
        """Requests that wait for a person: held by the worker, or approval-mode ones not processed yet."""
        by_id = self._outcomes_by_id()
        out = []
        for r in self.requests:
            o = by_id.get(r["id"])
            if (o is not None and o.state == "held") or (o is None and r.get("mode") == "approval"):
                out.append(r)
        return out


# poison: a queue message the host gave up on; backend: a query failed; quota: hunting quota used up;
# action: a remediation failed for good; config: something is set up wrong (scope, roles, settings).
FailureKind = Literal["poison", "backend", "quota", "action", "config", "other"]


@dataclass
class FailureReport:
    """Something failed and on-call should know: what, why, and what happens next.

    ``reason`` is shown verbatim (clipped): callers must not put secrets in it. ``next_step`` may be
    left empty; the card then says what this product does next for that kind of failure.
    """

    kind: FailureKind
    summary: str                                # what failed, one line
    reason: str                                 # the error as reported
    next_step: str | None = None
    rule: str | None = None
    rule_name: str | None = None
    run_id: str | None = None
    request_id: str | None = None
    request: dict[str, Any] | None = None       # the (parsed) request, e.g. the poison message
    attempts: int | None = None                 # dequeue count / delivery attempts
    retry_after: float | None = None            # seconds, for quota exhaustion
    occurred_at: datetime | None = None
    details: dict[str, str] = field(default_factory=dict)  # extra facts shown as-is
    tenant_id: str | None = None


@dataclass
class DigestReport:
    """Ledger counts per rule and state over a period (usually the last 24 hours).

    ``counts`` maps rule slug -> ledger state -> number of requests. ``runs`` and ``run_errors``
    are optional per-rule run counts; ``oldest_held`` is when the oldest still-held request was
    detected, so the card can say how long approvals have been waiting.
    """

    period_start: datetime
    period_end: datetime
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    rule_names: dict[str, str] = field(default_factory=dict)
    severities: dict[str, str] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    run_errors: dict[str, int] = field(default_factory=dict)
    oldest_held: datetime | None = None
    tenant_id: str | None = None

    @classmethod
    def from_states(cls, items: Iterable[tuple[str, str]], *, period_start: datetime,
                    period_end: datetime, **kwargs: Any) -> DigestReport:
        """Tally ``(rule slug, ledger state)`` pairs, e.g. one per ledger row in the period."""
        counts: dict[str, Counter[str]] = {}
        for rule, state in items:
            counts.setdefault(rule, Counter())[state] += 1
        return cls(period_start=period_start, period_end=period_end,
                   counts={r: dict(c) for r, c in counts.items()}, **kwargs)

    def bucket_counts(self, rule: str) -> dict[str, int]:
        per = Counter[str]()
        for state, n in self.counts.get(rule, {}).items():
            per[bucket_of(state)] += n
        return {b: per.get(b, 0) for b in BUCKETS}
