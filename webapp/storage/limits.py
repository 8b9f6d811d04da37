"""Rate limits: the counters of sliding windows (core/limits.py says how they count).

Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

from typing import Any

from webapp.storage.base import StoreBase


class LimitStore(StoreBase):
    """Rate limits: the commands of their keys (see store.Store)."""

    async def count_hits(self, hits: list[tuple[Any, ...]]) -> list[int]:
        """Count one hit in each (limit name, key, window number, window seconds[, amount]): one round trip.

        Returns, per hit, this window's count including the hit and the previous window's, packed
        (base.split_count); whether that is too many is the caller's call.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            self._count_hits(pipe, hits)
            results = await pipe.execute()
        return [int(count) for count in results[0::2]]

    async def uncount_hits(self, hits: list[tuple[Any, ...]]) -> None:
        """Take back what each hit counted (a moment ago: 1, or its amount after the four); the counter
        keeps its expiry."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, key, window, seconds, *amount in hits:
                pipe.decrby(self.keys.limit(name, key, window), amount[0] if amount else 1)
                pipe.expire(self.keys.limit(name, key, window), 2 * seconds + 30)  # (one made anew: not forever)
            await pipe.execute()
