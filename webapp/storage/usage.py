"""What a user's data takes in Redis, for the storage quota (core/quota.py).

Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

from webapp.storage.base import StoreBase

USAGE_SECONDS = 600  # a measurement is reused this long; a write that adds much forgets it at once
PIPELINE_KEYS = 1000
ADD_USAGE = "if redis.call('exists', KEYS[1]) == 1 then return redis.call('incrby', KEYS[1], ARGV[1]) end return 0"


class UsageStore(StoreBase):
    """A user's storage: measured with MEMORY USAGE over their keys, the last measurement kept."""

    async def measure_usage(self, uid: str) -> int:
        """The bytes Redis holds for the user's conversations (metadata, messages, versions kept aside,
        attachments), custom roles and files uploaded but not sent, exactly (MEMORY USAGE ... SAMPLES 0): one
        pipeline per thousand keys. Kept for
        USAGE_SECONDS (cached_usage)."""
        k = self.keys
        sids = await self.redis.zrange(k.index(uid), 0, -1)
        keys = [k.roles(uid), k.uploads(uid)] + [key for sid in sids
                                                 for key in (k.meta(uid, sid), k.messages(uid, sid),
                                                             k.versions(uid, sid), k.forks(uid, sid),
                                                             k.files(uid, sid))]
        total = 0
        for start in range(0, len(keys), PIPELINE_KEYS):
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in keys[start:start + PIPELINE_KEYS]:
                    pipe.memory_usage(key, samples=0)
                total += sum(int(size or 0) for size in await pipe.execute())
        await self.redis.set(k.usage(uid), total, ex=USAGE_SECONDS)
        return total

    async def cached_usage(self, uid: str) -> int | None:
        """The last measurement, if it is recent (None: measure)."""
        value = await self.redis.get(self.keys.usage(uid))
        return int(value) if value is not None else None

    async def forget_usage(self, uid: str) -> None:
        """A write that added much (an import): the next check measures again."""
        await self.redis.delete(self.keys.usage(uid))

    async def add_usage(self, uid: str, added: int) -> None:
        """Bytes just written (an upload): added to the last measurement, if there is one."""
        await self.redis.eval(ADD_USAGE, 1, self.keys.usage(uid), added)
