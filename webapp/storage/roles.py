"""A user's custom roles.

Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

from typing import Any

import orjson

from webapp.storage.base import StoreBase

# Add a custom role unless the user has as many as allowed: ARGV role id, JSON, limit, TTL.
ADD_ROLE = (
    "if redis.call('hlen', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end "
    "redis.call('hset', KEYS[1], ARGV[1], ARGV[2]) redis.call('expire', KEYS[1], ARGV[4]) return 1"
)


class RoleStore(StoreBase):
    """A user's custom roles: the commands of their keys (see store.Store)."""

    async def list_roles(self, uid: str) -> dict[str, dict[str, Any]]:
        """A user's own roles by id; listing them keeps them as long as the user's other data."""
        key = self.keys.roles(uid)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(key)
            pipe.expire(key, self.index_ttl)
            rows, _ = await pipe.execute()
        return {role_id: orjson.loads(raw) for role_id, raw in rows.items()}

    async def get_role(self, uid: str, role_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.keys.roles(uid), role_id)
        return orjson.loads(raw) if raw else None

    async def add_role(self, uid: str, role_id: str, record: dict[str, Any], max_roles: int) -> bool:
        """Add a role unless the user already has `max_roles` (0 = no limit): one script, no race."""
        return bool(await self.redis.eval(ADD_ROLE, 1, self.keys.roles(uid), role_id, orjson.dumps(record),
                                          max_roles or 1_000_000, self.index_ttl))

    async def put_role(self, uid: str, role_id: str, record: dict[str, Any]) -> None:
        await self.redis.hset(self.keys.roles(uid), role_id, orjson.dumps(record))

    async def delete_role(self, uid: str, role_id: str) -> bool:
        return bool(await self.redis.hdel(self.keys.roles(uid), role_id))

    # roles an admin published to everyone ---------------------------------------------

    async def own_or_published_role(self, uid: str, role_id: str) -> tuple[dict[str, Any] | None, bool]:
        """The user's own role of that id, else the published one (and whether it is that): one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.roles(uid), role_id)
            pipe.hget(self.keys.published_roles, role_id)
            own, published = await pipe.execute()
        if own:
            return orjson.loads(own), False
        return (orjson.loads(published), True) if published else (None, False)

    async def published_roles(self) -> dict[str, dict[str, Any]]:
        rows = await self.redis.hgetall(self.keys.published_roles)
        return {role_id: orjson.loads(raw) for role_id, raw in rows.items()}

    async def publish_role(self, role_id: str, record: dict[str, Any]) -> None:
        await self.redis.hset(self.keys.published_roles, role_id, orjson.dumps(record))

    async def unpublish_role(self, role_id: str) -> bool:
        return bool(await self.redis.hdel(self.keys.published_roles, role_id))
