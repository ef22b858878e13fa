"""Write-ahead intent, and results recorded despite a flaky ledger.

Before an action is called for a claimed request, the row gets ``intent_at``/``intent_by``
(ETag-guarded, so only the claim holder can write it). A row with ``intent_at`` therefore means "some
delivery may have acted on the service already"; the next delivery passes such requests to the action
in ``ActionContext.prior_attempts`` and the action checks the service's state before acting again
(remediation/actions/). If the intent cannot be written, the request is not acted on.

After the call, the result is written with a few retries when the write fails with a storage error
(5xx, a connection reset or timeout): a revoke that succeeded must not be repeated because one ledger
write failed. A retry that meets 412 may be our own earlier write that landed (the answer was lost):
the row is re-read and accepted when it holds our result.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError, ServiceResponseError

from remediation.ledger import Ledger, LedgerConflict, Record

log = logging.getLogger(__name__)

# Pauses between tries of a result write (seconds): about 3.5 s in all, well inside the lease's margin.
RESULT_RETRY_DELAYS = (0.5, 1.0, 2.0)
# Any error from the storage SDK that the ledger did not turn into a conflict or "not found".
StorageError = AzureError


def transient_storage_error(exc: BaseException) -> bool:
    """A storage failure a retry may cure: no answer, or 408/429/5xx (Table storage's OperationTimedOut
    is 500, ServerBusy 503: https://learn.microsoft.com/rest/api/storageservices/table-service-error-codes)."""
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return True
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        return status >= 500 or status in (408, 429)
    return False


def describe(exc: BaseException) -> str:
    """One line for the outcome: the error type and the start of its message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


def write_intent(ledger: Ledger, rec: Record, owner: str) -> Record:
    """The row marked "about to act" by ``owner``. Raises LedgerConflict (the claim was lost) or a
    StorageError; either way the caller must not act."""
    at = rec.extra.get("intent_at") or ledger.iso_now()
    return ledger.update(rec, intent_at=at, intent_by=owner)


def prior_intent(rec: Record) -> str | None:
    """When an earlier delivery was about to act on this row, if one was."""
    value = rec.extra.get("intent_at")
    return value if isinstance(value, str) and value else None


def ambiguous_prior(rec: Record) -> bool:
    """The latest delivery that was about to act on this row (``intent_by``) ended without the action's
    answer being recorded: it crashed, its result write was lost, or its call was cut off (deadline, an
    exception). Not when it recorded a result (``executed_by``) or gave the row back after the action
    answered transient (``released_by``: a 429 or a connection never made, so nothing was processed).
    Actions with no state to check (Defender's remediate) treat these as "maybe done", the others as
    prior attempts (docs/remediation.md, "Work done before an error")."""
    owner = rec.extra.get("intent_by")
    if prior_intent(rec) is None:
        return False
    return not owner or owner not in (rec.extra.get("executed_by"), rec.extra.get("released_by"))


async def record_result(ledger: Ledger, rec: Record, state: str, fields: dict[str, Any], *,
                        sleep: Callable[[float], Awaitable[Any]],
                        delays: tuple[float, ...] = RESULT_RETRY_DELAYS) -> Record:
    """``ledger.transition`` retried on transient storage errors. Raises LedgerConflict /
    IllegalTransition (someone else owns the row now) or the last StorageError."""
    tried_before = False
    for delay in (*delays, None):
        try:
            return ledger.transition(rec, state, **fields)
        except LedgerConflict:
            if tried_before:   # did our previous try land after all?
                fresh = ledger.read(rec.rule, rec.request_id)
                if fresh is not None and fresh.state == state and \
                        fresh.extra.get("executed_by") == fields.get("executed_by"):
                    return fresh
            raise
        except StorageError as exc:
            if delay is None or not transient_storage_error(exc):
                raise
            log.warning("request %s: result %s not written yet (%s); retrying in %.1fs",
                        rec.request_id, state, describe(exc), delay)
            tried_before = True
            await sleep(delay)
    raise AssertionError("unreachable")
