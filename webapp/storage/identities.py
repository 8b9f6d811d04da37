"""Identities: claiming one, whether one exists, moving conversations between two.

Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

import orjson

from webapp.storage.base import StoreBase

# Claim an identity only if nothing of it exists: not its marker, its index, nor an account. Under a
# policy that evicts keys, a marker alone could be evicted while the history stays.
CLAIM_IDENTITY = (
    "if redis.call('exists', KEYS[1], KEYS[2], KEYS[3]) > 0 then return 0 end "
    "redis.call('set', KEYS[1], '1', 'EX', ARGV[1]) return 1"
)


class IdentityStore(StoreBase):
    """Identities: the commands of their keys (see store.Store)."""

    async def claim_user(self, uid: str) -> bool:
        """Claim an identity of which nothing exists yet; False when it is (or was) someone's."""
        k = self.keys
        return bool(await self.redis.eval(CLAIM_IDENTITY, 3, k.claim(uid), k.index(uid), k.account(uid),
                                          self.index_ttl))

    async def identity_exists(self, uid: str) -> bool:
        """Whether an identity has been claimed (or still has data)."""
        k = self.keys
        return bool(await self.redis.exists(k.claim(uid), k.index(uid), k.account(uid)))

    async def count_conversations(self, uid: str) -> int:
        return int(await self.redis.zcard(self.keys.index(uid)))

    async def move_conversations(self, from_uid: str, to_uid: str) -> int:
        """Give every conversation of `from_uid` to `to_uid` (an anonymous history claimed at sign-in).

        The two identities live in different slots, so each conversation is copied (one
        MULTI in the new owner's slot) and only then removed from the old one: a crash in
        between leaves a copy in both, never in neither.
        """
        k = self.keys
        rows = await self.redis.zrange(k.index(from_uid), 0, -1, withscores=True)
        for sid, score in rows:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(k.meta(from_uid, sid))
                pipe.lrange(k.messages(from_uid, sid), 0, -1)
                pipe.hgetall(k.versions(from_uid, sid))
                pipe.hgetall(k.forks(from_uid, sid))
                meta, messages, versions, forks = await pipe.execute()
            if meta:
                meta["user_id"] = to_uid
                meta["turn"] = meta["last"] = ""  # turn ids are the old identity's
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.delete(*k.conversation_keys(to_uid, sid))
                    pipe.hset(k.meta(to_uid, sid), mapping=meta)
                    if messages:
                        pipe.rpush(k.messages(to_uid, sid), *messages)
                    if versions:
                        pipe.hset(k.versions(to_uid, sid), mapping=versions)
                    if forks:
                        pipe.hset(k.forks(to_uid, sid), mapping=forks)
                    for raw in messages:
                        message = orjson.loads(raw)
                        if message.get("role") == "user" and message.get("id"):
                            pipe.set(k.message(to_uid, message["id"]), sid, ex=self.conversation_ttl)
                    pipe.zadd(k.index(to_uid), {sid: score})
                    self._refresh_ttls(pipe, to_uid, sid)
                    await pipe.execute()
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(*k.conversation_keys(from_uid, sid))
                pipe.zrem(k.index(from_uid), sid)
                await pipe.execute()
        return len(rows)
