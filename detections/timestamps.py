"""The Timestamp forms of test rows (rule test cases, local table files): read the same by the local KQL
engine (detections/backends/local.py) and by the streaming form's facts (detections/streaming/tables.py)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from detections.params import parse_timespan

_RELATIVE = re.compile(r"^now\s*(?:([+-])\s*(\S+))?$")


def parse_datetime(value: Any, now: datetime) -> datetime:
    """ISO 8601 (naive means UTC, as in Kusto) or ``now``, ``now-10m``, ``now+1h``."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 datetime or now-<timespan>, got {value!r}")
    rel = _RELATIVE.match(value.strip())
    if rel:
        sign, span = rel.groups()
        if not sign:
            return now
        delta = parse_timespan(span)
        return now - delta if sign == "-" else now + delta
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected an ISO 8601 datetime or now-<timespan>, got {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
