"""What a query needs in front of it on one platform, so that a rule written once runs on both.

Defender's advanced hunting ``EmailEvents`` has ``LatestDeliveryLocation``/``LatestDeliveryAction``
(where each copy is now). Sentinel's streamed copy of the table has no such columns: it gets a new row
each time a copy moves. On Sentinel the rule therefore reads a view that keeps the latest row of each
copy (``arg_max(TimeGenerated, *)`` per NetworkMessageId and recipient) and takes the Latest* values
from that row's DeliveryLocation/DeliveryAction. The view is a ``let`` that shadows the table name, so
the rule's own text does not change. (Columns: learn.microsoft.com/azure/azure-monitor/reference/tables/
emailevents and learn.microsoft.com/defender-xdr/advanced-hunting-emailevents-table.)

``prelude(platform, tables, columns)`` is the one place that decides this; callers pass the table and
column names the query reads (``query_names`` finds them) and put the result in front of the bound query.
"""

from __future__ import annotations

import re
from collections.abc import Collection

PLATFORMS = ("defender", "sentinel")

_LATEST_COLUMNS = {"LatestDeliveryLocation", "LatestDeliveryAction"}

_SENTINEL_EMAIL_LATEST = (
    "let EmailEvents = EmailEvents\n"
    "    | summarize arg_max(TimeGenerated, *) by NetworkMessageId, RecipientEmailAddress\n"
    "    | extend LatestDeliveryLocation = DeliveryLocation, LatestDeliveryAction = DeliveryAction;\n"
)

# Comments and string literals (plain, verbatim and multi-line) are not names the query reads.
_NOT_CODE = re.compile(r'//[^\n]*|@"(?:[^"]|"")*"|@\'(?:[^\']|\'\')*\'|"(?:[^"\\\n]|\\.)*"'
                       r"|'(?:[^'\\\n]|\\.)*'|```.*?```", re.S)
_NAME = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")


def query_names(query: str) -> set[str]:
    """Every identifier in the query's code (comments and string literals left out)."""
    return set(_NAME.findall(_NOT_CODE.sub(" ", query)))


def prelude(platform: str, tables: Collection[str], columns: Collection[str]) -> str:
    """The statements to put before a query on ``platform`` ('' when none are needed)."""
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r} (known: {', '.join(PLATFORMS)})")
    if platform == "sentinel" and "EmailEvents" in tables and _LATEST_COLUMNS & set(columns):
        return _SENTINEL_EMAIL_LATEST
    return ""
