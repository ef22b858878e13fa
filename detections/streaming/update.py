"""Read-modify-write of one StreamState key with optimistic concurrency.

Notifications for several mailboxes of one campaign are processed at the same time (the push worker
is a queue trigger with several messages in flight, on several instances). Each writer loads the
value and its version, computes the new value, and saves only if nobody wrote in between; otherwise it
loads again and recomputes from the fresh value. So what one writer emitted (and marked as emitted)
is seen by the next, and a copy's row is returned once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from detections.streaming import StreamState

T = TypeVar("T")

# A handful of concurrent writers per campaign at most (one per protected mailbox): 16 rounds is far
# more than contention needs; running out means something keeps overwriting the key.
MAX_ATTEMPTS = 16


# A state value's JSON text (json.dumps, ASCII) is kept under this many characters, so it fits one
# Table storage string property: "String values may be up to 64 KiB in size", UTF-16 encoded
# (learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model).
STATE_BUDGET = 30_000
SUBJECT_KEPT = 256   # characters of a subject kept in state (evidence only; ids never come from it)


def size(value: Any) -> int:
    return len(json.dumps(value))


class StateConflict(RuntimeError):
    """The key kept changing under us; the queue message is retried (and the scheduled path remains)."""


async def update(state: StreamState, key: str,
                 apply: Callable[[dict[str, Any]], tuple[dict[str, Any] | None, T]]) -> T:
    """``apply(value) -> (new value or None when nothing changed, result)``; returns the result of the
    attempt whose write won (or that changed nothing)."""
    for _ in range(MAX_ATTEMPTS):
        value, version = await state.load(key)
        new_value, result = apply(value if isinstance(value, dict) else {})
        if new_value is None or await state.save(key, new_value, version):
            return result
    raise StateConflict(f"stream state {key!r}: still changing after {MAX_ATTEMPTS} attempts")
