"""Resubmitting, once, a Defender submission whose call got an ambiguous answer.

A 5xx, 408, timeout or reset on ``analyzedEmails/remediate`` leaves the emails of that call ``submitted``
with ``unconfirmed_submission`` (remediation/actions/email_defender.py): the service may have taken the
call or not, and resubmitting at once would add a duplicate Action-center entry for every email it had
taken. Verification (remediation/verify.py) finds out instead: when EmailEvents still shows such a
message outside the expected folder ``UNCONFIRMED_GRACE`` after the submission, it hands the request
here, and it goes through the worker's own path once more: the row is reopened to ``received``
(``Ledger.reopen_unconfirmed``: once per row, history kept), the rails decide again (the rule is still
the authority: a rule disabled since is not resubmitted), a fresh claim is taken under its own owner,
and Execution writes the intent and runs the action within the delivery's deadline. The requests of one
verification are submitted together (one call per rule, as on the queue path).

A resubmission that stays transient (429 past the retries, no connection) leaves the row ``received``
with ``resubmitted_at``: no queue message will come for it, so the next verification picks it up again
(verify.py), until the normal grace has passed since the reopening; then it is ``failed`` and reported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from core.request import RequestInvalid
from remediation.admission import claim_row
from remediation.claims import Claimed, duplicate, in_flight, new_owner, storage_failure
from remediation.intent import StorageError
from remediation.ledger import IllegalTransition, LedgerConflict, Record
from remediation.outcome import Outcome
from remediation.rails import decide
from remediation.reporting import Report

if TYPE_CHECKING:
    from remediation.worker import Worker

log = logging.getLogger(__name__)

# How long verification waits for an unconfirmed submission to show before resubmitting it. Defender
# usually applies a remediation within minutes, but documents no bound ("It could take up to a few
# hours to remediate ... It's a good idea to retry remediating in such cases",
# https://learn.microsoft.com/defender-office-365/remediate-malicious-email-delivered-office-365): so a
# call it had taken but applies later than this costs one duplicate Action-center entry per email.
UNCONFIRMED_GRACE = timedelta(minutes=15)


async def resubmit(worker: Worker, due: Iterable[tuple[Record, str]]) -> list[Outcome]:
    """Each (row, why) through the worker's path once more; the outcomes, one per row."""
    owner = new_owner("resubmit")
    outcomes: dict[str, Outcome] = {}
    runnable: dict[str, list[Claimed]] = {}
    for rec, why in due:
        try:
            got = _admit(worker, rec, why, owner, outcomes)
        except StorageError as exc:   # this request only: the next verification tries again
            got = None
            req = rec.request or {"id": rec.request_id, "rule": rec.rule}
            outcomes[rec.request_id] = storage_failure(req, exc, rec)
        if got is not None:
            runnable.setdefault(got.request["action"], []).append(got)
    for action, items in runnable.items():
        done, _, _ = await worker.execution.run(action, items)
        outcomes.update(done)
    return list(outcomes.values())


def _admit(worker: Worker, rec: Record, why: str, owner: str,
           outcomes: dict[str, Outcome]) -> Claimed | None:
    """The reopened and claimed row, or None with its outcome in ``outcomes``."""
    ledger = worker.ledger
    try:   # the stored request is a table row: validated like any message
        req = worker.contract.validate(dict(rec.request or {}))
    except RequestInvalid as exc:
        try:
            rec = ledger.transition(rec, "failed", error=f"not resubmitted: stored request invalid: {exc}")
        except (LedgerConflict, IllegalTransition):
            rec = ledger.read(rec.rule, rec.request_id) or rec
        else:
            worker.outbox.add(Report("failed", f"{rec.action} not resubmitted: {exc}", [rec.outcome()]))
        outcomes[rec.request_id] = rec.outcome()
        return None
    if rec.state == "submitted":
        try:
            rec = ledger.reopen_unconfirmed(rec, f"resubmitting once: {why}")
        except (LedgerConflict, IllegalTransition):
            outcomes[rec.request_id] = duplicate(ledger.read(rec.rule, rec.request_id) or rec)
            return None
        log.info("request %s: resubmitting once (%s)", rec.request_id, why)
    if rec.claimed(ledger.clock()):
        outcomes[rec.request_id] = in_flight(rec)
        return None
    decision = _decide(worker, rec, req)
    if decision.kind != "execute":
        outcomes[rec.request_id] = worker.execution.settle(rec, req, decision)
        return None
    return claim_row(ledger, rec, req, owner, worker.lease, outcomes)


def _decide(worker: Worker, rec: Record, req: dict[str, Any]) -> Any:
    """The rails again, as the first submission met them: approved by a person, or an undo."""
    rails = worker.rails
    undo = bool(rec.extra.get("undo_of"))
    return decide(req, settings=rails.settings, tenant=rails.tenant, catalog=rails.catalog,
                  registry=rails.registry, approved=bool(rec.extra.get("approved_by")) or undo, restore=undo,
                  stop=rails.stop() if rails.stop else None)
