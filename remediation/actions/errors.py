"""Turning what Graph, httpx and the Exchange client raise into an ActionResult.

Transient: 429, 5xx, timeouts and connection errors (a retry may succeed; Retry-After is kept).
Permanent: every other 4xx (400 bad request, 403 missing permission or out of RBAC scope, 404 no such
user or message): retrying cannot help, so the reason is recorded and on-call is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from kiota_abstractions.api_error import APIError

from core.retry_after import parse_retry_after
from remediation.actions.base import ActionResult

SLOTS_BUSY_RETRY = 10.0   # seconds: how long a worker waits before retrying a mailbox that stayed busy


@dataclass(frozen=True)
class Failure:
    transient: bool
    reason: str
    status: int | None = None
    retry_after: float | None = None

    def result(self, request_id: str, what: str) -> ActionResult:
        return ActionResult(request_id, "failed", detail=f"{what}: {self.reason}", error=self.reason,
                            transient=self.transient, retry_after=self.retry_after)


def is_transient_status(status: int | None) -> bool:
    return status is None or status == 429 or status == 408 or status >= 500


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    try:
        value = headers.get(name)
    except AttributeError:
        return None
    if isinstance(value, (set, list, tuple)):
        value = next(iter(value), None)
    return value


def describe(exc: BaseException) -> Failure:
    """Classify an exception from a Graph (kiota) or httpx call."""
    from remediation.exchange import ExchangeError

    if isinstance(exc, ExchangeError):
        return Failure(is_transient_status(exc.status), str(exc), exc.status, exc.retry_after)
    if isinstance(exc, APIError):
        status = exc.response_status_code
        err = getattr(exc, "error", None)
        code = getattr(err, "code", None)
        message = getattr(err, "message", None) or exc.message or type(exc).__name__
        reason = f"HTTP {status}" + (f" {code}" if code else "") + f": {message}"
        retry = parse_retry_after(_header(exc.response_headers, "retry-after"))
        return Failure(is_transient_status(status), reason, status, retry)
    if isinstance(exc, httpx.TimeoutException):
        return Failure(True, f"timed out: {type(exc).__name__}")
    if isinstance(exc, httpx.TransportError):
        return Failure(True, f"connection failed: {type(exc).__name__}: {exc}")
    from remediation.mailbox_slots import SlotsBusy

    if isinstance(exc, SlotsBusy):   # other instances hold the mailbox's slots: a later retry gets one
        return Failure(True, str(exc), retry_after=SLOTS_BUSY_RETRY)
    if isinstance(exc, TimeoutError):
        return Failure(True, "timed out")
    # Anything else is a bug or an unforeseen error: report it as transient so the worker retries a
    # bounded number of times and then the queue's poison handling takes over, never silently drops it.
    return Failure(True, f"{type(exc).__name__}: {exc}")
