"""Rate limits counted in Redis, so they hold across workers and hosts.

Sliding windows, as the two-window weighted counter: a counter per (limit, key, window number),
and a hit is allowed while this window's count plus the previous window's, weighted by the
share of that window still inside the sliding one (rounded down), stays within the limit. A fixed window let
a caller spend a window's allowance at its end and the next one's at the start of the next
(20 turns in 4 s at 10 a minute); here the previous window's hits fade out over the window,
so right after a boundary the caller has one more at most (the rounding), and the allowance
comes back as the old hits fade. Over any span of
one window the count still stays within twice the limit in the worst timing (the same as GCRA
with a burst of the limit), and within the limit on average.

One round trip as before: the store increments this window's counter and reads the previous
one in one script (storage/base.py `_count_hits`), and hands both back packed in one integer,
as the turn's lock round trip reads one integer per counter (storage/turns.py `lock_turn`).
A caller over a limit gets 429 with Retry-After: the seconds until one more hit would fit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from webapp.base.errors import RateLimited
from webapp.storage.base import split_count
from webapp.storage.store import Store


@dataclass(frozen=True)
class Limit:
    name: str  # e.g. "turns-ip"
    per_window: int  # 0 = off
    window_seconds: int
    error: type[RateLimited] = RateLimited  # what a caller over it is told

    def counter(self, key: str, now: float) -> tuple[str, str, int, int]:
        """The counter one hit increments: (name, key, window number, window seconds), as the store takes it."""
        return self.name, key, int(now // self.window_seconds), self.window_seconds

    def weight_of_previous(self, now: float) -> float:
        """The share of the previous window still inside the sliding window that ends `now`."""
        return 1.0 - (now % self.window_seconds) / self.window_seconds

    def count(self, packed: int, now: float) -> int:
        """The sliding window's count from the store's packed reply: this window's hits, and the previous
        window's weighted by its share still inside, rounded down (a caller at exactly the limit's pace
        is never refused for hits that have in truth left the window)."""
        current, previous = split_count(packed)
        return current + math.floor(previous * self.weight_of_previous(now))

    def retry_after(self, packed: int, now: float) -> int:
        """Seconds until one more hit fits, if nothing else is counted meanwhile."""
        current, previous = split_count(packed)
        window, elapsed = self.window_seconds, (now % self.window_seconds) / self.window_seconds
        room = self.per_window - current - 1  # what the previous window's fading hits must come under
        if room >= 0 and previous > 0:  # later in this window: floor(previous * (1 - elapsed')) <= room
            wait = (1 - (room + 1) / previous - elapsed) * window
        else:  # in the next one: 1 + floor(current * (1 - elapsed')) <= per_window
            fade = 1 - self.per_window / current if current > self.per_window else 0.0
            wait = (1 - elapsed + fade) * window
        return max(1, math.ceil(wait + 0.001))


Check = tuple[Limit, str]  # a limit and whose hits it counts (a user id, an address...)


def active(*checks: Check) -> list[Check]:
    """The checks that count: the limit is on and there is a key to count under."""
    return [(limit, key) for limit, key in checks if limit.per_window > 0 and key]


def refuse_if_over(checks: list[Check], counts: list[int], now: float) -> None:
    """429, with the seconds until a hit fits again, for the first limit these counts exceed
    (`counts`: the store's packed replies, one per check)."""
    for (limit, _), packed in zip(checks, counts):
        if limit.count(packed, now) > limit.per_window:
            retry_after = limit.retry_after(packed, now)
            raise limit.error(retry_after=retry_after, minutes=math.ceil(retry_after / 60))


class Limits:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def hit(self, *checks: Check) -> None:
        """Count one hit of each (limit, key) and refuse when any is over: one round trip."""
        counted = active(*checks)
        if not counted:
            return
        now = time.time()
        counts = await self.store.count_hits([limit.counter(key, now) for limit, key in counted])
        refuse_if_over(counted, counts, now)

    async def give_back(self, *checks: Check) -> None:
        """Uncount a hit just counted (a sign-in that turned out right counts no failure)."""
        counted = active(*checks)
        if counted:
            now = time.time()
            await self.store.uncount_hits([limit.counter(key, now) for limit, key in counted])
