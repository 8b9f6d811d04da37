"""Rate limits counted in Redis, so they hold across workers and hosts.

Fixed windows: a counter per (limit, key, window number) that expires with its window.
A caller over a limit gets 429 with Retry-After: the seconds left in the window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .errors import RateLimited
from .store import Store


@dataclass(frozen=True)
class Limit:
    name: str  # e.g. "turns-ip"
    per_window: int  # 0 = off
    window_seconds: int


class Limits:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def hit(self, *checks: tuple[Limit, str]) -> None:
        """Count one hit of each (limit, key) and refuse when any is over: one round trip."""
        active = [(limit, key) for limit, key in checks if limit.per_window > 0 and key]
        if not active:
            return
        now = time.time()
        counts = await self.store.count_hits(
            [(limit.name, key, int(now // limit.window_seconds), limit.window_seconds) for limit, key in active]
        )
        for (limit, _), count in zip(active, counts):
            if count > limit.per_window:
                retry_after = int(limit.window_seconds - now % limit.window_seconds) + 1
                raise RateLimited(retry_after=retry_after)
