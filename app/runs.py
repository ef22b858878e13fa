"""From a rule run to queue messages and Teams cards, without duplicate work.

**Dedup against the ledger.** Runs overlap (a 1-hour window scanned every 5 minutes), so most of a
run's findings were seen before. For each request of a run:

* no ledger row: new. It is renumbered into this run (``run.index``, per action as in
  ``detections.findings``, and ``run.total`` count only the new requests, so the per-run cap and the
  run card speak about this run's work), recorded ``received``, and queued;
* a row past ``received`` (held, submitted, confirmed, skipped, failed, ...): settled, not queued;
  except a row settled only by a dry run (``skipped`` with ``dry_run``) when this run's request is
  live: it is reopened (``Ledger.reopen``), renumbered into this run like a new one, and queued;
* a row still ``received``: its message is normally still in the queue (or being retried), so it is
  left alone, unless the row has not changed for ``REQUEUE_AFTER`` and nobody holds a claim on it.
  Then its message was lost (the function failed after recording it and before the host wrote the
  output binding) and the stored request is queued again. A duplicate message is harmless: the
  worker finds the row settled or claimed.

**One card per rule run, two moments.** The worker handles one message at a time, so no single
invocation sees a whole run. The timer (or ``POST /api/scan``) sends the scan card as soon as the
run is queued ("found N, queued N": on-call hears within seconds of detection), and the worker
invocation that leaves the run's last request settled sends the outcome card: the same scan card
with every request's outcome. "Last" is judged from a per-run counter in the ledger: the delivery that
leaves its request past ``received``/``approved`` counts it, once (duplicates count nothing), and the one
that brings the count to ``run.total`` reads the run and sends the card, so each message costs O(1)
ledger calls however large the run (remediation/run_counters.py). An at-most-once ledger marker per
run keeps two workers finishing together from both sending it. A row a later live run reopened counts
for the earlier (dry) run as its dry-run outcome (``dry_run_run_id``), so that run's card still fires.
When every request of the run is held, the outcome card is the approval card (one message with every
id and how to approve it), and no scan card goes out first for a run in which every request waits for
a person. A run that found nothing new sends no
card (a 5-minute rule would otherwise repeat the same findings twelve times an hour); a run that
failed or returned a partial result sends one card per rule per hour at most.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from app import telemetry
from core.request import RequestInvalid, parse_message
from detections.findings import action_indices
from detections.scan import RuleRun
from notifications.cards import approval_card, failure_card, scan_card
from notifications.reports import FailureReport, RunReport
from remediation.actions.registry import default_registry
from remediation.ledger import IllegalTransition, Ledger, LedgerConflict, Record
from remediation.rails import CONNECTOR_ACTIONS
from remediation.run_counters import IN_FLIGHT, count_once, settled_for_run
from remediation.stop import read_stop

log = logging.getLogger(__name__)

REQUEUE_AFTER = timedelta(minutes=30)
# IN_FLIGHT (received, approved): the worker still has work of its own on the request (not yet settled).


@dataclass
class Queued:
    """What became of one rule run's requests."""

    rule: str
    rows: int
    found: int
    new: list[dict[str, Any]] = field(default_factory=list)
    requeued: list[dict[str, Any]] = field(default_factory=list)
    settled: int = 0
    in_flight: int = 0

    @property
    def messages(self) -> list[str]:
        return [json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in (*self.new, *self.requeued)]


def _stale(updated_at: str, claim_until: str | None, now: datetime) -> bool:
    if claim_until and datetime.fromisoformat(claim_until.replace("Z", "+00:00")) > now:
        return False
    if not updated_at:
        return True
    return now - datetime.fromisoformat(updated_at.replace("Z", "+00:00")) >= REQUEUE_AFTER


def register_run(ledger: Ledger, run: RuleRun, now: datetime) -> Queued:
    """Record a run's new requests as received and return what to queue (module doc)."""
    out = Queued(rule=run.rule.slug, rows=len(run.rows), found=len(run.requests))
    fresh: list[tuple[dict[str, Any], Record | None]] = []
    for req in run.requests:
        rec = ledger.read(req["rule"], req["id"])
        if rec is None:
            fresh.append((req, None))
        elif rec.dry_run_skip and req["mode"] != "dry_run":
            # Seen before only in dry run, and this run is live: the finding is new work for this
            # run. (The scan already folded RESPONDER_DRY_RUN and the rule/tenant mode into the
            # request's mode, exactly as the worker's rails will.)
            fresh.append((req, rec))
        elif rec.state not in IN_FLIGHT:
            out.settled += 1
        elif rec.state == "received" and rec.request and _stale(rec.updated_at, rec.claim_until, now):
            out.requeued.append(rec.request)
        else:
            out.in_flight += 1
    for index, (req, old) in zip(action_indices([r for r, _ in fresh]), fresh, strict=True):
        numbered = {**req, "run": {**req.get("run", {}), "id": run.run_id, "index": index,
                                   "total": len(fresh), "rows": len(run.rows)}}
        if old is None:
            rec, created = ledger.receive(numbered)
        else:
            try:
                rec, created = ledger.reopen(old, numbered), True
            except (LedgerConflict, IllegalTransition):
                rec, created = ledger.read(old.rule, old.request_id) or old, False
        if created:
            out.new.append(numbered)
        elif rec.state == "received":
            # Another scan recorded it between our read and write; its own message carries it.
            out.in_flight += 1
        else:
            out.settled += 1
    if len(out.new) != len(fresh):
        # Keep run.total truthful for the outcome card: rows lost to a race are not in this run.
        _renumber(ledger, out.new)
    return out


def _renumber(ledger: Ledger, requests: list[dict[str, Any]]) -> None:
    for index, req in zip(action_indices(requests), requests, strict=True):
        req["run"] = {**req["run"], "index": index, "total": len(requests)}
        rec = ledger.read(req["rule"], req["id"])
        if rec is not None and rec.state == "received":
            ledger.update(rec, request=req)


async def send(notifier: Any, build: Callable[[], dict[str, Any]], what: str) -> bool:
    """Build and send one card. Building is inside the guard too: a card that cannot be built (too
    large even when trimmed, a bug) must not fail the function, which would lose its queue output."""
    try:
        delivered = bool(await notifier.send(build()))
    except Exception:   # a notifier must never break detection or remediation
        log.exception("%s card: not built or not sent", what)
        telemetry.notify_failed(what)
        return False
    if not delivered:
        log.warning("%s card was not delivered", what)
        telemetry.notify_failed(what)
    return delivered


def _hour_key(prefix: str, slug: str, now: datetime) -> str:
    return f"{prefix}:{slug}:{now:%Y%m%d%H}"


async def run_card(ledger: Ledger, notifier: Any, run: RuleRun, queued: Queued, *, now: datetime,
                   backend: str, tenant_id: str | None, dry_run: bool = False,
                   connector_actions: str = "manual") -> str | None:
    """Send this run's first card if it has something to say; returns which card was sent."""
    trouble = run.error or run.partial
    if not queued.new and not trouble:
        return None
    if queued.new and not trouble and all(waits_for_person(r, connector_actions) for r in queued.new):
        # Nothing in this run happens without a person, so there is nothing to report "in progress":
        # the run's outcome card, seconds later, is the approval card with every id (one message).
        return None
    if not queued.new and not ledger.claim_once(_hour_key("run-trouble", run.rule.slug, now)):
        return None   # the same failure was reported this hour already
    if run.error and run.transient and not queued.new:
        error = run.error
        # The hunting API answers 429 for both of its limits (calls per minute, CPU per 15 minutes).
        quota = "HTTP 429" in error or "quota" in error.lower()
        what = "the hunting quota is used up" if quota else "the query could not run"
        report = FailureReport(
            kind="quota" if quota else "backend", summary=f"{run.rule.name}: {what}",
            reason=error, rule=run.rule.slug, rule_name=run.rule.name, run_id=run.run_id, occurred_at=now,
            retry_after=getattr(run, "retry_after", None), tenant_id=tenant_id)
        await send(notifier, lambda: failure_card(report), f"{run.rule.slug} failure")
        return "failure"
    scan = RunReport.from_rule_run(run, started_at=now, backend=backend, dry_run=dry_run,
                                   partial_reason=run.partial_reason, tenant_id=tenant_id)
    scan.requests = list(queued.new)
    scan.emergency_stop = stop_line(ledger)
    await send(notifier, lambda: scan_card(scan), f"{run.rule.slug} scan")
    return "scan"


def _registered_at(rows: list[Record]) -> datetime | None:
    """When the run's first request was recorded (the card's start); None if no row says."""
    times = []
    for r in rows:
        try:
            times.append(datetime.fromisoformat(str(r.created_at).replace("Z", "+00:00")))
        except ValueError:
            continue   # a row's timestamps are table data: one unreadable one costs only this fact
    return min(times, default=None)


def stop_line(ledger: Ledger) -> str | None:
    """The emergency stop's line for a card when it is on (one point read per card), else None; a card
    is never lost over it."""
    try:
        state = read_stop(ledger)
    except Exception:
        log.warning("emergency stop unreadable for a card", exc_info=True)
        return None
    return state.describe() if state.on else None


def waits_for_person(request: dict[str, Any], connector_actions: str) -> bool:
    """The worker's rails will hold this request for a person (its mode; connectors unless
    RESPONDER_CONNECTOR_ACTIONS is auto)."""
    return request.get("mode") == "approval" or (request.get("action") in CONNECTOR_ACTIONS
                                                  and connector_actions != "auto"
                                                  and request.get("mode") != "dry_run")


async def outcome_card(ledger: Ledger, notifier: Any, body: str | bytes, *, backend: str | None,
                       tenant_id: str | None, rule_names: dict[str, tuple[str, str]],
                       api_base: str | None = None, connector_actions: str = "manual") -> bool:
    """After a message is handled: if its run is now settled, send the run's outcome card (once)."""
    try:
        request = parse_message(body)
    except RequestInvalid:
        return False   # recorded as invalid by the worker, which told on-call
    run = request.get("run") or {}
    run_id, total = run.get("id"), run.get("total")
    if not run_id or not isinstance(total, int) or total < 1:
        return False
    # O(1) per message (issue 13): count this message's request once when it is settled for the run;
    # only the message that brings the count to run.total reads the whole run (remediation/run_counters.py).
    rec = ledger.read(request["rule"], request["id"])
    if rec is None or not settled_for_run(rec, run_id):
        return False   # still in flight: the delivery that settles it counts it
    count, _ = count_once(ledger, request["rule"], run_id, request["id"])
    if count < total:
        return False
    key = f"run-outcome:{request['rule']}:{run_id}"
    if not ledger.claim_once(key):
        return False   # sent (or being sent) by another delivery; a duplicate reads nothing more
    rows = ledger.list(rule=request["rule"], run_id=run_id)
    outcomes = [r.outcome() for r in rows]
    if len(rows) < total:
        # Rows this run settled as a dry run and a later live run has since reopened (and re-tagged
        # with its own run id): for this run they are done, with their dry-run outcome.
        for moved in ledger.list(rule=request["rule"], dry_run_run_id=run_id):
            if moved.run_id != run_id:
                rows.append(moved)
                outcomes.append(replace(moved.outcome(), state="skipped", error=None,
                                        detail=str(moved.extra.get("dry_run_detail") or "dry run"),
                                        extra={"dry_run": True}))
    if len(rows) < total:
        # Counted as many as the run holds but fewer rows found: not the run this card would describe.
        log.warning("run %s of %s: %d settled of %d, %d rows found; no outcome card", run_id, request["rule"],
                    count, total, len(rows))
        ledger.forget_once(key)
        return False
    # Every request was settled once; one approved meanwhile by a person shows as in progress.
    name, severity = rule_names.get(request["rule"], (request.get("rule_name") or request["rule"],
                                                      request.get("severity") or "Medium"))
    requests = [r.request for r in rows if r.request]
    registry = default_registry()
    commands = {r["id"]: c for r in requests if (c := registry.manual_command(r))}
    by_hand = {r["id"] for r in requests if registry.run_by_hand(r.get("action"), connector_actions)}
    report = RunReport(rule=request["rule"], rule_name=name, severity=severity,
                       rows=int(run.get("rows") or total), requests=requests,
                       outcomes=outcomes, run_id=run_id, backend=backend,
                       tenant_id=tenant_id, api_base=api_base, commands=commands, by_hand=by_hand,
                       emergency_stop=stop_line(ledger), started_at=_registered_at(rows),
                       finished_at=ledger.clock())
    # One message per run (docs/function-app.md): when every request waits for a person, the outcome
    # card is the approval card (evidence, exact command, approve/reject for each id); otherwise the
    # scan card, whose held section carries the same approve commands. The worker sends no approval
    # card of its own for requests of a run (app/runtime.py).
    if outcomes and all(o.state == "held" for o in outcomes):
        def build() -> dict[str, Any]:
            return approval_card(requests, outcomes=outcomes, commands=commands, api_base=api_base,
                                 tenant_id=tenant_id, by_hand=by_hand, emergency_stop=report.emergency_stop)
    else:
        def build() -> dict[str, Any]:
            return scan_card(report)
    if not await send(notifier, build, f"{request['rule']} outcome"):
        ledger.forget_once(key)   # let a later delivery of this run try again
        return False
    return True
