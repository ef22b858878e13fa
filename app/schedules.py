"""Timer schedules: NCRONTAB expressions derived from a rule's ``queryFrequency``, or overridden.

The Functions timer trigger takes 6-field NCRONTAB (``{second} {minute} {hour} {day} {month}
{day-of-week}``). Where a schedule comes from, first match wins:

1. the app setting ``RESPONDER_SCHEDULE_<SLUG>`` (slug upper-cased, ``-`` -> ``_``), so an operator can
   change one rule's cadence in the portal without touching files;
2. the tenant config ``rules.<slug>.schedule``;
3. derived from ``queryFrequency``.

Derived schedules fire on wall-clock boundaries (every 5 minutes at :00, :05, ...), so a frequency
must divide the hour (minutes) or the day (hours); anything else is rounded *down* to the nearest
one that does: running more often than asked only costs quota, running less often widens the gap a
finding can sit in an Inbox. The second field is a per-rule offset (from a hash of the slug) so
rules sharing a frequency do not all hit the hunting API in the same second.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

SCHEDULE_SETTING_PREFIX = "RESPONDER_SCHEDULE_"
# The Functions host accepts names that start with a letter and hold letters, digits, _ and -.
FUNCTION_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,126}$")

_MINUTE_STEPS = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)
_HOUR_STEPS = (1, 2, 3, 4, 6, 8, 12)

# Field ranges, in NCRONTAB order. Month and day-of-week also take names.
_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12),
           ("day-of-week", 0, 6))
_NAMES = {
    "month": {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep",
                                               "oct", "nov", "dec"))},
    "day-of-week": {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))},
}
_ITEM = re.compile(r"^(?:(\*)|([A-Za-z0-9]+)(?:-([A-Za-z0-9]+))?)(?:/(\d+))?$")


class ScheduleError(ValueError):
    """A schedule is not valid 6-field NCRONTAB; the message says which field and where it came from."""


@dataclass(frozen=True)
class TimerSpec:
    """One rule's timer function: what the host indexes."""

    slug: str
    function_name: str
    schedule: str
    # "app setting RESPONDER_SCHEDULE_X" | "tenant config rules.x.schedule" | "queryFrequency 5m"
    source: str


def schedule_setting(slug: str) -> str:
    """The app setting that overrides a rule's schedule."""
    return SCHEDULE_SETTING_PREFIX + slug.upper().replace("-", "_")


def function_name(slug: str) -> str:
    """The timer function's name: ``rule_`` + the slug with ``-`` as ``_`` (valid for the host and
    readable in the portal's function list next to the worker and HTTP functions)."""
    name = "rule_" + slug.replace("-", "_")
    if not FUNCTION_NAME_RE.match(name):
        raise ScheduleError(f"rule {slug}: {name!r} is not a valid function name")
    return name


def _offsets(slug: str) -> tuple[int, int]:
    """(second, minute) offsets derived from the slug: stable across restarts and instances."""
    digest = hashlib.sha256(slug.encode("utf-8")).digest()
    return int.from_bytes(digest[:2], "big") % 60, int.from_bytes(digest[2:4], "big") % 60


def from_frequency(frequency: timedelta, slug: str) -> str:
    """The NCRONTAB schedule that runs a rule every ``frequency`` (rounded down, see module doc)."""
    sec, minute = _offsets(slug)
    if frequency < timedelta(minutes=1):
        raise ScheduleError(f"rule {slug}: queryFrequency {frequency} is under a minute")
    if frequency < timedelta(hours=1):
        minutes = int(frequency.total_seconds() // 60)
        step = max(s for s in _MINUTE_STEPS if s <= minutes)
        return f"{sec} */{step} * * * *" if step > 1 else f"{sec} * * * * *"
    if frequency < timedelta(days=1):
        hours = int(frequency.total_seconds() // 3600)
        step = max(s for s in _HOUR_STEPS if s <= hours)
        return f"{sec} {minute} */{step} * * *" if step > 1 else f"{sec} {minute} * * * *"
    # Daily or slower: once a day (the hunting tables keep 30 days; a daily rule's window covers it).
    return f"{sec} {minute} 0 * * *"


def _value(field: str, text: str, lo: int, hi: int) -> int:
    names = _NAMES.get(field, {})
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ScheduleError(f"{field} field: {text!r} is not a number")
    value = int(text)
    if not lo <= value <= hi:
        raise ScheduleError(f"{field} field: {value} is outside {lo}-{hi}")
    return value


def validate(expr: str) -> str:
    """Return ``expr`` normalised (single spaces) if it is valid 6-field NCRONTAB, else raise."""
    parts = expr.split()
    if len(parts) != 6:
        raise ScheduleError(f"{expr!r}: NCRONTAB needs 6 fields (second minute hour day month day-of-week), "
                            f"got {len(parts)}")
    for part, (field, lo, hi) in zip(parts, _FIELDS, strict=True):
        for item in part.split(","):
            m = _ITEM.match(item)
            if not m:
                raise ScheduleError(f"{expr!r}: {field} field: cannot read {item!r}")
            star, start, end, step = m.groups()
            if step is not None and int(step) < 1:
                raise ScheduleError(f"{expr!r}: {field} field: step must be at least 1")
            if star:
                continue
            a = _value(field, start, lo, hi)
            if end is not None and _value(field, end, lo, hi) < a:
                raise ScheduleError(f"{expr!r}: {field} field: range {item!r} runs backwards")
    return " ".join(parts)


def resolve(slug: str, frequency: timedelta, *, tenant_schedule: str | None,
            env: Mapping[str, str]) -> TimerSpec:
    """The timer of one rule, from the first source that sets it (module doc)."""
    setting = schedule_setting(slug)
    for raw, source in ((env.get(setting, "").strip(), f"app setting {setting}"),
                        ((tenant_schedule or "").strip(), f"tenant config rules.{slug}.schedule")):
        if raw:
            try:
                return TimerSpec(slug, function_name(slug), validate(raw), source)
            except ScheduleError as exc:
                raise ScheduleError(f"{source}: {exc}") from None
    return TimerSpec(slug, function_name(slug), from_frequency(frequency, slug),
                     f"queryFrequency {_span(frequency)}")


def _span(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"
