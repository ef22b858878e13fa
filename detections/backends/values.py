"""One shape for result values, whichever service sent them, decided by the column's KQL type.

The two services spell the same cell differently:

* ``datetime``: Defender's runHuntingQuery sends text with 7 fractional digits
  (``2024-03-26T09:39:50.7688641Z``, the example response of
  https://learn.microsoft.com/graph/api/security-security-runhuntingquery); Log Analytics' JSON has the
  same, but azure-monitor-query turns it into a ``datetime`` (microseconds: 6 digits).
* ``dynamic``: Log Analytics sends dynamic cells as JSON *text* (the REST API's tables carry them as
  strings and azure-monitor-query leaves them so); Defender sends JSON arrays and objects.

Rules, findings and cards must see one value for one fact, so every backend hands on: datetimes as
ISO 8601 UTC text truncated to microseconds, ``...Z``, fraction left out when zero (what the local engine
gives); dynamic arrays and objects as Python lists and dicts. Only columns typed datetime or dynamic
are touched: a *string* column that merely looks like a date or JSON is left exactly as sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

# Type names compared case-insensitively: Log Analytics writes ``datetime``/``dynamic``, Graph's hunting
# schema ``DateTime``/``Dynamic``; ``Object`` (the .NET-style name some hunting captures use) is dynamic.
_DATETIME = {"datetime", "date"}
_DYNAMIC = {"dynamic", "object"}
_ISO = re.compile(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$")


def iso_utc(moment: datetime) -> str:
    """``moment`` as ISO 8601 UTC text, microseconds when not zero, ``Z`` (naive means UTC)."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{moment.microsecond:06d}" if moment.microsecond else "") + "Z"


def datetime_value(value: Any) -> Any:
    """A datetime cell in the one shape; text that is not a datetime is returned unchanged."""
    if isinstance(value, datetime):
        return iso_utc(value)
    if not isinstance(value, str):
        return value
    m = _ISO.match(value.strip())
    if not m:
        return value
    base, frac, zone = m.groups()
    # Python keeps microseconds: the 7th digit Defender sends is cut (not rounded), as
    # azure-monitor-query's parser does for Sentinel, so both give the same text.
    text = base.replace(" ", "T") + (f".{frac[:6].ljust(6, '0')}" if frac else "")
    text += "+00:00" if zone in (None, "Z") else zone
    try:
        return iso_utc(datetime.fromisoformat(text))
    except ValueError:
        return value


def dynamic_value(value: Any) -> Any:
    """A dynamic cell: JSON text of an array or object becomes the list or dict; anything else as sent
    (a dynamic string stays a string: parsing ``"123"`` would silently make it a number)."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def normalise_rows(columns: Sequence[tuple[str, str]],
                   rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with datetime and dynamic cells in the one shape (by the columns' KQL types)."""
    kinds: dict[str, str] = {}
    for name, ctype in columns:
        t = str(ctype).lower()
        if t in _DATETIME:
            kinds[name] = "datetime"
        elif t in _DYNAMIC:
            kinds[name] = "dynamic"
    out = []
    for row in rows:
        fixed = dict(row)
        for name, kind in kinds.items():
            if name in fixed and fixed[name] is not None:
                value = fixed[name]
                fixed[name] = datetime_value(value) if kind == "datetime" else dynamic_value(value)
        out.append(fixed)
    return out
