"""A delivery's deadline: the work done under a claim ends well before the claim's lease does.

The lease (``Worker(lease=...)``, 5 minutes by default) is what keeps a second delivery off a request;
if one delivery could run longer than its lease, another could take the expired claim over and act
while the first is still acting. So each delivery gets a budget (half the lease by default), started
when its claims are taken: every action call runs under ``asyncio.timeout`` with what is left of it
(the SDK's own Retry-After waits and timeouts included, since they happen inside the call), and no
sleep between worker retries may pass it. What is not done by then is released for the next delivery.
The other half of the lease is the margin for the ledger writes that follow (results, releases).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlinePassed(TimeoutError):
    """The delivery's budget ran out before (or while) an action call ran."""


class Deadline:
    def __init__(self, budget: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget, self.clock = budget, clock
        self.end = clock() + budget

    def remaining(self) -> float:
        return max(0.0, self.end - self.clock())

    def allows(self, seconds: float) -> bool:
        """True when sleeping ``seconds`` still leaves time for the call that follows."""
        return seconds < self.remaining()

    async def run(self, call: Awaitable[T]) -> T:
        """``call`` cancelled at the deadline (DeadlinePassed); never started when none is left."""
        remaining = self.remaining()
        if remaining <= 0:
            if asyncio.iscoroutine(call):
                call.close()   # never awaited: close it so Python does not warn
            raise DeadlinePassed(f"the delivery's {self.budget:g}s budget is spent")
        try:
            async with asyncio.timeout(remaining) as scope:
                return await call
        except TimeoutError as exc:
            if not scope.expired():
                raise   # the call's own timeout, not ours
            self.end = float("-inf")   # spent, whatever the clock says
            raise DeadlinePassed(f"no answer within the delivery's {self.budget:g}s budget") from exc
