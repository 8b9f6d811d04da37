"""Read-only share links.

Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

from typing import Any

import orjson

from webapp.storage.base import StoreBase


class ShareStore(StoreBase):
    """Read-only share links: the commands of their keys (see store.Store)."""

    async def share_token(self, uid: str, sid: str) -> str | None:
        return await self.redis.hget(self.keys.shares(uid), sid)

    async def add_share(self, uid: str, sid: str, token: str, digest: str) -> None:
        """Listed with its owner (revocable) before the link works."""
        await self.redis.hset(self.keys.shares(uid), sid, token)
        await self.redis.set(self.keys.share(digest), orjson.dumps({"uid": uid, "sid": sid}))

    async def remove_share(self, uid: str, sid: str, digest_of: Any) -> bool:
        """Stop the link working, then unlist it. `digest_of(token)` gives the lookup key's hash."""
        token = await self.redis.hget(self.keys.shares(uid), sid)
        if token is None:
            return False
        await self.redis.delete(self.keys.share(digest_of(token)))
        await self.redis.hdel(self.keys.shares(uid), sid)
        return True

    async def shared_conversation(self, digest: str, token: str) -> tuple[str, str] | None:
        """(uid, sid) of a link still listed by its owner; None when unknown or revoked."""
        raw = await self.redis.get(self.keys.share(digest))
        if raw is None:
            return None
        target = orjson.loads(raw)
        uid, sid = str(target.get("uid", "")), str(target.get("sid", ""))
        if await self.redis.hget(self.keys.shares(uid), sid) != token:
            return None
        return uid, sid
