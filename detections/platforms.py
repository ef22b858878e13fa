"""What differs between the two services a rule runs on: Defender advanced hunting and Sentinel.

Rules are written once, against advanced hunting's tables. Sentinel stores the same tables with two
differences that matter to the email rules and to verification:

* Sentinel's ``EmailEvents`` has no ``LatestDeliveryLocation`` / ``LatestDeliveryAction``: the
  streamed table gets a new row each time a message's delivery location changes (column list:
  https://learn.microsoft.com/azure/azure-monitor/reference/tables/emailevents; Defender's custom
  detections likewise leave those two columns out of the streamed, "continuous" EmailEvents:
  https://learn.microsoft.com/defender-xdr/custom-detection-rules).
* every table also carries ``TimeGenerated`` (ingestion-side time) beside ``Timestamp``.

So on Sentinel a small *prelude* goes in front of any query that reads ``EmailEvents``: a ``let`` that
shadows the table with Defender's shape, one row per (NetworkMessageId, RecipientEmailAddress), taken
from the latest row (``arg_max(TimeGenerated, *)``), whose DeliveryLocation/DeliveryAction become
``LatestDeliveryLocation``/``LatestDeliveryAction``, with ``Timestamp`` kept at the first row's (the
delivery time, as on Defender). Microsoft's parser accepts a ``let`` shadowing a table of the same
name (tests/detections/test_platforms.py binds it). Rule files stay one query; the backend, the
parser check and the rule-test runner all add the same prelude (docs/rules.md, "One query, two
platforms").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

PLATFORMS = ("defender", "sentinel")
LATEST_COLUMNS = ("LatestDeliveryLocation", "LatestDeliveryAction")

# One line, so parser positions in the rule's own text move by exactly one line.
SENTINEL_EMAILEVENTS_VIEW = (
    "let EmailEvents = EmailEvents"
    " | summarize arg_max(TimeGenerated, *), FirstTimestamp = min(Timestamp)"
    " by NetworkMessageId, RecipientEmailAddress"
    " | extend Timestamp = FirstTimestamp, LatestDeliveryLocation = DeliveryLocation,"
    " LatestDeliveryAction = DeliveryAction"
    " | project-away FirstTimestamp;"
)

_STRING_OR_COMMENT = re.compile(r"""//[^\n]*|@?"(?:[^"\\\n]|\\.)*"|@?'(?:[^'\\\n]|\\.)*'""")
_EMAILEVENTS = re.compile(r"(?<![\w.])EmailEvents(?!\w)")


def reads_emailevents(query: str) -> bool:
    """The query names the EmailEvents table (outside string literals and comments)."""
    return bool(_EMAILEVENTS.search(_STRING_OR_COMMENT.sub(" ", query)))


def prelude(platform: str, query: str, shape: str = "defender") -> str:
    """The statements ``platform`` needs in front of ``query`` ("" when none).

    ``shape`` is the platform the query was written for (the rule's ``platform``). A query written for
    Sentinel's own row-per-change EmailEvents (``shape="sentinel"``, e.g. one of Microsoft's analytics
    rules) keeps its meaning: no view goes in front of it."""
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r} (expected one of {', '.join(PLATFORMS)})")
    if shape not in PLATFORMS:
        raise ValueError(f"unknown query shape {shape!r} (expected one of {', '.join(PLATFORMS)})")
    if platform == "sentinel" and shape == "defender" and reads_emailevents(query):
        return SENTINEL_EMAILEVENTS_VIEW + "\n"
    return ""


def for_platform(query: str, platform: str, shape: str = "defender") -> str:
    """``query`` as it must be sent to ``platform``: its prelude, then the query unchanged."""
    return prelude(platform, query, shape) + query


def platforms_for(rule_platform: str) -> tuple[str, ...]:
    """Where a rule must work: a Defender-shaped rule on both services (Sentinel through the prelude);
    a ``platform: sentinel`` rule may use ``TimeGenerated``, which Defender lacks, so only there."""
    return PLATFORMS if rule_platform == "defender" else ("sentinel",)


def sentinel_columns(table: str, columns: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """A Defender table's columns as Sentinel has them: ``TimeGenerated`` added, and EmailEvents
    without the Latest* columns (types are passed through in whatever spelling ``columns`` uses)."""
    cols = [(c, t) for c, t in columns if not (table == "EmailEvents" and c in LATEST_COLUMNS)]
    if "TimeGenerated" not in {c for c, _ in cols}:
        dt = next((t for c, t in columns if c == "Timestamp"), "datetime")
        cols.append(("TimeGenerated", dt))
    return cols


def _when(value: Any, now: datetime) -> datetime | None:
    from detections.timestamps import parse_datetime

    try:
        return parse_datetime(value, now) if value is not None else None
    except ValueError:
        return None   # left as given: the local engine names the bad value and the row


def sentinel_rows(tables: Mapping[str, Iterable[Mapping[str, Any]]], now: datetime,
                  *, moved_after: timedelta = timedelta(minutes=1)) -> dict[str, list[dict[str, Any]]]:
    """A rule case's Defender-shaped rows as Sentinel would stream them.

    An EmailEvents row that gives a Latest* column becomes two rows: the delivery (its own
    DeliveryLocation/DeliveryAction, ``TimeGenerated`` = ``Timestamp``) and, ``moved_after`` later, the
    row Sentinel adds when the location changed (DeliveryLocation/DeliveryAction = the Latest* values,
    later ``Timestamp`` and ``TimeGenerated``). Rows without Latest* columns, and other tables, pass
    through with ``TimeGenerated`` defaulting to ``Timestamp``.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for table, rows in tables.items():
        converted: list[dict[str, Any]] = []
        for row in rows:
            if not isinstance(row, Mapping):
                converted.append(row)  # type: ignore[arg-type]  # the engine reports it with its position
                continue
            row = dict(row)
            if table != "EmailEvents" or not any(c in row for c in LATEST_COLUMNS):
                converted.append(row)
                continue
            latest_location = row.pop("LatestDeliveryLocation", None)
            latest_action = row.pop("LatestDeliveryAction", None)
            delivered = _when(row.get("Timestamp"), now)
            first = dict(row)
            if delivered is not None:
                first.setdefault("TimeGenerated", delivered.astimezone(UTC).isoformat())
            moved = dict(row)
            moved["DeliveryLocation"] = latest_location
            moved["DeliveryAction"] = latest_action
            if delivered is not None:
                later = (delivered + moved_after).astimezone(UTC).isoformat()
                moved["Timestamp"] = later
                moved["TimeGenerated"] = later
            converted += [first, moved]
        out[table] = converted
    return out
