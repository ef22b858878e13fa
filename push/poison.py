"""What the push worker puts on ``<RESPONDER_PUSH_QUEUE>-poison`` for a message that is not a valid
push-notification/1, and how ``push_poison`` reads it back.

A retry cannot fix an invalid message, so it goes to the poison queue at once (not after maxDequeueCount
deliveries), wrapped in an envelope that keeps the original body byte for byte plus why it was refused:

    {"schema": "push-poison/1", "reason": "<the NotificationInvalid text: names the field, never a value>",
     "queue_message_id": "..", "dequeue_count": 1, "poisoned_at": "..Z",
     "body": "<the original body>"}            (or "body_base64" when the body is not UTF-8)

The envelope is for people reading the queue (Storage Explorer shows it as text). ``push_poison`` trusts
none of it: the queue is writable by anything with the storage data role, so the reason it logs is
recomputed from the body by the parser, whose text never echoes a value.

``push_poison`` takes the message off the queue when it returns, so it first keeps the body (``keep``) in
the push table for ``KEEP_FOR``: PartitionKey ``poisoned``, RowKey the SHA-256 of the queue message id (a
redelivery writes the same row), the body as a binary property (an Edm.Binary holds 64 KiB, a queue message's
body at most 48 KiB), the outcome, the parser's reason, the delivery count and ``KeepUntil``, after which the
subscription timer's cleanup (push/cleanup.py) deletes it. Bad input loses nothing, and no log line ever
carries it.

Size: a queue message holds at most 64 KiB, and the host base64-encodes what it writes (host.json
``messageEncoding``), so the envelope must be at most 48 KiB of UTF-8
(https://learn.microsoft.com/rest/api/storageservices/put-message). A body whose envelope would be
larger goes to the poison queue as it came (still untouched; ``push_poison`` parses it again for why).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.data.tables import UpdateMode

SCHEMA = "push-poison/1"
PARTITION = "poisoned"
KEEP_FOR = timedelta(days=14)
MAX_ENVELOPE_BYTES = 48 * 1024          # 64 KiB after the host's base64 encoding
_FIELDS = {"schema", "reason", "queue_message_id", "dequeue_count", "poisoned_at", "body", "body_base64"}


class PoisonTooLarge(ValueError):
    """A body that fits neither in an envelope nor, not being UTF-8, as the text of a queue message."""


@dataclass(frozen=True)
class Poisoned:
    """A message read off the push poison queue: the original body, and whether the worker refused it
    (``refused``: an envelope) or the host gave up on it after maxDequeueCount deliveries."""

    body: bytes
    refused: bool


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def envelope(body: bytes, reason: str, *, queue_message_id: str | None, dequeue_count: int,
             now: datetime) -> str:
    """The poison queue message for an invalid ``body`` (module doc)."""
    item: dict[str, Any] = {"schema": SCHEMA, "reason": reason[:500], "queue_message_id": queue_message_id,
                            "dequeue_count": dequeue_count, "poisoned_at": _iso(now)}
    try:
        text = body.decode("utf-8")
        item["body"] = text
    except UnicodeDecodeError:
        text = None
        item["body_base64"] = base64.b64encode(body).decode("ascii")
    out = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
    if len(out.encode("utf-8")) <= MAX_ENVELOPE_BYTES:
        return out
    if text is not None:
        return text          # as it came: it was a queue message, so it fits in one again
    raise PoisonTooLarge(f"(message): {len(body)} bytes, not UTF-8: too large for a poison envelope")


def read(body: bytes) -> Poisoned:
    """A poison queue message: an envelope gives back its original body; anything else is the original."""
    try:
        item = json.loads(body)
    except (ValueError, RecursionError):
        return Poisoned(body, refused=False)
    if not isinstance(item, dict) or item.get("schema") != SCHEMA or not set(item) <= _FIELDS:
        return Poisoned(body, refused=False)
    if isinstance(item.get("body"), str) and "body_base64" not in item:
        try:
            return Poisoned(item["body"].encode("utf-8"), refused=True)
        except UnicodeEncodeError:      # a lone surrogate escape: not an envelope the worker wrote
            return Poisoned(body, refused=False)
    if isinstance(item.get("body_base64"), str) and "body" not in item:
        try:
            return Poisoned(base64.b64decode(item["body_base64"], validate=True), refused=True)
        except (binascii.Error, ValueError):
            pass
    return Poisoned(body, refused=False)    # not one of ours after all: the host's poison, as it came


async def keep(table: Any, body: bytes, *, outcome: str, reason: str | None, queue_message_id: str | None,
               deliveries: int, now: datetime) -> str:
    """Keep a poisoned message's body in the push table (module doc); returns the row key."""
    rk = hashlib.sha256(str(queue_message_id or "").encode("utf-8")).hexdigest()
    await table.upsert_entity({
        "PartitionKey": PARTITION, "RowKey": rk, "Body": body, "Bytes": len(body), "Outcome": outcome,
        "Reason": (reason or "")[:500], "Deliveries": deliveries, "PoisonedAt": _iso(now),
        "KeepUntil": _iso(now + KEEP_FOR)}, mode=UpdateMode.REPLACE)
    return rk
