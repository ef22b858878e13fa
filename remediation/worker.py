"""The worker: validate -> ledger dedup -> safety rails -> action -> ledger -> report.

Two entry points share one pipeline: ``process_message`` (the queue trigger, one message) and
``process``/``process_bodies`` (CLI and demo batches). Idempotency, in layers:

* **Request level (the ledger).** A request id is recorded once (``Ledger.receive``); a delivery that
  finds its row past ``received`` does nothing and reports the recorded outcome. Before acting the
  worker takes an ETag-guarded *claim* on the row, so two deliveries racing on one id cannot both act.
* **Crash between action and ledger write.** The claim was taken but the outcome never written. On
  the queue path the claim's owner is derived from the message body, so the same message redelivered
  (dequeue count > 1) takes its own claim back at once and acts again; any other delivery waits until
  the lease expires. Acting again is safe because every action is idempotent at the service: the
  mailbox strategy re-reads the message's folder first ("already in Junk" is ``skipped``), and
  Defender remediation, session revocation, account disable, confirm-compromised and connector
  disable all converge on the same end state. The cost is a second Action-center entry at worst.
* **Transport level (the SDK's RetryHandler).** msgraph-sdk retries 429/503/504 on every method,
  POST included, honouring Retry-After, below this code. Decision: keep it (a 429 was never processed
  by the service, so replaying it is exact; a 503/504 may have been processed, and then the replay is
  the crash case above: the same end state, possibly one more Action-center entry). Those replays are
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

Queue-path grouping (Defender strategy). Each message is one request, but Defender allows only 50
active remediations per organisation and shows each call as one Action-center entry, so one call per
message would exhaust the limit on any real campaign. When a message's request is executed, the
worker also claims the run's other ``received`` requests for the same action (ETag claims: a row
another worker got first is left alone), passes them through the rails one by one, and submits them
in the same call; their own messages later find them ``submitted`` and do nothing. This only helps if
the run's requests are in the ledger before their messages are processed, so the enqueuing side calls
``Worker.register(requests)`` before sending them; without it the worker degrades to one call per
message, which is correct, only slower and noisier.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from core.request import EMAIL_ACTIONS, RequestInvalid, make_request, parse_message, validate_request
from core.settings import Settings
from core.tenant import TenantConfig
from detections.catalog import Rule
from remediation.ledger import INVALID, IllegalTransition, Ledger, LedgerConflict, Record
from remediation.outcome import Outcome
from remediation.rails import CONNECTOR_ACTIONS, Decision, decide
from remediation.verify import (
    MAX_IDS_PER_QUERY,
    classify,
    locations,
    mail_time,
    verification_query,
    verification_timespan,
)

if TYPE_CHECKING:
    from remediation.actions import ActionResult

log = logging.getLogger(__name__)

# States an action may report (anything else is a bug in the action and recorded as failed).
RESULT_STATES = frozenset({"submitted", "confirmed", "skipped", "failed"})
# Most requests submitted together when siblings are grouped (Defender takes many per call; one
# bounded group keeps a single failure from touching a whole campaign).
MAX_GROUP = 100


class WorkerError(Exception):
    """A person's request (approve, reject, undo) that cannot be done; the message says why."""


class NotFound(WorkerError):
    pass


class TransientFailure(Exception):
    """Raised on the queue path so the host returns the message; the ledger already says why."""

    def __init__(self, message: str, outcomes: list[Outcome], retry_after: float | None = None):
        super().__init__(message)
        self.outcomes = outcomes
        self.retry_after = retry_after


@dataclass
class Report:
    """Something on-call should hear about: failures, holds (approval or cap), scope surprises."""

    kind: str                   # "failed" | "held" | "skipped" | "poison"
    summary: str
    outcomes: list[Outcome] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


class Notifier(Protocol):
    async def send(self, card: dict[str, Any]) -> bool: ...


ReportHook = Callable[[Report], Awaitable[None]]


@dataclass
class _Item:
    request: dict[str, Any]
    record: Record


class Worker:
    def __init__(self, settings: Settings, tenant: TenantConfig, catalog: Mapping[str, Rule], ledger: Ledger,
                 graph: Any, exchange: Any, notifier: Notifier | None = None, *,
                 report_hook: ReportHook | None = None, max_attempts: int = 3, backoff: float = 2.0,
                 max_delay: float = 30.0, lease: timedelta = timedelta(minutes=5),
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep, group_siblings: bool = True,
                 verify_grace: timedelta = timedelta(hours=2), mailbox_slots: Any = None) -> None:
        self.settings, self.tenant, self.catalog, self.ledger = settings, tenant, catalog, ledger
        self.graph, self.exchange = graph, exchange
        self._ctx: Any = None
        self.mailbox_slots = mailbox_slots   # remediation.mailbox_slots.MailboxSlots (mailbox strategy)
        self.notifier = notifier
        if report_hook is None and notifier is not None:
            from remediation.reporting import cards_hook  # the Teams cards, only when a notifier is given
            report_hook = cards_hook(notifier, tenant_id=settings.tenant_id or None,
                                     connector_actions=settings.connector_actions)
        self.report_hook = report_hook
        self._reported = 0
        self.max_attempts, self.backoff, self.max_delay = max(1, max_attempts), backoff, max_delay
        self.lease, self.sleep, self.group_siblings = lease, sleep, group_siblings
        self.verify_grace = verify_grace
        self.reports: list[Report] = []   # everything reported, for the CLI and demo summaries

    @property
    def ctx(self) -> Any:
        """The actions' context, built on first use (so paths that never act need no action code)."""
        if self._ctx is None:
            from remediation.actions import ActionContext

            self._ctx = ActionContext(settings=self.settings, tenant=self.tenant, graph=self.graph,
                                      exchange=self.exchange, mailbox_slots=self.mailbox_slots)
        return self._ctx

    # --- entry points ---------------------------------------------------------------------------------

    async def process_message(self, body: str | bytes, dequeue_count: int = 1) -> list[Outcome]:
        """Queue path: one message. Raises TransientFailure to have the host retry it."""
        try:
            request = parse_message(body)
        except RequestInvalid as exc:
            # Schema-invalid is permanent: recorded, reported, and the message is consumed.
            outcome = await self._invalid(body, str(exc), dequeue_count)
            await self._flush_reports()
            return [outcome]
        raw = body if isinstance(body, bytes) else body.encode("utf-8")
        owner = "msg-" + hashlib.sha256(raw).hexdigest()[:24]
        outcomes, leftover, retry_after = await self._pipeline([request], owner=owner, queue=True,
                                                               redelivery=dequeue_count > 1)
        await self._flush_reports()
        if leftover:
            raise TransientFailure(f"request {request['id']}: {leftover}", outcomes, retry_after)
        return outcomes

    async def process_bodies(self, bodies: Iterable[str | bytes]) -> list[Outcome]:
        """CLI/demo path over raw message bodies: each parsed exactly as the queue path does."""
        outcomes: list[Outcome] = []
        valid: list[dict[str, Any]] = []
        for body in bodies:
            try:
                valid.append(parse_message(body))
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
                valid.append(validate_request(req))
            except RequestInvalid as exc:
                invalid.append(await self._invalid(json.dumps(req, sort_keys=True, default=str), str(exc), 1))
        outcomes, _, _ = await self._pipeline(valid, owner="batch-" + uuid.uuid4().hex[:12], queue=False,
                                              redelivery=False)
        await self._flush_reports()
        return invalid + outcomes

    def register(self, requests: Iterable[Mapping[str, Any]]) -> int:
        """Record a run's requests as ``received`` before they are enqueued (enables grouping).
        Returns how many were new; existing rows are untouched."""
        return sum(self.ledger.receive(dict(validate_request(dict(r))))[1] for r in requests)

    async def record_poison(self, body: str | bytes, dequeue_count: int) -> Outcome:
        """For the poison-queue function: the message failed every delivery; record it as failed."""
        try:
            request = parse_message(body)
        except RequestInvalid as exc:
            outcome = await self._invalid(body, str(exc), dequeue_count)
            self.reports[-1] = Report("poison", f"poison message: {exc}", [outcome])
            await self._flush_reports()
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
        self.reports.append(Report("poison", reason, [outcome], [request]))
        await self._flush_reports()
        return outcome

    # --- the pipeline ---------------------------------------------------------------------------------

    async def _pipeline(self, requests: list[dict[str, Any]], *, owner: str, queue: bool,
                        redelivery: bool) -> tuple[list[Outcome], str | None, float | None]:
        outcomes: dict[str, Outcome] = {}
        to_run: list[_Item] = []
        busy: list[str] = []
        for req in requests:
            rec, created = self.ledger.receive(req)
            decision: Decision | None = None
            if not created and rec.dry_run_skip:
                # Settled by a dry run only. The same dry-run delivery again is a no-op; a request
                # that would now run (rule or RESPONDER_DRY_RUN gone live) reopens the row.
                decision = decide(req, settings=self.settings, tenant=self.tenant, catalog=self.catalog)
                if decision.kind != "dry_run":
                    rec = self._reopen(rec, req)
            if not created and rec.state != "received":
                outcomes[req["id"]] = _duplicate(rec)
                continue
            ours = redelivery and rec.claim_token == owner
            if rec.claimed(self.ledger.clock()) and not ours:
                # Someone is executing it right now: neither act nor settle it under their feet.
                outcomes[req["id"]] = replace(rec.outcome(), detail="being executed by another delivery")
                busy.append(req["id"])
                continue
            if decision is None:
                decision = decide(req, settings=self.settings, tenant=self.tenant, catalog=self.catalog)
            if decision.kind != "execute":
                outcomes[req["id"]] = self._settle(rec, req, decision)
                continue
            claimed = self._claim(rec, owner, take_over=redelivery)
            if claimed is None:
                fresh = self.ledger.read(rec.rule, rec.request_id) or rec
                if fresh.state != "received":
                    outcomes[req["id"]] = _duplicate(fresh)
                else:
                    outcomes[req["id"]] = replace(fresh.outcome(),
                                                  detail="being executed by another delivery")
                    busy.append(req["id"])
                continue
            to_run.append(_Item(req, claimed))
        if queue and to_run:
            to_run += self._claim_siblings(to_run, owner)
        leftover: list[str] = []
        retry_after: float | None = None
        by_action: dict[str, list[_Item]] = {}
        for item in to_run:
            by_action.setdefault(item.request["action"], []).append(item)
        for action, items in by_action.items():
            done, pending, hint = await self._execute(action, items)
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

    def _reopen(self, rec: Record, req: dict[str, Any]) -> Record:
        """A dry-run row back to ``received`` for ``req``; whoever loses the race gets the fresh row."""
        try:
            return self.ledger.reopen(rec, req)
        except (LedgerConflict, IllegalTransition):
            return self.ledger.read(rec.rule, rec.request_id) or rec

    def _claim(self, rec: Record, owner: str, *, take_over: bool) -> Record | None:
        try:
            if take_over and rec.claim_token == owner:
                # Our own message redelivered after a crash: the live claim is ours; take it back.
                rec = replace(rec, claim_until=None)
            return self.ledger.claim(rec, lease=self.lease, owner=owner)
        except LedgerConflict:
            return None

    def _claim_siblings(self, items: list[_Item], owner: str) -> list[_Item]:
        if not self.group_siblings or self.settings.email_strategy != "defender":
            return []
        first = items[0].record
        if first.action not in EMAIL_ACTIONS or not first.run_id:
            return []
        have = {i.request["id"] for i in items}
        out: list[_Item] = []
        now = self.ledger.clock()
        # Same rule too: a run belongs to one rule, and the rule is the partition (no table scan).
        siblings = self.ledger.list(rule=first.rule, run_id=first.run_id, state="received",
                                    action=first.action)
        for sib in siblings:
            if len(items) + len(out) >= MAX_GROUP:
                break
            if sib.request_id in have or sib.claimed(now) or not sib.request:
                continue
            try:
                req = validate_request(sib.request)
            except RequestInvalid:
                continue
            if "_truncated" in (req.get("evidence") or {}):
                continue   # the rails need the full evidence; its own message will bring it
            decision = decide(req, settings=self.settings, tenant=self.tenant, catalog=self.catalog)
            if decision.kind != "execute":
                continue   # held/skipped ones are settled by their own message
            claimed = self._claim(sib, owner, take_over=False)
            if claimed is not None:
                out.append(_Item(req, claimed))
        return out

    def _settle(self, rec: Record, req: dict[str, Any], decision: Decision) -> Outcome:
        """Record a decision that runs nothing: skipped (scope, dry run) or held."""
        if decision.kind == "hold":
            detail = decision.reason
            command = manual_command(req)
            if command:   # the ledger carries the exact command on-call would run instead
                detail += f"; command: {command}"
            state, fields = "held", {"hold_reason": decision.hold_reason, "detail": detail}
        else:
            state, fields = "skipped", {"detail": decision.reason}
            if decision.kind == "dry_run":
                # Marks the skip as re-actionable: the same id may run later, once it is live.
                fields["dry_run"] = True
        try:
            rec = self.ledger.transition(rec, state, **fields)
        except (LedgerConflict, IllegalTransition):
            fresh = self.ledger.read(rec.rule, rec.request_id) or rec
            return _duplicate(fresh)
        outcome = rec.outcome()
        if decision.kind == "dry_run":
            outcome.extra["dry_run"] = True
        if decision.notify:
            kind = "held" if state == "held" else "skipped"
            self.reports.append(Report(kind, decision.reason, [outcome], [req]))
        return outcome

    async def _execute(self, action_name: str, items: list[_Item]) -> tuple[dict[str, Outcome], list[str],
                                                                                float | None]:
        """Run one action over claimed items with bounded retries of transient results."""
        done: dict[str, Outcome] = {}
        from remediation.actions import get_action

        action = get_action(action_name, self.settings.email_strategy)
        pending = items
        attempt = 0
        while True:
            attempt += 1
            results = await self._call(action, [i.request for i in pending])
            retry: list[tuple[_Item, ActionResult]] = []
            for item in pending:
                res = results.get(item.request["id"]) or _transient(
                    item.request["id"], "the action returned no result for this request")
                if res.transient:
                    retry.append((item, res))
                else:
                    done[item.request["id"]] = self._finish(item, res, attempt)
            if not retry:
                return done, [], None
            hint = max((r.retry_after or 0.0 for _, r in retry), default=0.0)
            delay = hint or self.backoff * (2 ** (attempt - 1))
            if attempt >= self.max_attempts or delay > self.max_delay:
                for item, res in retry:
                    done[item.request["id"]] = self._give_back(item, res, attempt)
                return done, [i.request["id"] for i, _ in retry], hint or None
            log.info("transient failure on %s for %d request(s); retrying in %.1fs",
                     action_name, len(retry), delay)
            await self.sleep(delay)
            pending = [i for i, _ in retry]

    async def _call(self, action: Any, requests: list[dict[str, Any]]) -> dict[str, ActionResult]:
        try:
            results = await action.execute(requests, self.ctx)
        except Exception as exc:  # an action bug or an unforeseen transport error: retry, then poison
            log.exception("action %s raised", type(action).__name__)
            return {r["id"]: _transient(r["id"], f"{type(exc).__name__}: {exc}") for r in requests}
        return {r.request_id: r for r in results}

    def _finish(self, item: _Item, res: ActionResult, attempt: int) -> Outcome:
        state = res.state if res.state in RESULT_STATES else "failed"
        error = res.error if res.state in RESULT_STATES else f"action reported unknown state {res.state!r}"
        rec = item.record
        fields: dict[str, Any] = {"detail": res.detail or "", "error": error, "link": res.link,
                                  "attempts": rec.attempts + attempt - 1, "executed_by": rec.claim_token}
        if res.undo is not None:
            fields["undo"] = res.undo
        if res.blocked:
            fields["blocked"] = res.blocked
        try:
            rec = self.ledger.transition(rec, state, **fields)
        except (LedgerConflict, IllegalTransition) as exc:
            # Our lease expired and another delivery took over: it owns the row now.
            log.warning("request %s: result %s not recorded: %s", rec.request_id, state, exc)
            fresh = self.ledger.read(rec.rule, rec.request_id) or rec
            outcome = fresh.outcome()
            outcome.extra["lost_result"] = state
            return outcome
        outcome = rec.outcome()
        if state == "failed":
            self.reports.append(Report("failed", f"{rec.action} failed: {error or res.detail}", [outcome],
                                       [item.request]))
        return outcome

    def _give_back(self, item: _Item, res: ActionResult, attempt: int) -> Outcome:
        """Transient failure that persisted: release the claim, keep the row ``received``."""
        rec = item.record
        try:
            rec = self.ledger.release(rec, error=res.error or res.detail or "transient failure",
                                      attempts=rec.attempts + attempt - 1)
        except LedgerConflict:
            rec = self.ledger.read(rec.rule, rec.request_id) or rec
        outcome = rec.outcome()
        outcome.extra["transient"] = True
        if res.retry_after:
            outcome.extra["retry_after"] = res.retry_after
        return outcome

    async def _invalid(self, body: str | bytes, reason: str, dequeue_count: int) -> Outcome:
        rec = self.ledger.record_invalid(body, reason, dequeue_count=dequeue_count)
        outcome = rec.outcome()
        self.reports.append(Report("failed", f"invalid remediation message: {reason}", [outcome]))
        return outcome

    # --- people: approve, reject, undo ----------------------------------------------------------------

    def _find(self, request_id: str) -> Record:
        rec = self.ledger.get(request_id)
        if rec is None or rec.rule == INVALID:
            raise NotFound(f"no request {request_id} in the ledger")
        return rec

    async def approve(self, request_id: str, by: str, *, claimed_by: str | None = None,
                      done: bool = False) -> Outcome:
        """Approve a held request and run it, exactly once.

        ``claimed_by`` is a name the caller gave but nobody verified (an HTTP body behind a shared function
        key): recorded beside ``by``, never as it. ``done`` is for connector requests when
        RESPONDER_CONNECTOR_ACTIONS is ``manual``: the app has no Exchange permission, so approving cannot
        run anything; the person runs the shown command and ``done`` records that they did."""
        rec = self._find(request_id)
        if run_by_hand({"action": rec.action}, self.settings.connector_actions) or done:
            return self._record_done(rec, by, claimed_by=claimed_by, done=done)
        if rec.state == "approved":
            if rec.claimed(self.ledger.clock()):
                raise WorkerError(f"request {request_id} is already approved and being executed")
            # Approved earlier but the run did not finish (crash or transient error): resume it.
        elif rec.state != "held":
            raise WorkerError(f"request {request_id} is {rec.state}; only a held request can be approved")
        if self.settings.dry_run:
            raise WorkerError("the global dry run (RESPONDER_DRY_RUN) is on: nothing would run, so the "
                              "request stays held")
        if not rec.request:
            raise WorkerError(f"request {request_id} has no stored request body")
        req = validate_request(rec.request)
        if rec.state == "held":
            try:
                rec = self.ledger.transition(rec, "approved", approved_by=by, **_claimed(claimed_by))
            except LedgerConflict:
                raise WorkerError(f"request {request_id} changed while approving (approved or rejected "
                                  "by someone else); nothing done") from None
        return await self._run_decided(rec, req, decide(req, settings=self.settings, tenant=self.tenant,
                                                        catalog=self.catalog, approved=True))

    def _record_done(self, rec: Record, by: str, *, claimed_by: str | None, done: bool) -> Outcome:
        """A connector request under RESPONDER_CONNECTOR_ACTIONS=manual: refuse to approve (nothing could
        run: no Exchange permission) and say what to do; with ``done``, record that a person ran the
        command (held -> approved -> confirmed). Nothing here calls Exchange."""
        rid = rec.request_id
        if not run_by_hand({"action": rec.action}, self.settings.connector_actions):
            raise WorkerError(f"request {rid}: done is only for connector requests while "
                              "RESPONDER_CONNECTOR_ACTIONS is manual; approve it without done to run it")
        if rec.state != "held":
            raise WorkerError(f"request {rid} is {rec.state}; only a held request can be marked done")
        command = (manual_command(rec.request or {})
                   or "the Set-InboundConnector/Set-OutboundConnector command")
        if not done:
            raise WorkerError(
                f"connector actions are manual here (RESPONDER_CONNECTOR_ACTIONS=manual): the app has no "
                f"Exchange permission and runs nothing. Run this in Exchange Online PowerShell: {command} "
                f"-- then mark it done: python -m responder approve {rid} --done (or POST "
                f"/api/requests/{rid}/approve with {{\"done\": true}})")
        try:
            rec = self.ledger.transition(rec, "approved", approved_by=by, **_claimed(claimed_by))
            rec = self.ledger.transition(rec, "confirmed", detail=f"run by hand by {by}: {command}",
                                         executed_by="person", run_by_hand=True)
        except (LedgerConflict, IllegalTransition):
            raise WorkerError(f"request {rid} changed while marking it done (approved or rejected by "
                              "someone else); nothing recorded") from None
        return rec.outcome()

    async def reject(self, request_id: str, by: str, *, claimed_by: str | None = None) -> Outcome:
        rec = self._find(request_id)
        if rec.state != "held":
            raise WorkerError(f"request {request_id} is {rec.state}; only a held request can be rejected")
        try:
            rec = self.ledger.transition(rec, "rejected", rejected_by=by, detail=f"rejected by {by}",
                                         **_claimed(claimed_by))
        except LedgerConflict:
            raise WorkerError(f"request {request_id} changed while rejecting; nothing done") from None
        return rec.outcome()

    async def undo(self, request_id: str, by: str = "") -> Outcome:
        """Reverse a confirmed move to Junk: move the message back to the Inbox (or the recorded
        original folder), as a new request in the ledger linked both ways to the original."""
        rec = self._find(request_id)
        if rec.action != "move_to_junk":
            raise WorkerError(f"request {request_id} is {rec.action}; only move_to_junk can be undone")
        if rec.state != "confirmed":
            raise WorkerError(f"request {request_id} is {rec.state}; only a confirmed move can be undone")
        if rec.extra.get("undone_by"):
            raise WorkerError(f"request {request_id} was already undone by {rec.extra['undone_by']}")
        original = rec.request or {}
        undo_req = make_request(rule=rec.rule, action="move_to_inbox", mode="auto", target=rec.target,
                                evidence=original.get("evidence", {}), detected_at=self.ledger.clock(),
                                run={"id": f"undo-{request_id}", "index": 0, "total": 1},
                                undo_of={"request_id": request_id, "undo": rec.undo or {}, "by": by},
                                severity=original.get("severity", ""),
                                rule_name=original.get("rule_name", ""))
        new, created = self.ledger.receive(undo_req, undo_of=request_id)
        if not created and new.state != "received":
            raise WorkerError(f"this message was already restored once (request {new.request_id} is "
                              f"{new.state})")
        decision = decide(undo_req, settings=self.settings, tenant=self.tenant, catalog=self.catalog,
                          approved=True, restore=True)
        outcome = await self._run_decided(new, undo_req, decision)
        if outcome.state in ("confirmed", "submitted"):
            try:
                current = self.ledger.read(rec.rule, rec.request_id) or rec
                self.ledger.update(current, undone_by=new.request_id)
            except LedgerConflict:
                log.warning("request %s: could not link undo %s", request_id, new.request_id)
        return outcome

    async def _run_decided(self, rec: Record, req: dict[str, Any], decision: Decision) -> Outcome:
        if decision.kind != "execute":
            return self._settle(rec, req, decision)
        claimed = self._claim(rec, "person-" + uuid.uuid4().hex[:12], take_over=False)
        if claimed is None:
            raise WorkerError(f"request {rec.request_id} is being executed by another delivery")
        done, _, _ = await self._execute(req["action"], [_Item(req, claimed)])
        await self._flush_reports()
        return done[req["id"]]

    # --- verification of Defender submissions ---------------------------------------------------------

    async def verify(self, backend: Any) -> list[Outcome]:
        """Confirm ``submitted`` email requests from EmailEvents (see remediation/verify.py)."""
        submitted = [r for r in self.ledger.list(state="submitted")
                     if r.action in EMAIL_ACTIONS and r.target.get("network_message_id")]
        outcomes: list[Outcome] = []
        for start in range(0, len(submitted), MAX_IDS_PER_QUERY):
            chunk = submitted[start:start + MAX_IDS_PER_QUERY]
            outcomes += await self._verify_chunk(backend, chunk)
        await self._flush_reports()
        return outcomes

    async def _verify_chunk(self, backend: Any, chunk: list[Record]) -> list[Outcome]:
        now = self.ledger.clock()
        # The EmailEvents row carries the mail's own time, which may be days before the submission (an
        # undo, a late approval): the timespan reaches back to the oldest mail (remediation/verify.py).
        mailed = {r.request_id: mail_time(r.request, _parse(r.state_times.get("submitted") or r.created_at))
                  for r in chunk}
        span = verification_timespan(mailed.values(), now)
        result = await backend.run(verification_query(r.target["network_message_id"] for r in chunk),
                                   timespan=span)
        where = locations(result.rows)
        out: list[Outcome] = []
        for rec in chunk:
            key = (rec.target["network_message_id"].lower(), str(rec.target.get("recipient", "")).lower())
            location = where.get(key)
            if location is None and result.partial:
                out.append(replace(rec.outcome(), detail="partial hunting result; not judged"))
                continue
            submitted_at = _parse(rec.state_times.get("submitted") or rec.created_at)
            state, detail = classify(rec.action, location, submitted_at=submitted_at, now=now,
                                     grace=self.verify_grace, mailed_at=mailed[rec.request_id])
            if state is None:
                out.append(replace(rec.outcome(), detail=detail))
                continue
            try:
                rec = self.ledger.transition(rec, state, detail=detail)
            except (LedgerConflict, IllegalTransition):
                rec = self.ledger.read(rec.rule, rec.request_id) or rec
            outcome = rec.outcome()
            if outcome.state == "not_applied":
                self.reports.append(Report("failed", f"{rec.action} was submitted but not applied: {detail}",
                                           [outcome], [rec.request or {}]))
            out.append(outcome)
        return out

    # --- reporting ------------------------------------------------------------------------------------

    async def _flush_reports(self) -> None:
        """Hand new reports to the hook (the function app and demo plug the Teams cards in there).

        One card per rule run and kind, not one per request: reports of one flush are merged per
        (kind, rule, run), and on-call hears of a given (kind, rule, run) once across deliveries
        (a ``claim_once`` marker), since a run of 400 capped targets arrives as 400 queue messages.
        Failures are told once per distinct error. A report that cannot be delivered is logged and its
        marker released: notification never breaks remediation.
        """
        pending, self._reported = self.reports[self._reported:], len(self.reports)
        if self.report_hook is None or not pending:
            return
        merged: dict[tuple[str, ...], Report] = {}
        for report in pending:
            key = _report_key(report)
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
                await self.report_hook(report)
            except Exception:
                log.exception("report %s could not be delivered", report.kind)
                if marker is not None:
                    self.ledger.forget_once(marker)


def _report_key(report: Report) -> tuple[str, ...]:
    first = report.outcomes[0] if report.outcomes else None
    request = report.requests[0] if report.requests else {}
    run = str((request.get("run") or {}).get("id") or "")
    key: tuple[str, ...] = (report.kind, first.rule if first else "", run)
    if report.kind in ("failed", "poison"):
        # Different errors are different news; the same error on many targets is one.
        error = (first.error or first.detail) if first else report.summary
        key += (hashlib.sha256((error or "").encode("utf-8")).hexdigest()[:12],)
    return key


def manual_command(request: Mapping[str, Any]) -> str | None:
    """The exact Exchange Online PowerShell for a connector request (None for other actions)."""
    if request.get("action") != "disable_connector":
        return None
    from remediation.exchange import render_command

    target = request.get("target") or {}
    name = str(target.get("connector") or "")
    kinds = [target["connector_type"]] if target.get("connector_type") else ["inbound", "outbound"]
    try:
        return " or ".join(render_command(k, name) for k in kinds)
    except ValueError:
        return None


def run_by_hand(request: Mapping[str, Any], connector_actions: str) -> bool:
    """Whether a person must run this request's command themselves: a connector action while
    RESPONDER_CONNECTOR_ACTIONS is ``manual`` (the deployment granted no Exchange permission)."""
    return request.get("action") in CONNECTOR_ACTIONS and connector_actions == "manual"


def _claimed(claimed_by: str | None) -> dict[str, str]:
    """The ledger field for a name the caller gave but nobody verified (kept apart from ``*_by``)."""
    return {"claimed_by": claimed_by} if claimed_by else {}


def _transient(request_id: str, error: str) -> ActionResult:
    from remediation.actions import ActionResult

    return ActionResult(request_id=request_id, state="failed", detail="", error=error, transient=True,
                        retry_after=None, link=None, undo=None)


def _duplicate(rec: Record) -> Outcome:
    outcome = rec.outcome()
    outcome.extra["duplicate"] = True
    return outcome


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
