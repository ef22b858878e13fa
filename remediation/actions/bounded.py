"""Targets acted on one by one (account and connector actions), in bounded batches with a per-target timeout.

At most ``concurrency`` targets are in flight at once (Graph and the Exchange admin API both throttle a
burst; a campaign of 500 accounts must not open 500 requests), and each target's work has ``timeout``
seconds, counted from the moment it gets its slot. A target that runs out of time is cancelled and
reported transient on its own, saying its change may have been applied (the request may have reached
the service before the answer stopped coming); the others carry on, so one hung target delays nobody
beyond its own timeout. The retry that follows sees the request in ``ctx.prior_attempts`` and checks
the service's state before acting again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from remediation.actions.base import ActionResult

TARGET_CONCURRENCY = 8      # targets in flight at once, per execute
TARGET_TIMEOUT = 60.0       # seconds for one target's calls (lookups and the change together)

T = TypeVar("T")


async def each_bounded(items: Sequence[T], one: Callable[[T], Awaitable[ActionResult]], *,
                       timed_out: Callable[[T, float], ActionResult], concurrency: int = TARGET_CONCURRENCY,
                       timeout: float = TARGET_TIMEOUT) -> list[ActionResult]:
    """``one(item)`` for every item, at most ``concurrency`` at once, each within ``timeout`` seconds
    (else ``timed_out(item, timeout)``); results in the items' order."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    slots = asyncio.Semaphore(concurrency)

    async def guarded(item: T) -> ActionResult:
        async with slots:
            try:
                return await asyncio.wait_for(one(item), timeout)
            except TimeoutError:
                return timed_out(item, timeout)

    return list(await asyncio.gather(*(guarded(i) for i in items)))


def timeout_result(request_id: str, what: str, timeout: float) -> ActionResult:
    """Transient: the call may or may not have reached the service (its retry checks the state first)."""
    reason = (f"{what}: no answer within {timeout:g}s; the change may have been applied "
              "(the retry checks first)")
    return ActionResult(request_id, "failed", detail=reason, error=reason, transient=True)
