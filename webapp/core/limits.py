"""Rate limits counted in Redis, so they hold across workers and hosts.

Fixed windows: a counter per (limit, key, window number) that expires with its window.
A caller over a limit gets 429 with Retry-After: the seconds left in the window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from webapp.base.errors import RateLimited
from webapp.storage.store import Store


@dataclass(frozen=True)
class Limit:
    name: str  # e.g. "turns-ip"
    per_window: int  # 0 = off
    window_seconds: int

    def counter(self, key: str, now: float) -> tuple[str, str, int, int]:
        """The counter one hit increments: (name, key, window number, window seconds), as the store takes it."""
        return self.name, key, int(now // self.window_seconds), self.window_seconds


Check = tuple[Limit, str]  # a limit and whose hits it counts (a user id, an address...)


def active(*checks: Check) -> list[Check]:
    """The checks that count: the limit is on and there is a key to count under."""
    return [(limit, key) for limit, key in checks if limit.per_window > 0 and key]


def refuse_if_over(checks: list[Check], counts: list[int], now: float) -> None:
    """429 with the seconds left in the window of the first limit these counts exceed."""
    for (limit, _), count in zip(checks, counts):
        if count > limit.per_window:
            raise RateLimited(retry_after=int(limit.window_seconds - now % limit.window_seconds) + 1)


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
