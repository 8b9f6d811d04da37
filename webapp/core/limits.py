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

    def retry_after(self, packed: int, now: float, amount: int = 1, *, counted: bool = True) -> int:
        """Seconds until one more hit (of `amount`) fits, if nothing else is counted meanwhile. `packed`
        includes the refused hit; `counted`: it stays counted (a turn's does), else it was taken back."""
        current, previous = split_count(packed)
        current -= 0 if counted else amount
        window, elapsed = self.window_seconds, (now % self.window_seconds) / self.window_seconds
        room = self.per_window - current - amount  # what the previous window's fading hits must come under
        if room >= 0 and previous > 0:  # later in this window: floor(previous * (1 - elapsed')) <= room
            wait = (1 - (room + 1) / previous - elapsed) * window
        else:  # in the next one: amount + floor(current * (1 - elapsed')) <= per_window
            left = self.per_window - amount + 1
            fade = 1.0 if left <= 0 else (1 - left / current if current > left else 0.0)
            wait = (1 - elapsed + fade) * window
        return max(1, math.ceil(wait + 0.001))


Check = tuple[Limit, str]  # a limit and whose hits it counts (a user id, an address...)


def active(*checks: Check) -> list[Check]:
    """The checks that count: the limit is on and there is a key to count under."""
    return [(limit, key) for limit, key in checks if limit.per_window > 0 and key]


def refuse_if_over(checks: list[Check], counts: list[int], now: float, amounts: tuple[int, ...] = (), *,
                   counted: bool = True) -> None:
    """429, with the seconds until such a hit fits again, for the first limit these counts exceed
    (`counts`: the store's packed replies, one per check; `amounts`: what each hit counted, when not 1;
    `counted`: a refused hit stays counted, as a turn's does, else it is taken back)."""
    for (limit, _), packed, amount in zip(checks, counts, amounts + (1,) * len(checks)):
        if limit.count(packed, now) > limit.per_window:
            retry_after = limit.retry_after(packed, now, amount, counted=counted)
            raise limit.error(retry_after=retry_after, minutes=math.ceil(retry_after / 60))


class Limits:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def hit(self, *checks: Check, amounts: tuple[int, ...] = (), refund_refused: bool = False) -> None:
        """Count one hit of each (limit, key) and refuse when any is over: one round trip. `amounts`:
        how much each check counts, when not 1 (the kilobytes of an import). `refund_refused`: a refused
        request counts nothing (it did nothing: a sign-in that tried no password, an import not made)."""
        counted = [(check, amount) for check, amount in zip(checks, amounts + (1,) * len(checks)) if active(check)]
        if not counted:
            return
        now = time.time()
        hits = [_counter(limit, key, now, amount) for (limit, key), amount in counted]
        counts = await self.store.count_hits(hits)
        try:
            refuse_if_over([check for check, _ in counted], counts, now, tuple(amount for _, amount in counted),
                           counted=not refund_refused)
        except RateLimited:
            if refund_refused:
                await self.store.uncount_hits(hits)
            raise

    async def give_back(self, *checks: Check, amounts: tuple[int, ...] = ()) -> None:
        """Uncount what was just counted (a sign-in that turned out right counts no failure)."""
        counted = [(check, amount) for check, amount in zip(checks, amounts + (1,) * len(checks)) if active(check)]
        if counted:
            now = time.time()
            await self.store.uncount_hits([_counter(limit, key, now, amount) for (limit, key), amount in counted])


def _counter(limit: Limit, key: str, now: float, amount: int) -> tuple[str, str, int, int] | tuple[str, str, int, int, int]:
    """The counter of a hit, with its amount when that is not 1 (as the store takes it)."""
    return limit.counter(key, now) + ((amount,) if amount != 1 else ())
