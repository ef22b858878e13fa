"""Streaming forms of the mail rules (issue 15, docs/push.md).

The push path sees one mail at a time, as Graph change notifications announce it, instead of a
table of EmailEvents. A streaming rule keeps what it must remember (per sender, per campaign) in a
``StreamState`` and, when its condition is met, returns result rows with the same columns as the
rule's KQL projection, so ``detections.findings.requests_from_rows`` makes the same requests with the
same ids as the scheduled path and the two deduplicate against each other in the ledger.

The rule YAML stays the one definition of the parameters (threshold, window, domains, mailboxes):
a streaming rule reads them resolved (``detections.params.resolve_params``), never its own copies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class MailFact:
    """One mail as a protected mailbox holds it: what a streaming rule may read.

    The push worker builds it from the Graph message (push/mailfacts.py); the conformance tests build
    it from the EmailEvents/EmailUrlInfo rows of a rule's test cases (detections/streaming/tables.py).
    Field names follow the EmailEvents columns they stand for.
    """

    timestamp: datetime                 # EmailEvents.Timestamp: received (inbound) or sent (outbound)
    direction: str                      # EmailDirection: Inbound | Outbound | Intra-org
    mailbox: str                        # the protected mailbox holding this copy, lower case
    network_message_id: str             # NetworkMessageId (X-MS-Exchange-Organization-Network-Message-Id)
    internet_message_id: str = ""       # InternetMessageId
    recipient_object_id: str = ""       # RecipientObjectId: the mailbox's Entra object id
    sender_mail_from: str = ""          # SenderMailFromAddress: the envelope sender (Return-Path)
    sender_from: str = ""               # SenderFromAddress: the From header
    recipients: tuple[str, ...] = ()    # RecipientEmailAddress(es): the mailbox (inbound) or who it went to
    subject: str = ""
    urls: tuple[str, ...] = ()          # EmailUrlInfo.Url of this message
    in_inbox: bool = True               # LatestDeliveryLocation =~ "Inbox/folder" when observed
    cluster_id: str = ""                # EmailClusterId; Graph has no equivalent, so empty on the push path
    report_id: str = ""                 # ReportId (empty on the push path)


class StreamState(Protocol):
    """Key-value state with optimistic concurrency: notifications for several mailboxes of one campaign
    are processed concurrently, so a write must not silently overwrite another's."""

    async def load(self, key: str) -> tuple[dict[str, Any], str | None]:
        """The value under ``key`` and its version (``({}, None)`` when absent)."""
        ...

    async def save(self, key: str, value: dict[str, Any], version: str | None) -> bool:
        """Write ``value`` if the stored version is still ``version`` (None: only if absent).
        False when another writer got there first: load again and retry."""
        ...


class MemoryState:
    """A ``StreamState`` in a dict (tests, benchmark, demo); push/state.py has the Table storage one."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[dict[str, Any], int]] = {}

    async def load(self, key: str) -> tuple[dict[str, Any], str | None]:
        if key not in self._data:
            return {}, None
        value, version = self._data[key]
        return _copy(value), str(version)

    async def save(self, key: str, value: dict[str, Any], version: str | None) -> bool:
        current = self._data.get(key)
        if (current is None) != (version is None) or (current and str(current[1]) != version):
            return False
        self._data[key] = (_copy(value), (current[1] + 1) if current else 1)
        return True


def _copy(value: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(value))


# observe(fact, params, state) -> result rows with the rule's KQL projection columns.
Observe = Callable[[MailFact, Mapping[str, Any], StreamState], Awaitable[list[dict[str, Any]]]]
