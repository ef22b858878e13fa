"""The worker: validate -> ledger dedup -> safety rails -> action -> ledger -> report.

Two entry points share one pipeline: ``process_message`` (the queue trigger, one message) and
``process``/``process_bodies`` (CLI and demo batches). The pipeline's parts live beside it: the rails
(rails.py), claims and leases (claims.py), grouping of sibling requests (grouping.py), people's decisions
(decisions.py), verification of Defender submissions (verify.py), reports (reporting.py) and the actions
(actions/, through the registry). Idempotency, in layers:

* **Request level (the ledger).** A request id is recorded once (``Ledger.receive``); a delivery that
  finds its row past ``received`` does nothing and reports the recorded outcome. Before acting, each
  delivery claims the row under its own owner (a random id, never derived from the message) and only
  when no live claim exists (claims.py): of two deliveries at once, whatever their dequeue counts, one
  acts and the other hands its message back (``extra["in_flight"]``). Its claims last as long as its
  work: a deadline of ``budget`` (half the lease by default) bounds every action call and retry sleep
  (deadline.py). Before each action call the row gets a write-ahead intent, and a row that had one is
  passed to the action as a prior attempt, which checks the service before acting again (intent.py).
* **Transport level (the SDK's RetryHandler).** msgraph-sdk retries 429/503/504 on every method, below
  this code and invisibly to it. It is kept for reads, and switched off per request for every
  state-changing call (the Defender remediate POST, revoke, disable/enable, confirmCompromised): a
  503/504 there may have been processed, so the worker's own retry, which checks the service first
  (``prior_attempts``), does it instead. ``attempts`` counts the worker's attempts, not HTTP calls,
  and every wait counts against the delivery's deadline. What the SDK gives up on reaches
  this worker as a transient ActionResult; the worker retries at most ``max_attempts`` times per
  delivery (Retry-After honoured, capped at ``max_delay`` and by the deadline: a longer wait ends the
  delivery instead of sleeping), then releases its claim, keeps the row ``received`` with the error,
  and raises ``TransientFailure`` so the host returns the message; the dequeue count and the poison
  queue bound the rest (``record_poison``, which never fails a row under a live claim).
* **Storage errors** (the ledger's) stay with their request: its outcome says "not recorded: storage
  error" (``extra["storage_error"]``), the rest of a batch goes on, and on the queue path the message
  is handed back. A result write is retried a few times first (intent.py).
* **Permanent errors** (400/403/404 reported by the action, schema-invalid messages) are recorded
  ``failed`` with the reason, reported, and never retried.
* **Dry run, then live.** Ids do not depend on the mode, so a dry run's ``skipped`` row carries the
  flag ``dry_run``: a delivery whose decision is still ``dry_run`` is a no-op like any duplicate, one
  that would now run reopens the row (``Ledger.reopen``) and goes through the pipeline as new. The
  row keeps the dry run in its history (docs/remediation.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from functools import partial
from typing import Any

from core.request import RequestInvalid
from core.settings import Settings
from core.tenant import TenantConfig
from detections.catalog import Rule
from remediation.actions.base import ActionContext
from remediation.actions.registry import Registry, default_registry
from remediation.admission import Rails, admit, claim_row
from remediation.claims import Claimed, claim, in_flight, new_owner, storage_failure
from remediation.decisions import Decisions, WorkerError
from remediation.execution import Execution
from remediation.grouping import claim_siblings
from remediation.intent import StorageError, describe
from remediation.ledger import Ledger, Record
from remediation.outcome import Outcome
from remediation.poison import mark_failed, reason_for
from remediation.rails import Decision
from remediation.reporting import HookReporter, OutcomeReporter, Report, ReportQueue
from remediation.resubmit import UNCONFIRMED_GRACE, resubmit
from remediation.stop import StopSwitch
from remediation.undo_run import RunUndo, undo_run
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
                 registry: Registry | None = None, budget: timedelta | None = None,
                 monotonic: Callable[[], float] = time.monotonic, poison_retries: int = 5,
                 unconfirmed_grace: timedelta = UNCONFIRMED_GRACE, stop: StopSwitch | None = None) -> None:
        self.settings, self.tenant, self.catalog, self.ledger = settings, tenant, catalog, ledger
        self.graph, self.exchange = graph, exchange
        self._ctx: ActionContext | None = None
        self.mailbox_slots = mailbox_slots   # remediation.mailbox_slots.MailboxSlots (mailbox strategy)
        if reporter is None and report_hook is not None:
            reporter = HookReporter(report_hook)
        self.outbox = ReportQueue(reporter, ledger)
        self.lease, self.group_siblings = lease, group_siblings
        # A delivery's time under its claims: half the lease unless told (remediation/deadline.py).
        self.budget = budget if budget is not None else lease / 2
        if self.budget >= lease:
            raise ValueError("the delivery budget must be shorter than the claim's lease")
        # host.json's maxDequeueCount: how often the poison handler may hand a message back.
        self.poison_retries = poison_retries
        self.verify_grace, self.unconfirmed_grace = verify_grace, unconfirmed_grace   # resubmit.py
        self.registry = registry or default_registry()
        # The emergency stop, read at most every 10 s (remediation/stop.py); the app shares one per instance.
        self.stop = stop or StopSwitch(ledger)
        self.contract = self.registry.contract()   # the request contract for the registry's actions
        self.decisions = Decisions(self, self.registry)
        self.execution = Execution(ledger, self.registry, self.outbox, email_strategy=settings.email_strategy,
                                   ctx=lambda: self.ctx, max_attempts=max_attempts, backoff=backoff,
                                   max_delay=max_delay, sleep=sleep,
                                   budget=self.budget.total_seconds(), monotonic=monotonic)

    @property
    def reports(self) -> list[Report]:
        """Everything reported, for the CLI and demo summaries."""
        return self.outbox.all

    @property
    def rails(self) -> Rails:
        """What the rails decide with (read each time: settings, tenant and catalog may be replaced)."""
        return Rails(self.settings, self.tenant, self.catalog, self.registry, self.stop.current)

    @property
    def ctx(self) -> ActionContext:
        """The actions' context, built on first use."""
        if self._ctx is None:
            self._ctx = ActionContext(settings=self.settings, tenant=self.tenant, graph=self.graph,
                                      exchange=self.exchange, mailbox_slots=self.mailbox_slots)
        return self._ctx

    # --- entry points ---------------------------------------------------------------------------------

    async def process_message(self, body: str | bytes, dequeue_count: int = 1) -> list[Outcome]:
        """Queue path: one message, one delivery (its own claim owner). Raises TransientFailure to have
        the host hand the message back: transient errors, a live claim elsewhere, storage errors."""
        try:
            request = self.contract.parse(body)
        except RequestInvalid as exc:
            # Schema-invalid is permanent: recorded, reported, and the message is consumed.
            outcome = await self._invalid(body, str(exc), dequeue_count)
            if outcome.extra.get("storage_error"):
                raise TransientFailure(f"invalid message {outcome.detail}", [outcome]) from None
            await self._flush()
            return [outcome]
        outcomes, problem, retry_after = await self._pipeline([request], owner=new_owner(), queue=True)
        await self._flush()
        if problem:
            raise TransientFailure(f"request {request['id']}: {problem}", outcomes, retry_after)
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

        Nothing is raised: transient failures that persist are left ``received`` (with the error) and
        reported, requests another delivery is executing are marked ``extra["in_flight"]``, and a storage
        error on one request marks it ``extra["storage_error"]`` while the others go on; the next run of
        the same batch picks them up.
        """
        valid: list[dict[str, Any]] = []
        invalid: list[Outcome] = []
        for req in requests:
            try:
                valid.append(self.contract.validate(req))
            except RequestInvalid as exc:
                invalid.append(await self._invalid(_dump_invalid(req), str(exc), 1))
        outcomes, _, _ = await self._pipeline(valid, owner=new_owner("batch"), queue=False)
        await self._flush()
        return invalid + outcomes

    def register(self, requests: Iterable[Mapping[str, Any]]) -> int:
        """Record a run's requests as ``received`` before they are enqueued (enables grouping).
        Returns how many were new; existing rows are untouched."""
        return sum(self.ledger.receive(dict(self.contract.validate(dict(r))))[1] for r in requests)

    async def record_poison(self, body: str | bytes, dequeue_count: int) -> Outcome:
        """For the poison-queue function: the message failed every delivery; record it as failed, unless
        a delivery holds a live claim on it: then TransientFailure (the host retries the poison message
        later, at most ``poison_retries`` times) and, on the last try, the row is left to that delivery."""
        try:
            request = self.contract.parse(body)
        except RequestInvalid as exc:
            outcome = await self._invalid(body, str(exc), dequeue_count)
            if outcome.extra.get("storage_error"):
                raise TransientFailure(f"poison message {outcome.detail}", [outcome]) from None
            self.reports[-1] = Report("poison", f"poison message: {exc}", [outcome])
            await self._flush()
            return outcome
        rec, _ = self.ledger.receive(request)   # a storage error: the host retries the poison message
        reason = reason_for(rec, dequeue_count)
        if rec.state in ("received", "approved") and rec.claimed(self.ledger.clock()):
            outcome = in_flight(rec)
            if dequeue_count < self.poison_retries:
                raise TransientFailure(f"request {rec.request_id}: being executed by another delivery "
                                       f"(claim until {rec.claim_until}); poison handling retried", [outcome])
            reason += "; a delivery was still executing it, so the row is left to that delivery"
        else:
            if rec.state in ("received", "approved"):
                rec = mark_failed(self.ledger, rec, dequeue_count)
            outcome = rec.outcome()
        self.outbox.add(Report("poison", reason, [outcome], [request]))
        await self._flush()
        return outcome

    # --- the pipeline ---------------------------------------------------------------------------------

    async def _pipeline(self, requests: list[dict[str, Any]], *, owner: str,
                        queue: bool) -> tuple[list[Outcome], str | None, float | None]:
        outcomes: dict[str, Outcome] = {}
        runnable: dict[str, list[tuple[Record, dict[str, Any]]]] = {}
        for req in requests:
            try:
                got = admit(req, self.ledger, self.execution, self.rails)
            except StorageError as exc:   # this request only; the others go on
                log.warning("request %s: ledger unavailable: %s", req["id"], describe(exc))
                got = storage_failure(req, exc)
            if isinstance(got, Outcome):
                outcomes[req["id"]] = got
            else:
                runnable.setdefault(req["action"], []).append((got, req))
        leftover: list[str] = []
        retry_after: float | None = None
        for action, pairs in runnable.items():
            # Claims are taken right before their action runs: the deadline starts with them.
            items = [c for rec, req in pairs
                     if (c := claim_row(self.ledger, rec, req, owner, self.lease, outcomes))]
            if queue and items and self.group_siblings:
                items += claim_siblings(items, owner, ledger=self.ledger, settings=self.settings,
                                        tenant=self.tenant, catalog=self.catalog, lease=self.lease,
                                        registry=self.registry)
            if not items:
                continue
            done, pending, hint = await self.execution.run(action, items)
            outcomes.update(done)
            leftover += pending
            retry_after = max(filter(None, (retry_after, hint)), default=None)
        ordered = [outcomes[r["id"]] for r in requests]
        ordered += [o for rid, o in outcomes.items() if rid not in {r["id"] for r in requests}]
        problem = None
        storage = next((o.extra["storage_error"] for o in ordered if o.extra.get("storage_error")), None)
        if storage and queue:
            problem = f"storage error: {storage}"
        elif leftover:
            problem = f"transient failure persisted for {len(leftover)} request(s)"
        elif queue and any(o.extra.get("in_flight") for o in ordered):
            # Another delivery holds the claim: hand the message back rather than drop it, in case
            # that delivery dies; the retry finds the request settled and does nothing.
            problem = "being executed by another delivery"
        return ordered, problem, retry_after

    async def _flush(self) -> None:
        """Send the reports; a storage error on their at-most-once markers costs a card, not the batch."""
        try:
            await self.outbox.flush()
        except StorageError as exc:
            log.error("reports not sent: storage error %s", describe(exc))

    async def _invalid(self, body: str | bytes, reason: str, dequeue_count: int) -> Outcome:
        try:
            rec = self.ledger.record_invalid(body, reason, dequeue_count=dequeue_count)
        except StorageError as exc:
            return storage_failure({"id": "", "rule": "~invalid"}, exc)
        outcome = rec.outcome()
        self.outbox.add(Report("failed", f"invalid remediation message: {reason}", [outcome]))
        return outcome

    # --- people: approve, reject, undo (remediation/decisions.py) -----------------------------------------

    async def approve(self, request_id: str, by: str, *, claimed_by: str | None = None,
                      done: bool = False) -> Outcome:
        return await self.decisions.approve(request_id, by, claimed_by=claimed_by, done=done)

    async def reject(self, request_id: str, by: str, *, claimed_by: str | None = None) -> Outcome:
        return await self.decisions.reject(request_id, by, claimed_by=claimed_by)

    async def undo(self, request_id: str, by: str = "", *, claimed_by: str | None = None) -> Outcome:
        return await self.decisions.undo(request_id, by, claimed_by=claimed_by)

    async def undo_run(self, run_id: str, by: str, *, claimed_by: str | None = None) -> RunUndo:
        """Undo everything ``run_id`` did that the platform can undo, with one summary report."""
        return await undo_run(self, run_id, by, claimed_by=claimed_by)

    async def flush_reports(self) -> None:
        await self._flush()

    async def run_decided(self, rec: Record, req: dict[str, Any], decision: Decision) -> Outcome:
        """One request a person decided on: settled, or claimed and run through the action."""
        if decision.kind != "execute":
            return self.execution.settle(rec, req, decision)
        claimed = claim(self.ledger, rec, new_owner("person"), lease=self.lease)
        if claimed is None:
            raise WorkerError(f"request {rec.request_id} is being executed by another delivery")
        done, _, _ = await self.execution.run(req["action"], [Claimed(req, claimed)])
        await self._flush()
        return done[req["id"]]

    # --- verification of Defender submissions (remediation/verify.py) ---------------------------------------

    async def verify(self, backend: Any) -> list[Outcome]:
        """Confirm ``submitted`` email requests from EmailEvents."""
        outcomes = await verify_submitted(self.ledger, backend, grace=self.verify_grace,
                                          report=self.outbox.add, short_grace=self.unconfirmed_grace,
                                          resubmit=partial(resubmit, self))
        await self._flush()
        return outcomes



def _dump_invalid(req: Any) -> str:
    """An invalid request as text for its ledger row; one that cannot be serialised (too deep, lone
    surrogates, cycles) is named rather than raising, so the row is still written."""
    try:
        return json.dumps(req, sort_keys=True, default=str)
    except (RecursionError, ValueError, TypeError) as exc:
        return json.dumps({"unserialisable": type(exc).__name__, "type": type(req).__name__})
