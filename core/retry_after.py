"""Retry-After, as every service we call may send it (Graph, Exchange admin, Log Analytics, Teams).

RFC 9110 section 10.2.3: the value is either a number of seconds or an HTTP-date
(https://www.rfc-editor.org/rfc/rfc9110#field.retry-after); Microsoft Graph sends seconds
(https://learn.microsoft.com/graph/throttling#best-practices-to-handle-throttling). Anything else is
no hint (None), never an error: a bad header must not turn a retryable failure into a crash.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait (never negative), or None when ``value`` is absent or not a valid Retry-After."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
