"""A delivery's first steps for one request: record it, decide, and claim the row to execute it.

``admit`` gives back the row to execute, or the request's outcome when there is nothing to run
(already handled, being executed by another delivery, or settled by the rails: held, skipped, dry run).
``claim_row`` claims that row for the delivery (claims.py). Both let storage errors through to the
pipeline, which gives them to the one request they concern (remediation/worker.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from core.settings import Settings
from core.tenant import TenantConfig
from detections.catalog import Rule
from remediation.actions.registry import Registry
from remediation.claims import Claimed, claim, duplicate, in_flight, reopen, storage_failure
from remediation.execution import Execution
from remediation.intent import StorageError
from remediation.ledger import Ledger, Record
from remediation.outcome import Outcome
from remediation.rails import Decision, decide
from remediation.stop import StopState


@dataclass(frozen=True)
class Rails:
    """What the rails decide with."""

    settings: Settings
    tenant: TenantConfig
    catalog: Mapping[str, Rule]
    registry: Registry
    stop: Callable[[], StopState] | None = None   # the emergency stop (cached, remediation/stop.py)

    def decide(self, req: dict[str, Any], *, approved: bool = False, restore: bool = False) -> Decision:
        return decide(req, settings=self.settings, tenant=self.tenant, catalog=self.catalog,
                      registry=self.registry, approved=approved, restore=restore,
                      stop=self.stop() if self.stop else None)


def admit(req: dict[str, Any], ledger: Ledger, execution: Execution, rails: Rails) -> Outcome | Record:
    """The request's row when it is to be executed, else its outcome (duplicate, in flight, settled)."""
    rec, created = ledger.receive(req)
    decision: Decision | None = None
    if not created and rec.dry_run_skip:
        # Settled by a dry run only. The same dry-run delivery again is a no-op; a request
        # that would now run (rule or RESPONDER_DRY_RUN gone live) reopens the row.
        decision = rails.decide(req)
        if decision.kind != "dry_run":
            rec = reopen(ledger, rec, req)
    # A person approved it (approval page, CLI) and enqueued it for this worker: run it as approved.
    # The claim below makes that happen once however many deliveries arrive.
    approved = not created and rec.state == "approved"
    if not created and rec.state not in ("received", "approved"):
        return duplicate(rec)
    if rec.claimed(ledger.clock()):
        # Someone is executing it right now: neither act nor settle it under their feet.
        return in_flight(rec)
    if decision is None:
        # An undo a person recorded (Decisions.record_undo wrote undo_of on the row before queueing it):
        # a restore, run as Decisions.undo runs it. A message claiming undo_of alone is not enough.
        undo = (not created and bool(rec.extra.get("undo_of"))
                and rec.extra["undo_of"] == (req.get("undo_of") or {}).get("request_id"))
        decision = rails.decide(req, approved=approved or undo, restore=undo)
    if decision.kind != "execute":
        return execution.settle(rec, req, decision)
    return rec


def claim_row(ledger: Ledger, rec: Record, req: dict[str, Any], owner: str, lease: timedelta,
              outcomes: dict[str, Outcome]) -> Claimed | None:
    """``rec`` claimed by ``owner``, or None with the request's outcome put in ``outcomes``."""
    try:
        claimed = claim(ledger, rec, owner, lease=lease)
        if claimed is not None:
            return Claimed(req, claimed)
        fresh = ledger.read(rec.rule, rec.request_id) or rec
    except StorageError as exc:
        outcomes[req["id"]] = storage_failure(req, exc, rec)
        return None
    outcomes[req["id"]] = (duplicate(fresh) if fresh.state not in ("received", "approved")
                           else in_flight(fresh))
    return None
