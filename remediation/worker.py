"""The worker: validate -> ledger dedup -> safety rails -> action -> ledger -> report.

Two entry points share one pipeline: ``process_message`` (the queue trigger, one message) and
``process``/``process_bodies`` (CLI and demo batches). The pipeline's parts live beside it: the rails
(rails.py), claims and leases (claims.py), grouping of sibling requests (grouping.py), people's decisions
(decisions.py), verification of Defender submissions (verify.py), reports (reporting.py) and the actions
(actions/, through the registry). Idempotency, in layers:

* **Request level (the ledger).** A request id is recorded once (``Ledger.receive``); a delivery that
  finds its row past ``received`` does nothing and reports the recorded outcome. Before acting the
  worker takes an ETag-guarded claim on the row (claims.py), so two deliveries racing on one id cannot
  both act, and a crash between action and ledger write is recovered safely.
* **Transport level (the SDK's RetryHandler).** msgraph-sdk retries 429/503/504 on every method,
  POST included, honouring Retry-After, below this code. Decision: keep it (a 429 was never processed
  by the service, so replaying it is exact; a 503/504 may have been processed, and then the replay is
  the crash case: the same end state, possibly one more Action-center entry). Those replays are
  invisible to the ledger by design: ``attempts`` counts the worker's attempts, not HTTP calls. What
  the SDK gives up on reaches this worker as a transient ActionResult; the worker retries at most
  ``max_attempts`` times per delivery (Retry-After honoured, capped at ``max_delay``: a longer hint
  ends the delivery instead of sleeping through the function's time), then releases its claim, keeps
  the row ``received`` with the error, and raises ``TransientFailure`` so the host returns the
  message; the dequeue count and the poison queue bound the rest (``record_poison``).
* **Permanent errors** (400/403/404 reported by the action, schema-invalid messages) are recorded
  ``failed`` with the reason, reported, and never retried.
* **Dry run, then live.** Ids do not depend on the mode, so a dry run's ``skipped`` row carries the
  flag ``dry_run``: a delivery whose decision is still ``dry_run`` is a no-op like any duplicate, one
  that would now run reopens the row (``Ledger.reopen``) and goes through the pipeline as new. The
  row keeps the dry run in its history (docs/remediation.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

from core.request import RequestInvalid
from core.settings import Settings
from core.tenant import TenantConfig
from detections.catalog import Rule
from remediation.actions.base import ActionContext
from remediation.actions.registry import Registry, default_registry
from remediation.claims import Claimed, claim, duplicate, reopen
from remediation.decisions import Decisions, WorkerError
from remediation.execution import Execution
from remediation.grouping import claim_siblings
from remediation.ledger import IllegalTransition, Ledger, LedgerConflict, Record
from remediation.outcome import Outcome
from remediation.rails import Decision, decide
from remediation.reporting import HookReporter, OutcomeReporter, Report, ReportQueue
from remediation.verify import verify_submitted

log = logging.getLogger(__name__)


class TransientFailure(Exception):
    """Raised on the queue path so the host returns the message; the ledger already says why."""

    def __init__(self, message: str, outcomes: list[Outcome], retry_after: float | None = None):
        super().__init__(message)
        self.outcomes = outcomes
        self.retry_after = retry_after


class Worker:
    """``reporter`` hears of failures, holds and scope surprises (the app wires the Teams cards in);
    ``report_hook`` is the short form for one callable that takes every report."""

    def __init__(self, settings: Settings, tenant: TenantConfig, catalog: Mapping[str, Rule], ledger: Ledger,
                 graph: Any, exchange: Any, reporter: OutcomeReporter | None = None, *,
                 report_hook: Callable[[Report], Awaitable[None]] | None = None, max_attempts: int = 3,
                 backoff: float = 2.0, max_delay: float = 30.0, lease: timedelta = timedelta(minutes=5),
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep, group_siblings: bool = True,
                 verify_grace: timedelta = timedelta(hours=2), mailbox_slots: Any = None,
                 registry: Registry | None = None) -> None:
        self.settings, self.tenant, self.catalog, self.ledger = settings, tenant, catalog, ledger
        self.graph, self.exchange = graph, exchange
        self._ctx: ActionContext | None = None
        self.mailbox_slots = mailbox_slots   # remediation.mailbox_slots.MailboxSlots (mailbox strategy)
        if reporter is None and report_hook is not None:
            reporter = HookReporter(report_hook)
        self.outbox = ReportQueue(reporter, ledger)
        self.lease, self.group_siblings = lease, group_siblings
        self.verify_grace = verify_grace
        self.registry = registry or default_registry()
        self.contract = self.registry.contract()   # the request contract for the registry's actions
        self.decisions = Decisions(self, self.registry)
        self.execution = Execution(ledger, self.registry, self.outbox, email_strategy=settings.email_strategy,
                                   ctx=lambda: self.ctx, max_attempts=max_attempts, backoff=backoff,
                                   max_delay=max_delay, sleep=sleep)

    @property
    def reports(self) -> list[Report]:
        """Everything reported, for the CLI and demo summaries."""
        return self.outbox.all

    @property
    def ctx(self) -> ActionContext:
        """The actions' context, built on first use."""
        if self._ctx is None:
            self._ctx = ActionContext(settings=self.settings, tenant=self.tenant, graph=self.graph,
                                      exchange=self.exchange, mailbox_slots=self.mailbox_slots)
        return self._ctx

    # --- entry points ---------------------------------------------------------------------------------

    async def process_message(self, body: str | bytes, dequeue_count: int = 1) -> list[Outcome]:
        """Queue path: one message. Raises TransientFailure to have the host retry it."""
        try:
            request = self.contract.parse(body)
        except RequestInvalid as exc:
            # Schema-invalid is permanent: recorded, reported, and the message is consumed.
            outcome = await self._invalid(body, str(exc), dequeue_count)
            await self.outbox.flush()
            return [outcome]
        raw = body if isinstance(body, bytes) else body.encode("utf-8")
        owner = "msg-" + hashlib.sha256(raw).hexdigest()[:24]
        outcomes, leftover, retry_after = await self._pipeline([request], owner=owner, queue=True,
                                                               redelivery=dequeue_count > 1)
        await self.outbox.flush()
        if leftover:
            raise TransientFailure(f"request {request['id']}: {leftover}", outcomes, retry_after)
        return outcomes

    async def process_bodies(self, bodies: Iterable[str | bytes]) -> list[Outcome]:
        """CLI/demo path over raw message bodies: each parsed exactly as the queue path does."""
        outcomes: list[Outcome] = []
        valid: list[dict[str, Any]] = []
        for body in bodies:
            try:
                valid.append(self.contract.parse(body))
            except RequestInvalid as exc:
                outcomes.append(await self._invalid(body, str(exc), 1))
        outcomes += await self.process(valid)
        return outcomes

    async def process(self, requests: list[dict[str, Any]]) -> list[Outcome]:
        """Batch path: requests grouped per action so the Defender strategy makes few calls.

        Transient failures that persist are left ``received`` (with the error) and reported; nothing
        is raised, the next run of the same batch picks them up.
        """
        valid: list[dict[str, Any]] = []
        invalid: list[Outcome] = []
        for req in requests:
            try:
                valid.append(self.contract.validate(req))
            except RequestInvalid as exc:
                invalid.append(await self._invalid(_dump_invalid(req), str(exc), 1))
        outcomes, _, _ = await self._pipeline(valid, owner="batch-" + uuid.uuid4().hex[:12], queue=False,
                                              redelivery=False)
        await self.outbox.flush()
        return invalid + outcomes

    def register(self, requests: Iterable[Mapping[str, Any]]) -> int:
        """Record a run's requests as ``received`` before they are enqueued (enables grouping).
        Returns how many were new; existing rows are untouched."""
        return sum(self.ledger.receive(dict(self.contract.validate(dict(r))))[1] for r in requests)

    async def record_poison(self, body: str | bytes, dequeue_count: int) -> Outcome:
        """For the poison-queue function: the message failed every delivery; record it as failed."""
        try:
            request = self.contract.parse(body)
        except RequestInvalid as exc:
            outcome = await self._invalid(body, str(exc), dequeue_count)
            self.reports[-1] = Report("poison", f"poison message: {exc}", [outcome])
            await self.outbox.flush()
            return outcome
        rec, _ = self.ledger.receive(request)
        reason = (f"the message failed {dequeue_count} deliveries and went to the poison queue"
                  + (f"; last error: {rec.error}" if rec.error else ""))
        if rec.state in ("received", "approved"):
            try:
                rec = self.ledger.transition(rec, "failed", error=reason,
                                             detail="gave up after repeated transient errors",
                                             dequeue_count=dequeue_count)
            except (LedgerConflict, IllegalTransition):
                rec = self.ledger.read(rec.rule, rec.request_id) or rec
        outcome = rec.outcome()
        self.outbox.add(Report("poison", reason, [outcome], [request]))
        await self.outbox.flush()
        return outcome

    # --- the pipeline ---------------------------------------------------------------------------------

    async def _pipeline(self, requests: list[dict[str, Any]], *, owner: str, queue: bool,
                        redelivery: bool) -> tuple[list[Outcome], str | None, float | None]:
        outcomes: dict[str, Outcome] = {}
        to_run: list[Claimed] = []
        busy: list[str] = []
        for req in requests:
            rec, created = self.ledger.receive(req)
            decision: Decision | None = None
            if not created and rec.dry_run_skip:
                # Settled by a dry run only. The same dry-run delivery again is a no-op; a request
                # that would now run (rule or RESPONDER_DRY_RUN gone live) reopens the row.
                decision = decide(req, settings=self.settings, tenant=self.tenant, catalog=self.catalog,
                                  registry=self.registry)
                if decision.kind != "dry_run":
                    rec = reopen(self.ledger, rec, req)
            if not created and rec.state != "received":
                outcomes[req["id"]] = duplicate(rec)
                continue
            ours = redelivery and rec.claim_token == owner
            if rec.claimed(self.ledger.clock()) and not ours:
                # Someone is executing it right now: neither act nor settle it under their feet.
                outcomes[req["id"]] = replace(rec.outcome(), detail="being executed by another delivery")
                busy.append(req["id"])
                continue
            if decision is None:
                decision = decide(req, settings=self.settings, tenant=self.tenant, catalog=self.catalog,
                                  registry=self.registry)
            if decision.kind != "execute":
                outcomes[req["id"]] = self.execution.settle(rec, req, decision)
                continue
            claimed = claim(self.ledger, rec, owner, lease=self.lease, take_over=redelivery)
            if claimed is None:
                fresh = self.ledger.read(rec.rule, rec.request_id) or rec
                if fresh.state != "received":
                    outcomes[req["id"]] = duplicate(fresh)
                else:
                    outcomes[req["id"]] = replace(fresh.outcome(),
                                                  detail="being executed by another delivery")
                    busy.append(req["id"])
                continue
            to_run.append(Claimed(req, claimed))
        if queue and to_run and self.group_siblings:
            to_run += claim_siblings(to_run, owner, ledger=self.ledger, settings=self.settings,
                                     tenant=self.tenant, catalog=self.catalog, lease=self.lease,
                                     registry=self.registry)
        leftover: list[str] = []
        retry_after: float | None = None
        by_action: dict[str, list[Claimed]] = {}
        for item in to_run:
            by_action.setdefault(item.request["action"], []).append(item)
        for action, items in by_action.items():
            done, pending, hint = await self.execution.run(action, items)
            outcomes.update(done)
            leftover += pending
            retry_after = max(filter(None, (retry_after, hint)), default=None)
        ordered = [outcomes[r["id"]] for r in requests]
        ordered += [o for rid, o in outcomes.items() if rid not in {r["id"] for r in requests}]
        problem = None
        if leftover:
            problem = f"transient failure persisted for {len(leftover)} request(s)"
        elif busy and queue:
            # Another delivery holds the claim: hand the message back rather than drop it, in case
            # that delivery dies; the retry finds the request settled and does nothing.
            problem = "being executed by another delivery"
        return ordered, problem, retry_after

    async def _invalid(self, body: str | bytes, reason: str, dequeue_count: int) -> Outcome:
        rec = self.ledger.record_invalid(body, reason, dequeue_count=dequeue_count)
        outcome = rec.outcome()
        self.outbox.add(Report("failed", f"invalid remediation message: {reason}", [outcome]))
        return outcome

    # --- people: approve, reject, undo (remediation/decisions.py) -----------------------------------------

    async def approve(self, request_id: str, by: str, *, claimed_by: str | None = None,
                      done: bool = False) -> Outcome:
        return await self.decisions.approve(request_id, by, claimed_by=claimed_by, done=done)

    async def reject(self, request_id: str, by: str, *, claimed_by: str | None = None) -> Outcome:
        return await self.decisions.reject(request_id, by, claimed_by=claimed_by)

    async def undo(self, request_id: str, by: str = "") -> Outcome:
        return await self.decisions.undo(request_id, by)

    async def run_decided(self, rec: Record, req: dict[str, Any], decision: Decision) -> Outcome:
        """One request a person decided on: settled, or claimed and run through the action."""
        if decision.kind != "execute":
            return self.execution.settle(rec, req, decision)
        owner = "person-" + uuid.uuid4().hex[:12]
        claimed = claim(self.ledger, rec, owner, lease=self.lease, take_over=False)
        if claimed is None:
            raise WorkerError(f"request {rec.request_id} is being executed by another delivery")
        done, _, _ = await self.execution.run(req["action"], [Claimed(req, claimed)])
        await self.outbox.flush()
        return done[req["id"]]

    # --- verification of Defender submissions (remediation/verify.py) ---------------------------------------

    async def verify(self, backend: Any) -> list[Outcome]:
        """Confirm ``submitted`` email requests from EmailEvents."""
        outcomes = await verify_submitted(self.ledger, backend, grace=self.verify_grace,
                                          report=self.outbox.add)
        await self.outbox.flush()
        return outcomes



def _dump_invalid(req: Any) -> str:
    """An invalid request as text for its ledger row; one that cannot be serialised (too deep, lone
    surrogates, cycles) is named rather than raising, so the row is still written."""
    try:
        return json.dumps(req, sort_keys=True, default=str)
    except (RecursionError, ValueError, TypeError) as exc:
        return json.dumps({"unserialisable": type(exc).__name__, "type": type(req).__name__})
