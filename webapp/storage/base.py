"""The connection every store module shares, and what several of them use.

Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

import time
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from webapp.base.models import Conversation
from webapp.storage.keys import Keys

# One hit of a sliding-window limit (core/limits.py): count it in this window, read the previous
# window's count, and answer both packed in one integer (previous * COUNT_BASE + current), as the
# turn's lock round trip reads one integer per counter. KEYS: this window's counter, the previous one's;
# ARGV: how much the hit counts (1, or an import's kilobytes).
COUNT_HIT = (
    "local n = redis.call('incrby', KEYS[1], ARGV[1]) local p = tonumber(redis.call('get', KEYS[2]) or '0') "
    "return math.min(math.max(p, 0), 999999) * 1000000 + math.min(math.max(n, 0), 999999)"
)
COUNT_BASE = 1_000_000  # each count saturates at COUNT_BASE - 1, far above any limit


def split_count(packed: int) -> tuple[int, int]:
    """(this window's count, the previous window's) from a hit's packed reply."""
    previous, current = divmod(int(packed), COUNT_BASE)
    return current, previous


class StoreBase:
    """Typed operations over one redis.asyncio client (decode_responses=True): a plain client
    (one Redis, or Sentinel's master) or a RedisCluster; `cluster` says which."""

    def __init__(
        self,
        redis: Any,
        *,
        conversation_ttl: int,
        index_ttl: int,
        turn_timeout: int,
        lease_ms: int = 5000,
        blocking_redis: Any | None = None,
        prefix: str = "chat:",
        cluster: bool = False,
    ) -> None:
        self.redis = redis
        # blocking reads (XREAD BLOCK, pub/sub) hold a connection for long: their own pool
        self.blocking_redis = blocking_redis or redis
        self.conversation_ttl = conversation_ttl
        self.index_ttl = index_ttl
        self.turn_timeout = turn_timeout
        self.lease_ms = lease_ms
        self.keys = Keys(prefix)
        self.cluster = cluster

    async def aclose(self) -> None:
        """Close both clients and their connections: redis-py leaves a pool that was handed to a client
        (redis_client.py makes them so) open unless asked, and a Cluster client closes its nodes' own."""
        clients = [self.redis] if self.blocking_redis is self.redis else [self.redis, self.blocking_redis]
        for client in clients:
            if self.cluster:
                await client.aclose()
            else:
                await client.aclose(close_connection_pool=True)

    def round_trips(self) -> int:
        """Commands and pipelines sent on the command pool(s) since start (a Cluster's: every node's)."""
        clients = self.redis.nodes.values() if self.cluster else [self.redis]
        return sum(getattr(client.connection_pool, "checkouts", 0) for client in clients)

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, RedisClusterException):  # (a Cluster with no node reachable: not a RedisError)
            return False

    async def check_write(self, host: str) -> bool:
        """A real keyed write and read back (a replica, a full or a read-only Redis fails it)."""
        key = self.keys.readyz(host)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(key, "1", px=10_000)
                pipe.get(key)
                _, value = await pipe.execute()
            return value == "1"
        except (RedisError, RedisClusterException):  # (a Cluster with no node reachable: not a RedisError)
            return False

    async def eviction_policies(self) -> set[str]:
        """The `maxmemory-policy` of every master (INFO works where CONFIG is disabled, as on managed Redis)."""
        if self.cluster:
            infos = await self.redis.info("memory", target_nodes=self.redis.PRIMARIES)
            rows = infos.values() if isinstance(infos, dict) and "maxmemory_policy" not in infos else [infos]
        else:
            rows = [await self.redis.info("memory")]
        return {str(row.get("maxmemory_policy", "noeviction")) for row in rows}

    def _refresh_ttls(self, pipe: Any, uid: str, sid: str, *, versions: bool = True) -> None:
        k = self.keys
        pipe.expire(k.messages(uid, sid), self.conversation_ttl)
        if versions:  # a turn refreshes them once, when it ends (they live as long as the messages)
            pipe.expire(k.versions(uid, sid), self.conversation_ttl)
            pipe.expire(k.forks(uid, sid), self.conversation_ttl)
            pipe.expire(k.files(uid, sid), self.conversation_ttl)  # attachments (a no-op where there are none)
        pipe.expire(k.meta(uid, sid), self.index_ttl)
        pipe.expire(k.index(uid), self.index_ttl)
        pipe.set(k.claim(uid), claim_deadline(self.index_ttl))  # no TTL: see identities.CLAIM_IDENTITY

    def _unshelve(self, pipe: Any, uid: str, sids: list[str]) -> None:
        """A deleted conversation leaves the owner's pins, archive and folders (organization.py)."""
        pinned, archived, _, filed = self.keys.shelves(uid)
        pipe.zrem(pinned, *sids)
        pipe.zrem(archived, *sids)
        pipe.hdel(filed, *sids)

    def _reshelve(self, pipe: Any, conversation: Conversation) -> None:
        """A conversation written back (undo, import, a move between identities) goes back where its
        metadata says it was kept."""
        pinned, archived, _, filed = self.keys.shelves(conversation.user_id)
        if conversation.pinned:
            pipe.zadd(pinned, {conversation.id: conversation.pinned})
            pipe.expire(pinned, self.index_ttl)
        if conversation.archived:
            pipe.zadd(archived, {conversation.id: conversation.archived})
            pipe.expire(archived, self.index_ttl)
            for key in self.keys.conversation_keys(conversation.user_id, conversation.id):  # (as archiving does)
                pipe.expire(key, self.index_ttl)
        if conversation.folder:
            pipe.hset(filed, conversation.id, conversation.folder)
            pipe.expire(filed, self.index_ttl)

    def _count_hits(self, pipe: Any, hits: list[tuple[str, str, int, int]] | list[tuple[Any, ...]]) -> None:
        """Count a hit on each (limit name, key, window number, window seconds) counter, which lives
        through the next window too (where it is the previous one). Each adds two commands and two
        replies to the pipeline, as the fixed windows did: the packed counts (COUNT_HIT, split_count),
        then the EXPIRE's. Both keys share the limit key's hash tag: one slot."""
        for name, key, window, seconds, *amount in hits:  # (an amount after them: an import's kilobytes)
            current = self.keys.limit(name, key, window)
            pipe.eval(COUNT_HIT, 2, current, self.keys.limit(name, key, window - 1), amount[0] if amount else 1)
            pipe.expire(current, 2 * seconds + 30)

    async def _load_conversations(self, uid: str, sids: list[str]) -> list[Conversation]:
        if not sids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.hgetall(self.keys.meta(uid, sid))
            rows = await pipe.execute()
        found, missing = [], []
        for sid, data in zip(sids, rows):
            conversation = conversation_of(uid, sid, data)
            if conversation is not None:
                found.append(conversation)
            else:
                missing.append(sid)
        if missing:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.keys.index(uid), *missing)
                self._unshelve(pipe, uid, missing)
                await pipe.execute()
        return found


def conversation_of(uid: str, sid: str, meta: dict[str, str]) -> Conversation | None:
    """The conversation a metadata hash describes, if it is `uid`'s (None: absent, or another's)."""
    return Conversation.from_hash(sid, meta) if meta and meta.get("user_id") == uid else None


def claim_deadline(index_ttl: int) -> int:
    """What an identity's claim marker holds: when its data expires unless used again (unix seconds)."""
    return int(time.time()) + index_ttl
