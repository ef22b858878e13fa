"""Sample timestamps: office-hours weighted, reproducible, never after the sample's ``now``."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

# Relative weight of each hour of the day (UTC ~ the tenant's local time): mail peaks mid-morning.
HOUR_WEIGHTS = (1, 1, 1, 1, 1, 2, 4, 8, 12, 14, 13, 11, 9, 11, 12, 11, 9, 6, 4, 3, 2, 2, 1, 1)


class Clock:
    def __init__(self, rng: random.Random, start: datetime, end: datetime):
        self.rng, self.start, self.end = rng, start, end
        self.days = max(1, (end - start).days)
        # Calendar days the span touches, the first and the last (partial) one included: the morning
        # before `now` has background too.
        self.calendar_days = (end.date() - start.date()).days + 1

    def business(self) -> datetime:
        """A moment between ``start`` and ``end``, more likely in office hours."""
        while True:
            day = self.start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(
                days=self.rng.randrange(self.calendar_days)
            )
            hour = self.rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
            moment = day + timedelta(
                hours=hour, seconds=self.rng.randrange(3600), milliseconds=self.rng.randrange(1000)
            )
            if self.start <= moment <= self.end:
                return moment

    def uniform(self, start: datetime | None = None, end: datetime | None = None) -> datetime:
        lo, hi = start or self.start, end or self.end
        span = (hi - lo).total_seconds()
        return lo + timedelta(seconds=self.rng.uniform(0, span))
