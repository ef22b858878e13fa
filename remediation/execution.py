"""Turning a rails decision into a ledger outcome: settle what runs nothing, run the rest.

``settle`` records a decision that runs nothing (held, skipped, dry run). ``run`` executes one action
over claimed requests: it writes each row's intent first (remediation/intent.py; no intent, no action),
passes the requests an earlier attempt may have carried out in ``ActionContext.prior_attempts`` (rows
with an earlier intent, and retries inside this delivery), retries transient results a bounded number
of times (Retry-After honoured, capped at ``max_delay``: a longer hint ends the delivery instead of
sleeping through the function's time), all within the delivery's deadline (remediation/deadline.py),
records each result (retried on storage errors), and gives back what stayed transient: the claim is
released and the row stays ``received`` with the error, for the next delivery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from remediation.actions.base import ActionContext, ActionResult
from remediation.actions.registry import Registry
from remediation.claims import Claimed, duplicate, in_flight, storage_failure
from remediation.deadline import Deadline, DeadlinePassed
from remediation.intent import (
    StorageError,
    ambiguous_prior,
    describe,
    prior_intent,
    record_result,
    write_intent,
)
from remediation.ledger import IllegalTransition, Ledger, LedgerConflict, Record
from remediation.outcome import Outcome
from remediation.rails import Decision
from remediation.reporting import Report, ReportQueue

log = logging.getLogger(__name__)

# States an action may report (anything else is a bug in the action and recorded as failed).
RESULT_STATES = frozenset({"submitted", "confirmed", "skipped", "failed"})


class Execution:
    def __init__(self, ledger: Ledger, registry: Registry, outbox: ReportQueue, *, email_strategy: str,
                 ctx: Callable[[], ActionContext], max_attempts: int = 3, backoff: float = 2.0,
                 max_delay: float = 30.0, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 budget: float = 150.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ledger, self.registry, self.outbox = ledger, registry, outbox
        self.email_strategy, self.ctx = email_strategy, ctx
        self.max_attempts, self.backoff, self.max_delay = max(1, max_attempts), backoff, max_delay
        self.sleep = sleep
        self.budget, self.monotonic = budget, monotonic   # a delivery's time under its claims (deadline.py)

    def settle(self, rec: Record, req: dict[str, Any], decision: Decision) -> Outcome:
        """Record a decision that runs nothing: skipped (scope, dry run) or held."""
        if decision.kind == "hold":
            detail = decision.reason
            command = self.registry.manual_command(req)
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
            fresh = self._fresh(rec)
            return duplicate(fresh)
        outcome = rec.outcome()
        if decision.kind == "dry_run":
            outcome.extra["dry_run"] = True
        if decision.notify:
            kind = "held" if state == "held" else "skipped"
            self.outbox.add(Report(kind, decision.reason, [outcome], [req]))
        return outcome

    async def run(self, action_name: str, items: list[Claimed], *, deadline: Deadline | None = None,
                  ) -> tuple[dict[str, Outcome], list[str], float | None]:
        """Run one action over claimed items with bounded retries of transient results, within
        ``deadline`` (a new one of ``budget`` seconds when not given: the claims were just taken)."""
        deadline = deadline or Deadline(self.budget, clock=self.monotonic)
        done: dict[str, Outcome] = {}
        leftover: list[str] = []
        action = self.registry.executor(action_name, self.email_strategy)
        # Requests an earlier delivery may have carried out: their rows had an intent before ours.
        prior = {i.request["id"]: at for i in items if (at := prior_intent(i.record))}
        # ... and those whose earlier attempt's fate is unknown (crash, lost result, call cut off), as
        # opposed to given back after the action answered transient (intent.ambiguous_prior).
        unknown = {i.request["id"] for i in items if ambiguous_prior(i.record)}
        pending = [i for i in items if self._intend(i, done, leftover)]
        attempt = 0
        while pending:
            attempt += 1
            ctx = replace(self.ctx(), prior_attempts={i.request["id"]: prior[i.request["id"]]
                                                      for i in pending if i.request["id"] in prior},
                          ambiguous_prior=frozenset(i.request["id"] for i in pending
                                                    if i.request["id"] in unknown))
            results, why = await self._call(action, [i.request for i in pending], ctx, deadline)
            # No answer from the action for these (cut off, raised, or left out): their fate is unknown.
            unknown.update(i.request["id"] for i in pending if i.request["id"] not in results)
            retry: list[tuple[Claimed, ActionResult]] = []
            for item in pending:
                res = results.get(item.request["id"]) or transient(item.request["id"], why)
                if res.transient:
                    retry.append((item, res))
                    continue
                done[item.request["id"]], lost = await self._finish(item, res, attempt)
                if lost:
                    leftover.append(item.request["id"])
            if not retry:
                break
            hint = max((r.retry_after or 0.0 for _, r in retry), default=0.0)
            delay = hint or self.backoff * (2 ** (attempt - 1))
            if attempt >= self.max_attempts or delay > self.max_delay or not deadline.allows(delay):
                for item, res in retry:
                    done[item.request["id"]] = self._give_back(item, res, attempt,
                                                               answered=item.request["id"] not in unknown)
                return done, leftover + [i.request["id"] for i, _ in retry], hint or None
            log.info("transient failure on %s for %d request(s); retrying in %.1fs",
                     action_name, len(retry), delay)
            await self.sleep(delay)
            pending = [i for i, _ in retry]
            for item in pending:   # retried inside this delivery: the first call may have acted
                prior.setdefault(item.request["id"], prior_intent(item.record) or self.ledger.iso_now())
        return done, leftover, None

    def _intend(self, item: Claimed, done: dict[str, Outcome], leftover: list[str]) -> bool:
        """Write the intent before acting; a request whose intent cannot be written is not acted on."""
        rec = item.record
        try:
            item.record = write_intent(self.ledger, rec, rec.claim_token or "")
            return True
        except LedgerConflict:
            # The row changed under our claim (it expired and another delivery took it): theirs now.
            fresh = self._fresh(rec)
            done[rec.request_id] = in_flight(fresh) if fresh.state == "received" else duplicate(fresh)
        except StorageError as exc:
            log.warning("request %s: intent not written (%s); not acted on", rec.request_id, describe(exc))
            done[rec.request_id] = storage_failure(item.request, exc, rec)
        leftover.append(rec.request_id)
        return False

    async def _call(self, action: Any, requests: list[dict[str, Any]], ctx: ActionContext,
                    deadline: Deadline) -> tuple[dict[str, ActionResult], str]:
        """The action's answers by request id, and why a request is absent from them (the caller records
        it transient, with its fate unknown: intent.ambiguous_prior)."""
        try:
            results = await deadline.run(action.execute(requests, ctx))
        except DeadlinePassed as exc:
            # Not finished in time: released for the next delivery, which knows (intent) it may be done.
            return {}, f"{exc}; released for the next delivery"
        except Exception as exc:  # an action bug or an unforeseen transport error: retry, then poison
            log.exception("action %s raised", type(action).__name__)
            return {}, f"{type(exc).__name__}: {exc}"
        return {r.request_id: r for r in results}, "the action returned no result for this request"

    async def _finish(self, item: Claimed, res: ActionResult, attempt: int) -> tuple[Outcome, bool]:
        """The result recorded; True as second value when it could not be (the request stays open)."""
        state = res.state if res.state in RESULT_STATES else "failed"
        error = res.error if res.state in RESULT_STATES else f"action reported unknown state {res.state!r}"
        rec = item.record
        fields: dict[str, Any] = {"detail": res.detail or "", "error": error, "link": res.link,
                                  "attempts": rec.attempts + attempt - 1, "executed_by": rec.claim_token}
        if res.undo is not None:
            fields["undo"] = res.undo
        if res.blocked:
            fields["blocked"] = res.blocked
        if res.unconfirmed or rec.extra.get("unconfirmed_submission"):   # set, or cleared on a resubmission
            fields["unconfirmed_submission"] = res.unconfirmed
        try:
            rec = await record_result(self.ledger, rec, state, fields, sleep=self.sleep)
        except (LedgerConflict, IllegalTransition) as exc:
            # Our lease expired and another delivery took over: it owns the row now.
            log.warning("request %s: result %s not recorded: %s", rec.request_id, state, exc)
            fresh = self._fresh(rec)
            outcome = fresh.outcome()
            outcome.extra["lost_result"] = state
            return outcome, False
        except StorageError as exc:
            # The row keeps its intent (and our claim until it expires): the next delivery passes it to
            # the action as a prior attempt, which recognises the work instead of repeating it.
            log.error("request %s: result %s not recorded: %s", rec.request_id, state, describe(exc))
            outcome = storage_failure(item.request, exc, rec)
            outcome.extra["lost_result"] = state
            return outcome, True
        outcome = rec.outcome()
        if state == "failed":
            self.outbox.add(Report("failed", f"{rec.action} failed: {error or res.detail}", [outcome],
                                       [item.request]))
        return outcome, False

    def _fresh(self, rec: Record) -> Record:
        """The row as stored now; ``rec`` when the ledger cannot say."""
        try:
            return self.ledger.read(rec.rule, rec.request_id) or rec
        except StorageError:
            return rec

    def _give_back(self, item: Claimed, res: ActionResult, attempt: int, *, answered: bool) -> Outcome:
        """Transient failure that persisted: release the claim, keep the row ``received``. ``answered``:
        every call of this delivery got the action's own answer (``released_by``: intent.ambiguous_prior)."""
        rec = item.record
        fields: dict[str, Any] = {"released_by": rec.claim_token} if answered else {}
        try:
            rec = self.ledger.release(rec, error=res.error or res.detail or "transient failure",
                                      attempts=rec.attempts + attempt - 1, **fields)
        except LedgerConflict:
            rec = self._fresh(rec)
        except StorageError as exc:   # the claim stays until its lease ends; the message comes back
            outcome = storage_failure(item.request, exc, rec)
            outcome.extra["transient"] = True
            return outcome
        outcome = rec.outcome()
        outcome.extra["transient"] = True
        if res.retry_after:
            outcome.extra["retry_after"] = res.retry_after
        return outcome


def transient(request_id: str, error: str) -> ActionResult:
    return ActionResult(request_id=request_id, state="failed", detail="", error=error, transient=True,
                        retry_after=None, link=None, undo=None)
