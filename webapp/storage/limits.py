"""Rate limits: fixed-window counters.

Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

from webapp.storage.base import StoreBase


class LimitStore(StoreBase):
    """Rate limits: the commands of their keys (see store.Store)."""

    async def count_hits(self, hits: list[tuple[str, str, int, int]]) -> list[int]:
        """Count one hit in each (limit name, key, window number, window seconds): one round trip.

        Returns each window's count including this hit; whether that is too many is the caller's call.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            self._count_hits(pipe, hits)
            results = await pipe.execute()
        return [int(count) for count in results[0::2]]
