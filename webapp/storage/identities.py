"""Identities: claiming one, whether one exists, moving conversations between two.

Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

import time

import orjson

from webapp.base.models import Conversation
from webapp.storage.base import StoreBase

# Whether an identity is someone's (1), and when free and ARGV[2] is given, claim it (1 too; 0: not
# claimed). Someone's: anything that proves ownership exists (its conversation index, an account,
# API tokens, shared links, roles, sign-ins), or its claim marker holds a time to come. The marker has
# no TTL, so no eviction policy can free an identity whose data lives (a volatile-* policy evicts only
# keys with one); its value is when the identity's data expires, refreshed with it (base._refresh_ttls),
# after which the id is free again. A marker from before (a TTL, any value) holds until it expires.
# KEYS: claim, index, account, tokens, shares, roles, signins; ARGV: now (s), deadline (s) or "".
CLAIM_IDENTITY = """
if redis.call('exists', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]) > 0 then
  return ARGV[2] == '' and 1 or 0
end
local held = redis.call('get', KEYS[1])
if held and (redis.call('pttl', KEYS[1]) >= 0 or (tonumber(held) or 0) > tonumber(ARGV[1])) then
  return ARGV[2] == '' and 1 or 0
end
if ARGV[2] == '' then return 0 end
redis.call('set', KEYS[1], ARGV[2])
return 1
"""


class IdentityStore(StoreBase):
    """Identities: the commands of their keys (see store.Store)."""

    async def claim_user(self, uid: str) -> bool:
        """Claim an identity of which nothing exists yet; False when it is someone's."""
        now = int(time.time())
        return bool(await self.redis.eval(CLAIM_IDENTITY, 7, *self._ownership_keys(uid), now, now + self.index_ttl))

    async def identity_exists(self, uid: str) -> bool:
        """Whether an identity is someone's (claimed, or holding data)."""
        return bool(await self.redis.eval(CLAIM_IDENTITY, 7, *self._ownership_keys(uid), int(time.time()), ""))

    def _ownership_keys(self, uid: str) -> tuple[str, ...]:
        k = self.keys
        return k.claim(uid), k.index(uid), k.account(uid), k.tokens(uid), k.shares(uid), k.roles(uid), k.signins(uid)

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
        folders = await self.redis.hgetall(k.folders(from_uid))
        if folders:  # (folder ids are random: the two identities' folders never share one)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(k.folders(to_uid), mapping=folders)
                pipe.expire(k.folders(to_uid), self.index_ttl)
                await pipe.execute()
        for sid, score in rows:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(k.meta(from_uid, sid))
                pipe.lrange(k.messages(from_uid, sid), 0, -1)
                pipe.hgetall(k.versions(from_uid, sid))
                pipe.hgetall(k.forks(from_uid, sid))
                pipe.hgetall(k.files(from_uid, sid))
                meta, messages, versions, forks, files = await pipe.execute()
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
                    if files:
                        pipe.hset(k.files(to_uid, sid), mapping=files)
                    for raw in messages:
                        message = orjson.loads(raw)
                        if message.get("role") == "user" and message.get("id"):
                            pipe.set(k.message(to_uid, message["id"]), sid, ex=self.conversation_ttl)
                    pipe.zadd(k.index(to_uid), {sid: score})
                    self._refresh_ttls(pipe, to_uid, sid)
                    self._reshelve(pipe, Conversation.from_hash(sid, meta))
                    await pipe.execute()
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(*k.conversation_keys(from_uid, sid))
                pipe.zrem(k.index(from_uid), sid)
                self._unshelve(pipe, from_uid, [sid])
                await pipe.execute()
        return len(rows)
