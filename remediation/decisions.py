"""People's decisions on requests: approve, reject, undo (and ``done`` for connector commands run by hand).

Each is checked against the ledger row's state and written with an ETag guard, so two people acting on
one request at once cannot both win: the loser gets a ``WorkerError`` saying what changed. Whatever runs
afterwards goes back through the rails (``decide(..., approved=True)``) and the worker's pipeline
(``run_decided``); nothing here calls an action directly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from core.request import make_request
from core.settings import Settings
from core.tenant import TenantConfig
from detections.catalog import Rule
from remediation.actions.registry import Registry, default_registry
from remediation.expiry import expire, is_overdue, iso_duration
from remediation.ledger import INVALID, IllegalTransition, Ledger, LedgerConflict, Record
from remediation.outcome import Outcome
from remediation.rails import Decision, decide
from remediation.stop import StopSwitch

log = logging.getLogger(__name__)


class WorkerError(Exception):
    """A person's request (approve, reject, undo) that cannot be done; the message says why, and
    ``state`` is the request's ledger state when known (the HTTP answer carries it)."""

    def __init__(self, message: str, *, state: str | None = None) -> None:
        super().__init__(message)
        self.state = state


class NotFound(WorkerError):
    pass


class Runner(Protocol):
    """What decisions need from the worker: its configuration and the pipeline for one decided request."""

    settings: Settings
    tenant: TenantConfig
    catalog: Mapping[str, Rule]
    ledger: Ledger
    stop: StopSwitch

    async def run_decided(self, rec: Record, req: dict[str, Any], decision: Decision) -> Outcome: ...


class RecordOnly:
    """A Runner for recording decisions where no action may run (the approval page, the CLI without
    --local): the worker in Azure runs what they approve, with the app's own identity."""

    def __init__(self, settings: Settings, tenant: TenantConfig, catalog: Mapping[str, Rule],
                 ledger: Ledger) -> None:
        self.settings, self.tenant, self.catalog, self.ledger = settings, tenant, catalog, ledger

    async def run_decided(self, rec: Record, req: dict[str, Any], decision: Decision) -> Outcome:
        raise WorkerError(f"request {rec.request_id}: nothing runs here; the worker runs approved requests")


class Decisions:
    def __init__(self, runner: Runner, registry: Registry | None = None) -> None:
        self.runner = runner
        self.registry = registry or default_registry()

    def find(self, request_id: str) -> Record:
        rec = self.runner.ledger.get(request_id)
        if rec is None or rec.rule == INVALID:
            raise NotFound(f"no request {request_id} in the ledger")
        return rec

    def _decide(self, req: dict[str, Any], **kw: bool) -> Decision:
        r = self.runner
        return decide(req, settings=r.settings, tenant=r.tenant, catalog=r.catalog, registry=self.registry,
                      stop=r.stop.current(), **kw)

    async def approve(self, request_id: str, by: str, *, claimed_by: str | None = None,
                      done: bool = False) -> Outcome:
        """Approve a held request and run it, exactly once.

        ``claimed_by`` is a name the caller gave but nobody verified (an HTTP body behind a shared function
        key): recorded beside ``by``, never as it. ``done`` is for actions a person runs by hand (connector
        requests while RESPONDER_CONNECTOR_ACTIONS is ``manual``: the app has no Exchange permission, so
        approving cannot run anything); the person runs the shown command and ``done`` records that."""
        rec, ledger, settings = self.find(request_id), self.runner.ledger, self.runner.settings
        rec = self._refuse_expired(rec)
        if self.registry.run_by_hand(rec.action, settings.connector_actions) or done:
            return self._record_done(rec, by, claimed_by=claimed_by, done=done)
        if rec.state == "approved":
            if rec.claimed(ledger.clock()):
                raise WorkerError(f"request {request_id} is already approved and being executed",
                                  state=rec.state)
            # Approved earlier but the run did not finish (crash or transient error): resume it.
        elif rec.state != "held":
            raise WorkerError(f"request {request_id} is {rec.state}; only a held request can be approved",
                              state=rec.state)
        stop = self.runner.stop.fresh()
        if stop.on:
            raise WorkerError(f"{stop.describe()}: nothing is run until it is cleared, so request "
                              f"{request_id} stays {rec.state} (stop means stop; clear it with `python -m "
                              "responder stop off` or POST /api/stop/clear, then approve)", state=rec.state)
        if settings.dry_run:
            raise WorkerError("the global dry run (RESPONDER_DRY_RUN) is on: nothing would run, so the "
                              "request stays held", state=rec.state)
        if not rec.request:
            raise WorkerError(f"request {request_id} has no stored request body", state=rec.state)
        req = self.registry.contract().validate(rec.request)
        if rec.state == "held":
            try:
                rec = ledger.transition(rec, "approved", approved_by=by, **_claimed(claimed_by))
            except LedgerConflict:
                raise WorkerError(f"request {request_id} changed while approving (approved or rejected "
                                  "by someone else); nothing done") from None
        return await self.runner.run_decided(rec, req, self._decide(req, approved=True))

    def record_approval(self, request_id: str, by: str, **fields: Any) -> Record:
        """Approve a held request without running it: the row becomes ``approved`` (with who, from
        where: ``fields``) and the caller enqueues ``rec.request``; the worker in Azure then runs it
        with the app's own identity, exactly once (remediation/admission.py claims approved rows).
        Same refusals as ``approve``: expired, not held, run-by-hand, global dry run."""
        rec, ledger, settings = self.find(request_id), self.runner.ledger, self.runner.settings
        rec = self._refuse_expired(rec)
        if rec.state != "held":
            raise WorkerError(f"request {request_id} is {rec.state}; only a held request can be approved",
                              state=rec.state)
        if self.registry.run_by_hand(rec.action, settings.connector_actions):
            raise WorkerError(f"request {request_id} is run by hand here (RESPONDER_CONNECTOR_ACTIONS="
                              f"manual): run the command shown, then mark it done", state=rec.state)
        if settings.dry_run:
            raise WorkerError("the global dry run (RESPONDER_DRY_RUN) is on: nothing would run, so the "
                              "request stays held", state=rec.state)
        if not rec.request:
            raise WorkerError(f"request {request_id} has no stored request body", state=rec.state)
        self.registry.contract().validate(rec.request)
        try:
            return ledger.transition(rec, "approved", approved_by=by, **fields)
        except (LedgerConflict, IllegalTransition):
            fresh = ledger.get(request_id)
            raise WorkerError(f"request {request_id} changed while approving (approved or rejected by "
                              "someone else); nothing done", state=fresh.state if fresh else None) from None

    def record_rejection(self, request_id: str, by: str, **fields: Any) -> Record:
        """Reject a held request (nothing to run, so nothing is enqueued)."""
        rec = self._refuse_expired(self.find(request_id))
        if rec.state != "held":
            raise WorkerError(f"request {request_id} is {rec.state}; only a held request can be rejected",
                              state=rec.state)
        try:
            return self.runner.ledger.transition(rec, "rejected", rejected_by=by, detail=f"rejected by {by}",
                                                 **fields)
        except (LedgerConflict, IllegalTransition):
            fresh = self.runner.ledger.get(request_id)
            raise WorkerError(f"request {request_id} changed while rejecting; nothing done",
                              state=fresh.state if fresh else None) from None

    def _refuse_expired(self, rec: Record) -> Record:
        """Before anything runs: a held row past RESPONDER_HELD_EXPIRY is expired now (not only at the
        next sweep, so a late approval never depends on a timer) and the approval is refused; an
        expired row is refused with the same words. Other rows pass through unchanged."""
        ledger, ttl = self.runner.ledger, self.runner.settings.held_expiry
        if rec.state == "held" and is_overdue(rec, ledger.clock(), ttl):
            try:
                rec = expire(ledger, rec, ledger.clock(), ttl)
            except (LedgerConflict, IllegalTransition):
                raise WorkerError(f"request {rec.request_id} changed while approving (approved or rejected "
                                  "by someone else); nothing done") from None
        if rec.state == "expired":
            raise WorkerError(
                f"request {rec.request_id} has expired and can no longer be approved: {rec.detail} "
                f"(RESPONDER_HELD_EXPIRY is {iso_duration(ttl)} here). If the finding still matters, act "
                "on it in the portal.", state="expired")
        return rec

    def _record_done(self, rec: Record, by: str, *, claimed_by: str | None, done: bool) -> Outcome:
        """An action a person runs by hand: refuse to approve (nothing could run: no Exchange permission)
        and say what to do; with ``done``, record that a person ran the command (held -> approved ->
        confirmed). Nothing here calls Exchange."""
        rid, ledger = rec.request_id, self.runner.ledger
        if not self.registry.run_by_hand(rec.action, self.runner.settings.connector_actions):
            raise WorkerError(f"request {rid}: done is only for connector requests while "
                              "RESPONDER_CONNECTOR_ACTIONS is manual; approve it without done to run it")
        if rec.state != "held":
            raise WorkerError(f"request {rid} is {rec.state}; only a held request can be marked done")
        command = (self.registry.manual_command(rec.request or {})
                   or "the Set-InboundConnector/Set-OutboundConnector command")
        if not done:
            raise WorkerError(
                f"connector actions are manual here (RESPONDER_CONNECTOR_ACTIONS=manual): the app has no "
                f"Exchange permission and runs nothing. Run this in Exchange Online PowerShell: {command} "
                f"-- then mark it done: python -m responder approve {rid} --done (or POST "
                f"/api/requests/{rid}/approve with {{\"done\": true}})")
        try:
            rec = ledger.transition(rec, "approved", approved_by=by, **_claimed(claimed_by))
            rec = ledger.transition(rec, "confirmed", detail=f"run by hand by {by}: {command}",
                                    executed_by="person", run_by_hand=True)
        except (LedgerConflict, IllegalTransition):
            raise WorkerError(f"request {rid} changed while marking it done (approved or rejected by "
                              "someone else); nothing recorded") from None
        return rec.outcome()

    async def reject(self, request_id: str, by: str, *, claimed_by: str | None = None) -> Outcome:
        rec = self.find(request_id)
        if rec.state != "held":
            raise WorkerError(f"request {request_id} is {rec.state}; only a held request can be rejected",
                              state=rec.state)
        try:
            rec = self.runner.ledger.transition(rec, "rejected", rejected_by=by, detail=f"rejected by {by}",
                                                **_claimed(claimed_by))
        except LedgerConflict:
            raise WorkerError(f"request {request_id} changed while rejecting; nothing done") from None
        return rec.outcome()

    def record_undo(self, request_id: str, by: str, **fields: Any) -> tuple[Record, dict[str, Any]]:
        """Record the undo of a confirmed action as a new ``received`` request linked to the original,
        for the caller to enqueue: the worker runs it as a restore (remediation/admission.py trusts
        ``undo_of`` only on a row recorded here, never from a message alone)."""
        rec, ledger = self.find(request_id), self.runner.ledger
        undo_req = self._undo_request(rec, by)
        new, created = ledger.receive(undo_req, undo_of=request_id, **fields)
        if not created and new.state != "received":
            raise WorkerError(f"this message was already restored once (request {new.request_id} is "
                              f"{new.state})")
        try:
            ledger.update(ledger.read(rec.rule, rec.request_id) or rec, undone_by=new.request_id)
        except LedgerConflict:
            log.warning("request %s: could not link undo %s", request_id, new.request_id)
        return new, undo_req

    def _undo_request(self, rec: Record, by: str) -> dict[str, Any]:
        request_id, ledger = rec.request_id, self.runner.ledger
        spec = self.registry.find(rec.action)
        if spec is None or spec.inverse is None:
            undoable = ", ".join(d.name for d in self.registry if d.inverse) or "nothing"
            raise WorkerError(f"request {request_id} is {rec.action}; only {undoable} can be undone")
        if rec.state == "expired":
            raise WorkerError(f"request {request_id} expired without being approved: nothing was done, so "
                              "there is nothing to undo", state=rec.state)
        if rec.state != "confirmed":
            raise WorkerError(f"request {request_id} is {rec.state}; only a confirmed move can be undone",
                              state=rec.state)
        if rec.extra.get("undone_by"):
            raise WorkerError(f"request {request_id} was already undone by {rec.extra['undone_by']}")
        original = rec.request or {}
        return make_request(rule=rec.rule, action=spec.inverse, mode="auto", target=rec.target,
                            evidence=original.get("evidence", {}), detected_at=ledger.clock(),
                            run={"id": f"undo-{request_id}", "index": 0, "total": 1},
                            undo_of={"request_id": request_id, "undo": rec.undo or {}, "by": by},
                            severity=original.get("severity", ""), rule_name=original.get("rule_name", ""))

    async def undo(self, request_id: str, by: str = "", *, claimed_by: str | None = None) -> Outcome:
        """Reverse a confirmed action with its declared inverse (move_to_junk: back to the Inbox or the
        recorded original folder), as a new request in the ledger linked both ways to the original."""
        rec, ledger = self.find(request_id), self.runner.ledger
        undo_req = self._undo_request(rec, by)   # the same refusals as a recorded (queued) undo
        new, created = ledger.receive(undo_req, undo_of=request_id, **_claimed(claimed_by))
        if not created and new.state != "received":
            raise WorkerError(f"this message was already restored once (request {new.request_id} is "
                              f"{new.state})")
        outcome = await self.runner.run_decided(new, undo_req, self._decide(undo_req, approved=True,
                                                                            restore=True))
        if outcome.state in ("confirmed", "submitted"):
            try:
                current = ledger.read(rec.rule, rec.request_id) or rec
                ledger.update(current, undone_by=new.request_id)
            except LedgerConflict:
                log.warning("request %s: could not link undo %s", request_id, new.request_id)
        return outcome


def _claimed(claimed_by: str | None) -> dict[str, str]:
    """The ledger field for a name the caller gave but nobody verified (kept apart from ``*_by``)."""
    return {"claimed_by": claimed_by} if claimed_by else {}
