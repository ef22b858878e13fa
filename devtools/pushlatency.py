"""How long Graph takes to deliver a change notification, for the fake Graph and the benchmark.

Microsoft documents the latency for Outlook resources (message, event, contact, ...) as "less than
1 minute" on average and "3 minutes" at most:
https://learn.microsoft.com/graph/change-notifications-overview#latency
The shape inside those bounds is not documented; a log-normal with a 25 s median (mean about 37 s),
cut at the documented maximum, keeps the average under a minute (about 36 s) and puts about 1.5% at the cap.
"""

from __future__ import annotations

import math
import random

MEDIAN_S = 25.0
SIGMA = 0.9
MAX_S = 180.0   # documented maximum


def draw_latency(rng: random.Random) -> float:
    """Seconds from the change in the mailbox to the notification's POST to the endpoint."""
    return min(MAX_S, math.exp(math.log(MEDIAN_S) + SIGMA * rng.gauss(0.0, 1.0)))
