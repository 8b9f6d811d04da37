"""Every Redis key and command of the app. Nothing else touches Redis; nothing here knows HTTP.

The store knows keys, commands and which writes must be atomic; it holds no policy:
what a title or preview says, whether a rate is over its limit, or which conversation
to reuse is decided by the core (conversations.py, turn_writer.py) and handed in.

Keys (all under REDIS_PREFIX, default `chat:`). `{uid}` is a Redis Cluster hash tag:
everything of one identity lives in one slot, so every MULTI and script touches one
slot and the same code runs on one Redis, Sentinel and Cluster (keys.py names them all):

    {uid}:claim                        claim marker of an identity (string, index TTL)
    {uid}:sessions                     ZSET session_id -> last activity (ms), index TTL
    {uid}:s:{sid}                      HASH metadata (user_id, title, preview, role, count, created, updated, turn: the running turn, last: the newest turn)
    {uid}:s:{sid}:messages             LIST of JSON messages, RPUSH (chronological), conversation TTL
    {uid}:s:{sid}:lock                 the running turn's id: a lease its writer keeps renewing (a few seconds)
    {uid}:s:{sid}:versions             HASH list index -> "shown/count" where a message has versions
    {uid}:s:{sid}:forks                HASH list index -> JSON of the versions kept aside there (versions.py)
    {uid}:m:{mid}                      the session id of a user message (edit by message id), conversation TTL
    {uid}:request:{rid}                the turn a client request id started (a repeated request starts none), 10 min
    {uid}:t:{tid}                      HASH turn state (session_id, user_id, status, message_id; cancel: Stop was asked)
    {uid}:t:{tid}:events               STREAM of reply events, ids `0-{seq}`, capped, expires after the turn
    {uid}:t:{tid}:recovery             the one host saving an orphaned turn, 60 s
    {uid}:trash:{sid}                  JSON copy of a conversation deleted from the web UI, kept briefly for undo
    {uid}:account                      HASH an account (username, password hash, created); no TTL
    {uid}:signins                      SET the sign-in hashes of a user (sign out everywhere)
    {uid}:tokens                       HASH token id -> JSON {name, created, hash} of a user's tokens
    {uid}:roles                        HASH role id -> JSON of a custom role; index TTL, refreshed when listed
    {uid}:shares                       HASH session id -> the read-only link's token; no TTL (revoked with it)
    {uid}:w:{term}                     SET session ids whose title or messages hold a search term, index TTL
    {uid}:lex                          ZSET (all scores 0) every search term of the user: prefix lookups, index TTL
    {uid}:s:{sid}:terms                SET the search terms of a conversation (to unindex it), index TTL
    {uid}:searchidx                    marker: the search index holds every conversation, index TTL
    {uid}:tmp:{rand}                   ZSET scratch result of one search, deleted in the same MULTI
    share:{sha256}                     JSON {uid, sid} of a read-only link, by the hash of its token; no TTL
    limit:{name}:{key}:{window}        fixed-window counter of a limit (key hash-tagged), expires after its window
    account:name:{username}            the uid of a username (lower case); no TTL
    signin:{sha256}                    HASH a sign-in (uid, created), by the hash of its cookie; session TTL
    token:{sha256}                     the uid of a personal API token, by the hash of the token; no TTL
    turns:running                      ZSET "uid/tid" -> lease deadline (ms) of every generating turn
    follower:{worker}:wake             STREAM a worker's follower wake-up (one Redis only)
    layout                             the key layout version (a one-off migration at start, migrate.py)
    readyz:{host}                      /readyz's keyed write, 10 s
    cancel                             pub/sub channel: turn ids to cancel, on whichever worker runs them
    wake                               pub/sub channel (Cluster only): the turns whose events a flush wrote
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any, AsyncIterator, Iterable

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from webapp.base.models import (
    BranchChange,
    BranchState,
    Conversation,
    Creation,
    Lease,
    Message,
    TurnEvent,
    TurnInfo,
    TurnLock,
)
from webapp.storage.keys import Keys, TurnRef

log = logging.getLogger("webapp.storage.store")

STREAM_MAXLEN = 20000
STREAM_RETENTION_SECONDS = 3600
TURN_RETENTION_SECONDS = 86400
FOLLOWER_WAKE_TTL_SECONDS = 60  # a worker that is gone leaves nothing behind for long
SEARCH_SCAN_LIMIT = 2000
REQUEST_ID_SECONDS = 600  # a repeated form (same request id) within this long starts no second turn

# Give a conversation's lock back only if it is still the holder's: a save retried after its
# lock expired must not drop the lock another turn has taken since.
RELEASE_LOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
# Renew a writer's lease (1; 2: renewed, but Stop was asked for the turn). A lease that lapsed while
# its writer was only slow (an overloaded host) is taken again, unless a recovery of the turn has begun
# or another turn holds the conversation (0: the writer stops). Atomic with CLAIM_RECOVERY, so a turn is
# either saved by its writer or recovered. KEYS: lock, recovery, turn; ARGV: turn id, lease ms.
RENEW_LEASE = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
elseif holder or redis.call('exists', KEYS[2]) == 1 or redis.call('hget', KEYS[3], 'status') ~= 'running' then
  return 0
else
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if redis.call('hexists', KEYS[3], 'cancel') == 1 then return 2 end
return 1
"""
# Write a new conversation, unless one with its id exists (0) or its owner has ARGV[2] (when not 0)
# already (-1); 1 when written. Also returns how many conversations the owner had before: one round
# trip, and two creates racing (a double click) write one conversation and never pass the limit.
# KEYS: meta, messages, index, claim, versions, forks; ARGV: session id, limit, index score, first
# message JSON, conversation TTL, index TTL, then the metadata hash as field, value, ...
CREATE_CONVERSATION = """
local count = redis.call('zcard', KEYS[3])
if redis.call('exists', KEYS[1]) == 1 then return {0, count} end
if tonumber(ARGV[2]) > 0 and count >= tonumber(ARGV[2]) then return {-1, count} end
redis.call('hset', KEYS[1], unpack(ARGV, 7))
redis.call('rpush', KEYS[2], ARGV[4])
redis.call('zadd', KEYS[3], ARGV[3], ARGV[1])
redis.call('set', KEYS[4], '1', 'EX', ARGV[6])
for _, key in ipairs({KEYS[2], KEYS[5], KEYS[6]}) do redis.call('expire', key, ARGV[5]) end
for _, key in ipairs({KEYS[1], KEYS[3]}) do redis.call('expire', key, ARGV[6]) end
return {1, count}
"""
# Mark a running turn to be stopped (1), so its writer finds the request at its next lease renewal
# even when it missed the pub/sub message; nothing is written for a turn that is over or gone (0).
# KEYS: turn.
MARK_CANCEL = """
if redis.call('hget', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('hset', KEYS[1], 'cancel', '1')
return 1
"""
# One host saves an orphaned turn, and only while its writer does not hold the lease.
# KEYS: lock, recovery; ARGV: turn id.
CLAIM_RECOVERY = """
if redis.call('get', KEYS[1]) == ARGV[1] then return 0 end
if redis.call('set', KEYS[2], '1', 'NX', 'EX', 60) then return 1 end
return 0
"""
# Add a custom role unless the user has as many as allowed: ARGV role id, JSON, limit, TTL.
ADD_ROLE = (
    "if redis.call('hlen', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end "
    "redis.call('hset', KEYS[1], ARGV[1], ARGV[2]) redis.call('expire', KEYS[1], ARGV[4]) return 1"
)
# A generated title lands only on the title made from the first message, never on a user's rename.
SET_GENERATED_TITLE = (
    "if redis.call('hget', KEYS[1], 'user_id') ~= ARGV[3] then return 0 end "
    "if redis.call('hget', KEYS[1], 'title_by') == 'user' then return 0 end "
    "if redis.call('hget', KEYS[1], 'title') ~= ARGV[1] then return 0 end "
    "redis.call('hset', KEYS[1], 'title', ARGV[2], 'title_by', 'model') return 1"
)
# Search: KEYS = session index, scratch, scratch union, the terms' sets, then the prefix's terms' sets;
# ARGV = limit, number of terms, number of prefix terms, most conversations to check one by one.
# Where the sets are dense (common words), the newest conversations are checked one by one until
# `limit` match (a few hundred checks); where they are sparse, or the walk found too few, the sets
# are intersected with the session index (ZINTERSTORE costs the smallest set's size). Either way a
# query costs about the same whether it matches everything or nothing.
SEARCH_INDEX = """
local limit, nterms, nprefix, scan = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local sets = {}
for i = 1, nterms do sets[#sets + 1] = KEYS[3 + i] end
if nprefix == 1 then
  sets[#sets + 1] = KEYS[4 + nterms]
elseif nprefix > 1 then
  local parts = {}
  for i = 1, nprefix do parts[i] = KEYS[3 + nterms + i] end
  redis.call('sunionstore', KEYS[3], unpack(parts))
  sets[#sets + 1] = KEYS[3]
end
local total = redis.call('zcard', KEYS[1])
local smallest = total
for _, key in ipairs(sets) do
  local size = redis.call('scard', key)
  if size < smallest then smallest = size end
end
local found = nil
if smallest == 0 then
  found = {}
elseif smallest * 8 >= total then
  found = {}
  local start, checked = 0, 0
  while #found < limit and start < total and checked < scan do
    local ids = redis.call('zrevrange', KEYS[1], start, start + 199)
    for _, id in ipairs(ids) do
      checked = checked + 1
      local hit = true
      for _, key in ipairs(sets) do
        if redis.call('sismember', key, id) == 0 then hit = false break end
      end
      if hit then
        found[#found + 1] = id
        if #found >= limit then break end
      end
    end
    start = start + 200
  end
  if #found < limit and start < total then found = nil end
end
if found == nil then
  local args = {KEYS[2], #sets + 1, KEYS[1]}
  for _, key in ipairs(sets) do args[#args + 1] = key end
  args[#args + 1] = 'WEIGHTS'
  args[#args + 1] = 1
  for _ = 1, #sets do args[#args + 1] = 0 end
  redis.call('zinterstore', unpack(args))
  found = redis.call('zrevrange', KEYS[2], 0, limit - 1)
end
redis.call('del', KEYS[2], KEYS[3])
return found
"""
# Index one conversation's new terms: KEYS = lexicon, the conversation's term set, then each term's set;
# ARGV = conversation id, TTL, then the terms (in KEYS' order). One call instead of two commands per
# term: a reply has dozens of terms, and each command queued in a pipeline costs the app more than
# the server.
INDEX_TERMS = """
local sid, ttl = ARGV[1], ARGV[2]
for i = 3, #KEYS do
  local term = ARGV[i]
  redis.call('sadd', KEYS[i], sid)
  redis.call('expire', KEYS[i], ttl)
  redis.call('zadd', KEYS[1], 0, term)
  redis.call('sadd', KEYS[2], term)
end
redis.call('expire', KEYS[1], ttl)
redis.call('expire', KEYS[2], ttl)
return #KEYS - 2
"""
# Claim an identity only if nothing of it exists: not its marker, its index, nor an account. Under a
# policy that evicts keys, a marker alone could be evicted while the history stays.
CLAIM_IDENTITY = (
    "if redis.call('exists', KEYS[1], KEYS[2], KEYS[3]) > 0 then return 0 end "
    "redis.call('set', KEYS[1], '1', 'EX', ARGV[1]) return 1"
)


class Store:
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
        await self.redis.aclose()
        if self.blocking_redis is not self.redis:
            await self.blocking_redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except RedisError:
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
        except RedisError:
            return False

    async def eviction_policies(self) -> set[str]:
        """The `maxmemory-policy` of every master (INFO works where CONFIG is disabled, as on managed Redis)."""
        if self.cluster:
            infos = await self.redis.info("memory", target_nodes=self.redis.PRIMARIES)
            rows = infos.values() if isinstance(infos, dict) and "maxmemory_policy" not in infos else [infos]
        else:
            rows = [await self.redis.info("memory")]
        return {str(row.get("maxmemory_policy", "noeviction")) for row in rows}

    # identities ---------------------------------------------------------

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

    # limits -------------------------------------------------------------

    async def count_hits(self, hits: list[tuple[str, str, int, int]]) -> list[int]:
        """Count one hit in each (limit name, key, window number, window seconds): one round trip.

        Returns each window's count including this hit; whether that is too many is the caller's call.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            self._count_hits(pipe, hits)
            results = await pipe.execute()
        return [int(count) for count in results[0::2]]

    def _count_hits(self, pipe: Any, hits: list[tuple[str, str, int, int]]) -> None:
        """INCR each (limit name, key, window number, window seconds) counter; it expires with its window.
        Each adds two replies to the pipeline: the count, then the EXPIRE's."""
        for name, key, window, seconds in hits:
            pipe.incr(self.keys.limit(name, key, window))
            pipe.expire(self.keys.limit(name, key, window), seconds + 30)

    # accounts -----------------------------------------------------------

    async def create_account(self, uid: str, username: str, password_hash: str) -> bool:
        """A new account; False when the username is taken (case-insensitively)."""
        k = self.keys
        if not await self.redis.set(k.account_name(username), uid, nx=True):
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(k.account(uid), mapping={"username": username, "password": password_hash,
                                               "created": repr(time.time())})
            pipe.set(k.claim(uid), "1")  # the account's identity is never free to claim
            await pipe.execute()
        return True

    async def account_by_name(self, username: str) -> tuple[str, dict[str, str]] | None:
        """(uid, account fields) of a username, or None."""
        uid = await self.redis.get(self.keys.account_name(username))
        if uid is None:
            return None
        data = await self.redis.hgetall(self.keys.account(uid))
        return (uid, data) if data else None

    async def account(self, uid: str) -> dict[str, str] | None:
        return await self.redis.hgetall(self.keys.account(uid)) or None

    async def set_password(self, uid: str, password_hash: str) -> None:
        await self.redis.hset(self.keys.account(uid), "password", password_hash)

    async def add_signin(self, uid: str, digest: str, ttl: int) -> None:
        """The user's set first, then the sign-in: a crash in between leaves no sign-in that
        "sign out everywhere" could miss."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(k.signins(uid), digest)
            pipe.expire(k.signins(uid), ttl)
            await pipe.execute()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(k.signin(digest), mapping={"uid": uid, "created": repr(time.time())})
            pipe.expire(k.signin(digest), ttl)
            await pipe.execute()

    async def signin_user(self, digest: str) -> str | None:
        return await self.redis.hget(self.keys.signin(digest), "uid")

    async def remove_signin(self, digest: str) -> None:
        k = self.keys
        uid = await self.redis.hget(k.signin(digest), "uid")
        await self.redis.delete(k.signin(digest))
        if uid:
            await self.redis.srem(k.signins(uid), digest)

    async def remove_all_signins(self, uid: str) -> int:
        k = self.keys
        digests = await self.redis.smembers(k.signins(uid))
        async with self.redis.pipeline(transaction=False) as pipe:  # one key per command: any slots
            for digest in digests:
                pipe.delete(k.signin(digest))
            pipe.delete(k.signins(uid))
            await pipe.execute()
        return len(digests)

    async def add_token(self, uid: str, token_id: str, digest: str, name: str) -> None:
        k = self.keys
        record = orjson.dumps({"name": name, "created": time.time(), "hash": digest})
        await self.redis.hset(k.tokens(uid), token_id, record)  # listed (revocable) before it works
        await self.redis.set(k.token(digest), uid)

    async def token_user(self, digest: str) -> str | None:
        return await self.redis.get(self.keys.token(digest))

    async def list_tokens(self, uid: str) -> list[tuple[str, dict[str, Any]]]:
        rows = await self.redis.hgetall(self.keys.tokens(uid))
        return sorted(((token_id, orjson.loads(raw)) for token_id, raw in rows.items()),
                      key=lambda row: row[1].get("created", 0))

    async def remove_token(self, uid: str, token_id: str) -> bool:
        k = self.keys
        raw = await self.redis.hget(k.tokens(uid), token_id)
        if raw is None:
            return False
        await self.redis.delete(k.token(orjson.loads(raw)["hash"]))  # stops working before it is unlisted
        await self.redis.hdel(k.tokens(uid), token_id)
        return True

    # conversations ------------------------------------------------------

    def _refresh_ttls(self, pipe: Any, uid: str, sid: str, *, versions: bool = True) -> None:
        k = self.keys
        pipe.expire(k.messages(uid, sid), self.conversation_ttl)
        if versions:  # a turn refreshes them once, when it ends (they live as long as the messages)
            pipe.expire(k.versions(uid, sid), self.conversation_ttl)
            pipe.expire(k.forks(uid, sid), self.conversation_ttl)
        pipe.expire(k.meta(uid, sid), self.index_ttl)
        pipe.expire(k.index(uid), self.index_ttl)
        pipe.expire(k.claim(uid), self.index_ttl)

    async def create_conversation(self, conversation: Conversation, first_message: Message, *,
                                  limit: int = 0) -> Creation:
        """Write a new conversation with its first message and list it in its owner's index, unless
        one with its id exists or the owner has `limit` (0: no limit) already. One atomic round trip."""
        sid, uid, k = conversation.id, conversation.user_id, self.keys
        fields = [str(item) for pair in conversation.to_hash().items() for item in pair]
        outcome, earlier = await self.redis.eval(
            CREATE_CONVERSATION, 6, k.meta(uid, sid), k.messages(uid, sid), k.index(uid), k.claim(uid),
            k.versions(uid, sid), k.forks(uid, sid),
            sid, limit, conversation.updated * 1000, first_message.to_json(), self.conversation_ttl, self.index_ttl,
            *fields)
        return Creation(written=outcome == 1, existed=outcome == 0, earlier=int(earlier))

    async def get_conversation(self, uid: str, sid: str) -> Conversation | None:
        """The user's conversation `sid`; None when it does not exist under that user."""
        return _owned(uid, sid, await self.redis.hgetall(self.keys.meta(uid, sid)))

    async def list_conversations(
        self, uid: str, *, limit: int = 20, cursor: tuple[float, str] | None = None
    ) -> tuple[list[Conversation], tuple[float, str] | None]:
        """Newest activity first. The cursor is the (score, id) of the previous page's last item,
        so sessions that share an activity time are neither skipped nor repeated."""
        key = self.keys.index(uid)
        if cursor is None:
            rows = await self.redis.zrevrange(key, 0, limit, withscores=True)
        else:
            score, last_id = cursor
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zcount(key, score, score)
                pipe.zrevrangebyscore(key, score, "-inf", start=0, num=limit + 2, withscores=True)
                ties, rows = await pipe.execute()
            if ties > 1:
                rows = await self.redis.zrevrangebyscore(
                    key, score, "-inf", start=0, num=limit + 1 + ties, withscores=True
                )
            # equal scores come in descending member order: the page goes on after last_id
            rows = [(sid, s) for sid, s in rows if s < score or sid < last_id][: limit + 1]
        has_more = len(rows) > limit
        rows = rows[:limit]
        conversations = await self._load_conversations(uid, [sid for sid, _ in rows])
        next_cursor = (rows[-1][1], rows[-1][0]) if has_more and rows else None
        return conversations, next_cursor

    async def _load_conversations(self, uid: str, sids: list[str]) -> list[Conversation]:
        if not sids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.hgetall(self.keys.meta(uid, sid))
            rows = await pipe.execute()
        found, missing = [], []
        for sid, data in zip(sids, rows):
            conversation = _owned(uid, sid, data)
            if conversation is not None:
                found.append(conversation)
            else:
                missing.append(sid)
        if missing:
            await self.redis.zrem(self.keys.index(uid), *missing)
        return found

    async def search_conversations(self, uid: str, query: str, *, limit: int = 20) -> list[Conversation]:
        """Case-insensitive match on title, preview and message text of the user's recent conversations.

        Redis has no full-text index without modules, so this scans the newest
        SEARCH_SCAN_LIMIT conversations' metadata and then the messages of those
        whose metadata did not match, stopping once `limit` matches are found.
        """
        needle = query.casefold().strip()
        if not needle:
            return []
        sids = await self.redis.zrevrange(self.keys.index(uid), 0, SEARCH_SCAN_LIMIT - 1)
        conversations = await self._load_conversations(uid, sids)
        matches: list[Conversation] = []
        rest: list[Conversation] = []
        for conversation in conversations:
            if needle in conversation.title.casefold() or needle in conversation.preview.casefold():
                matches.append(conversation)
            else:
                rest.append(conversation)
        # stored JSON keeps non-ASCII as is (orjson), so most needles can be looked for in the raw
        # text and only the candidates parsed; needles with JSON-escaped characters are parsed always
        raw_match = not any(char in needle for char in '"\\') and needle.isprintable()
        batch = 50
        for start in range(0, len(rest), batch):
            if len(matches) >= limit:
                break
            chunk = rest[start : start + batch]
            async with self.redis.pipeline(transaction=False) as pipe:
                for conversation in chunk:
                    pipe.lrange(self.keys.messages(uid, conversation.id), 0, -1)
                rows = await pipe.execute()
            for conversation, raw_messages in zip(chunk, rows):
                if any(_message_contains(raw, needle, raw_match) for raw in raw_messages):
                    matches.append(conversation)
        order = {c.id: i for i, c in enumerate(conversations)}
        matches.sort(key=lambda c: order[c.id])
        return matches[:limit]

    async def update_conversation(self, conversation: Conversation, *, title: str | None, role: str | None) -> None:
        fields: dict[str, str] = {}
        if title is not None:
            fields["title"] = title
        if role is not None:
            fields["role"] = role
        if fields:
            await self.redis.hset(self.keys.meta(conversation.user_id, conversation.id), mapping=fields)

    async def delete_conversation(self, conversation: Conversation) -> None:
        sid, uid = conversation.id, conversation.user_id
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*self.keys.conversation_keys(uid, sid))
            pipe.zrem(self.keys.index(uid), sid)
            await pipe.execute()

    async def restore_conversation(self, conversation: Conversation, messages: list[Message],
                                   versions: dict[str, str] | None = None, forks: dict[str, str] | None = None) -> None:
        """Put a deleted conversation back (undo), with its metadata, messages and versions."""
        sid, uid, k = conversation.id, conversation.user_id, self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*k.conversation_keys(uid, sid))
            pipe.hset(k.meta(uid, sid), mapping=conversation.to_hash())
            if versions:
                pipe.hset(k.versions(uid, sid), mapping=versions)
            if forks:
                pipe.hset(k.forks(uid, sid), mapping=forks)
            if messages:
                pipe.rpush(k.messages(uid, sid), *[m.to_json() for m in messages])
            pipe.zadd(k.index(uid), {sid: conversation.updated * 1000})
            self._refresh_ttls(pipe, uid, sid)
            await pipe.execute()

    # messages -----------------------------------------------------------

    async def all_messages(self, conversation: Conversation) -> list[Message]:
        key = self.keys.messages(conversation.user_id, conversation.id)
        return [Message.from_json(raw) for raw in await self.redis.lrange(key, 0, -1)]

    async def message_page(self, conversation: Conversation, *, limit: int,
                           before: int | None) -> tuple[list[Message], int, int]:
        """A page of messages ending just before list index `before` (default: the end).

        Returns (messages, index of the first returned message, total). Two commands
        whatever the history length.
        """
        key = self.keys.messages(conversation.user_id, conversation.id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(key)
            if before is None:
                pipe.lrange(key, -limit, -1)
            else:
                pipe.lrange(key, max(0, before - limit), before - 1 if before > 0 else -1)
            total, raw = await pipe.execute()
        if before is not None and before <= 0:
            raw = []
        messages = [Message.from_json(item) for item in raw]
        end = total if before is None else min(before, total)
        return messages, max(0, end - len(messages)), total

    async def turn_end_state(self, uid: str, sid: str, *, tail: int) -> tuple[list[Message], int, dict[int, str],
                                                                             Conversation | None]:
        """What the bubble replacing a streamed reply shows, in one round trip: the last `tail` messages
        (and the list index of the first), the version labels, the conversation (None if gone)."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(k.messages(uid, sid))
            pipe.lrange(k.messages(uid, sid), -tail, -1)
            pipe.hgetall(k.versions(uid, sid))
            pipe.hgetall(k.meta(uid, sid))
            total, raw, labels, meta = await pipe.execute()
        messages = [Message.from_json(item) for item in raw]
        return messages, max(0, total - len(messages)), _labels(labels), _owned(uid, sid, meta)

    async def version_labels(self, conversation: Conversation) -> dict[int, str]:
        """"shown/count" by list index, where a message has versions (a small hash)."""
        return _labels(await self.redis.hgetall(self.keys.versions(conversation.user_id, conversation.id)))

    async def read_branch(self, conversation: Conversation, index: int) -> BranchState:
        """The active branch from list `index` on, with the version bookkeeping at and after it."""
        uid, sid, k = conversation.user_id, conversation.id, self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(k.messages(uid, sid), index, -1)
            pipe.hgetall(k.versions(uid, sid))
            messages, labels = await pipe.execute()
        versions = {int(j): label for j, label in labels.items() if int(j) >= index}
        forks: dict[int, str] = {}
        if versions:
            indices = sorted(versions)
            rows = await self.redis.hmget(k.forks(uid, sid), [str(j) for j in indices])
            forks = {j: raw for j, raw in zip(indices, rows) if raw is not None}
        return BranchState(index=index, messages=messages, forks=forks, versions=versions)

    async def write_branch(self, conversation: Conversation, change: BranchChange, *, preview: str) -> None:
        """Replace the active branch from `change.index` on, with its version bookkeeping: one MULTI."""
        sid, uid, k = conversation.id, conversation.user_id, self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.ltrim(k.messages(uid, sid), 0, change.index - 1)
            if change.messages:
                pipe.rpush(k.messages(uid, sid), *change.messages)
            if change.forks_del:
                pipe.hdel(k.forks(uid, sid), *[str(j) for j in change.forks_del])
            if change.forks_set:
                pipe.hset(k.forks(uid, sid), mapping={str(j): raw for j, raw in change.forks_set.items()})
            if change.versions_del:
                pipe.hdel(k.versions(uid, sid), *[str(j) for j in change.versions_del])
            if change.versions_set:
                pipe.hset(k.versions(uid, sid), mapping={str(j): v for j, v in change.versions_set.items()})
            pipe.hset(k.meta(uid, sid), mapping={"count": change.index + len(change.messages), "preview": preview})
            self._refresh_ttls(pipe, uid, sid)
            await pipe.execute()

    async def message_count(self, conversation: Conversation) -> int:
        return int(await self.redis.llen(self.keys.messages(conversation.user_id, conversation.id)))

    async def message_at(self, conversation: Conversation, index: int) -> Message | None:
        raw = await self.redis.lindex(self.keys.messages(conversation.user_id, conversation.id), index)
        return Message.from_json(raw) if raw else None

    async def session_of_message(self, uid: str, mid: str) -> str | None:
        return await self.redis.get(self.keys.message(uid, mid))

    async def find_message_index(self, conversation: Conversation, mid: str, *, chunk: int = 200) -> int | None:
        """The list index of a message of the active branch, searched from the newest."""
        key = self.keys.messages(conversation.user_id, conversation.id)
        total = await self.redis.llen(key)
        end = total
        while end > 0:
            start = max(0, end - chunk)
            rows = await self.redis.lrange(key, start, end - 1)
            for offset in range(len(rows) - 1, -1, -1):
                if f'"id":"{mid}"' in rows[offset]:
                    return start + offset
            end = start
        return None

    def _claim_request(self, pipe: Any, uid: str, request_id: str, turn_id: str) -> None:
        """Record that a client request starts `turn_id` (two replies: whether it was new, and the turn
        id of the request that holds the id)."""
        key = self.keys.request(uid, request_id)
        pipe.set(key, turn_id, nx=True, ex=REQUEST_ID_SECONDS)
        pipe.get(key)

    async def undo_repeated_start(self, uid: str, sid: str, turn_id: str, *, locked: bool,
                                  hits: list[tuple[str, str, int, int]]) -> None:
        """A repeated request took the lock and counted its limits in the same round trip that found it
        repeated (lock_turn): give the lock back and the counts, so a double click counts once."""
        async with self.redis.pipeline(transaction=False) as pipe:
            if locked:
                pipe.eval(RELEASE_LOCK, 1, self.keys.lock(uid, sid), turn_id)
            for name, key, window, _ in hits:
                pipe.decr(self.keys.limit(name, key, window))
            await pipe.execute()

    async def forget_request(self, uid: str, request_id: str) -> None:
        """A request that started nothing (refused): the same id may try again."""
        await self.redis.delete(self.keys.request(uid, request_id))

    # turns --------------------------------------------------------------

    async def lock_turn(self, uid: str, sid: str, *, turn_id: str, hits: list[tuple[str, str, int, int]],
                        request_id: str | None = None) -> TurnLock:
        """Claim the client's request id (if any), read the metadata, take the conversation's lock and
        count limits: one round trip (`earlier`: the request repeats one that started that turn).

        The lock is a lease of `lease_ms`: the writer renews it while the reply generates
        (renew_leases), so a host that dies frees the conversation within seconds.
        `hits` are (limit name, key, window number, window seconds) counters to increment,
        as in count_hits(). Whether the caller may go on is the core's decision; it gives
        the lock back with release_lock() when not.
        """
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            if request_id:
                self._claim_request(pipe, uid, request_id, turn_id)
            pipe.hgetall(k.meta(uid, sid))
            pipe.set(k.lock(uid, sid), turn_id, nx=True, px=self.lease_ms)
            pipe.llen(k.messages(uid, sid))
            self._count_hits(pipe, hits)
            replies = await pipe.execute()
        earlier = None
        if request_id:
            claimed, holder, *replies = replies
            earlier = None if claimed else (holder or None)
        meta, locked, length, *counts = replies
        if meta and meta.get("user_id") != uid:
            meta = {}
        return TurnLock(meta=meta, locked=bool(locked), length=int(length), counts=[int(c) for c in counts[0::2]],
                        earlier=earlier)

    async def release_lock(self, uid: str, sid: str, holder: str) -> None:
        """Give the lock back, if `holder` (a turn id) still holds it."""
        await self.redis.eval(RELEASE_LOCK, 1, self.keys.lock(uid, sid), holder)

    async def renew_leases(self, held: list[tuple[TurnRef, str]], finished: list[TurnRef]) -> list[Lease]:
        """Renew the locks of the turns generating here (turn, session id) and list them as running with
        their new deadline; forget the `finished` ones. One pipeline. Says, per held turn, whether its
        lock was lost or Stop was asked for it (request_cancel)."""
        k = self.keys
        deadline = (time.time() * 1000) + self.lease_ms
        async with self.redis.pipeline(transaction=False) as pipe:
            for ref, sid in held:
                pipe.eval(RENEW_LEASE, 3, k.lock(ref.user_id, sid), k.recovery(ref), k.turn(ref),
                          ref.turn_id, self.lease_ms)
            if held:
                pipe.zadd(k.running, {k.running_member(ref): deadline for ref, _ in held})
            if finished:
                pipe.zrem(k.running, *[k.running_member(ref) for ref in finished])
            results = await pipe.execute()
        return [Lease(int(result)) for result in results[: len(held)]]

    async def lapsed_turns(self, limit: int = 100) -> list[TurnRef]:
        """Turns listed as running whose writer stopped renewing its lease."""
        members = await self.redis.zrangebyscore(self.keys.running, "-inf", time.time() * 1000, start=0, num=limit)
        return [self.keys.running_ref(member) for member in members]

    async def forget_running(self, refs: list[TurnRef]) -> None:
        if refs:
            await self.redis.zrem(self.keys.running, *[self.keys.running_member(ref) for ref in refs])

    async def save_turn_start(
        self, conversation: Conversation, message: Message | None, *, turn_id: str, context_messages: int
    ) -> list[Message]:
        """Save the user message and the turn's state, and read the context window back: one MULTI.

        `conversation` already carries what the turn changes (title, preview, role, count,
        updated); the lock makes this the only writer of its count while the turn starts.
        The window is the last `context_messages` messages (LRANGE -N -1), whatever the length.
        A user message is also indexed by its id (editing it by id needs its conversation).
        """
        sid, uid, k = conversation.id, conversation.user_id, self.keys
        ref = TurnRef(uid, turn_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            if message is not None:  # None: a retry or a regenerated reply answers the message already there
                pipe.rpush(k.messages(uid, sid), message.to_json())
                pipe.set(k.message(uid, message.id), sid, ex=self.conversation_ttl)
            pipe.hset(
                k.meta(uid, sid),
                mapping={
                    "title": conversation.title, "preview": conversation.preview, "role": conversation.role,
                    "count": conversation.message_count, "updated": repr(conversation.updated), "turn": turn_id,
                    "last": turn_id,
                },
            )
            pipe.zadd(k.index(uid), {sid: conversation.updated * 1000})
            pipe.hset(k.turn(ref), mapping={"session_id": sid, "user_id": uid, "status": "running", "message_id": ""})
            pipe.expire(k.turn(ref), TURN_RETENTION_SECONDS)
            self._refresh_ttls(pipe, uid, sid, versions=False)
            pipe.lrange(k.messages(uid, sid), -context_messages, -1)
            results = await pipe.execute()
        return [Message.from_json(raw) for raw in results[-1]]

    async def finish_turn(
        self,
        conversation: Conversation,
        *,
        turn_id: str,
        reply: Message | None,
        preview: str = "",
        final_event: TurnEvent,
        unwritten: list[TurnEvent] | None = None,
        release_lock: bool = True,
        conversation_exists: bool = True,
    ) -> None:
        """Save the reply, write the stream's last chunks and final event, release the lock: one MULTI.

        `preview` is what the session list shows for the conversation once `reply` is saved.
        """
        sid, uid, k = conversation.id, conversation.user_id, self.keys
        ref = TurnRef(uid, turn_id)
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            if reply is not None and conversation_exists:
                pipe.rpush(k.messages(uid, sid), reply.to_json())
                pipe.hincrby(k.meta(uid, sid), "count", 1)
                pipe.hset(k.meta(uid, sid), mapping={"preview": preview, "updated": repr(now), "turn": ""})
                pipe.zadd(k.index(uid), {sid: now * 1000})
            elif conversation_exists:
                pipe.hset(k.meta(uid, sid), "turn", "")
            pipe.hset(
                k.turn(ref),
                mapping={"status": reply.status if reply else "error", "message_id": reply.id if reply else ""},
            )
            if unwritten:
                pipe.xadd(k.events(ref), _entry_fields(unwritten), id=f"0-{unwritten[-1].seq}",
                          maxlen=STREAM_MAXLEN, approximate=True)
            pipe.xadd(k.events(ref), _event_fields(final_event), id=f"0-{final_event.seq}",
                      maxlen=STREAM_MAXLEN, approximate=True)
            pipe.expire(k.events(ref), STREAM_RETENTION_SECONDS)
            if release_lock:
                pipe.eval(RELEASE_LOCK, 1, k.lock(uid, sid), turn_id)
            if conversation_exists:
                self._refresh_ttls(pipe, uid, sid)
            await pipe.execute()
        if self.cluster:
            await self._wake_readers([ref])

    async def abandon_turn(self, conversation: Conversation, turn_id: str, final_event: TurnEvent) -> None:
        """A turn whose save failed: its state says error, readers elsewhere get the error event, the
        lock goes. Each command on its own: where a full Redis refuses some, the others still apply."""
        sid, uid, k = conversation.id, conversation.user_id, self.keys
        ref = TurnRef(uid, turn_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(k.events(ref), _event_fields(final_event), id=f"0-{final_event.seq}")
            pipe.expire(k.events(ref), STREAM_RETENTION_SECONDS)
            pipe.eval(RELEASE_LOCK, 1, k.lock(uid, sid), turn_id)
            pipe.hset(k.turn(ref), "status", "error")
            pipe.hset(k.meta(uid, sid), "turn", "")
            await pipe.execute(raise_on_error=False)
        if self.cluster:
            await self._wake_readers([ref])

    async def append_events(self, batch: Iterable[tuple[TurnRef, list[TurnEvent]]]) -> None:
        """Write the chunk events of many turns in one pipeline, one stream entry per turn.

        Consecutive chunks of a turn share an entry whose id is the last seq; its `f`
        (first seq) and `n` (lengths) let a reader resuming mid-entry take just the
        chunks it lacks. Not a transaction: the order per key holds, and one bad
        entry must not fail the others. On a Cluster each entry is also announced on
        its turn's wake-up channel (followers.ClusterFollower).
        """
        k = self.keys
        refs = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for ref, events in batch:
                refs.append(ref)
                pipe.xadd(k.events(ref), _entry_fields(events), id=f"0-{events[-1].seq}",
                          maxlen=STREAM_MAXLEN, approximate=True)
                if events[0].seq == 1:  # later entries need no EXPIRE of their own: finish_turn sets the last one
                    pipe.expire(k.events(ref), STREAM_RETENTION_SECONDS + self.turn_timeout)
            results = await pipe.execute(raise_on_error=False)
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            connection = [e for e in errors if isinstance(e, (RedisConnectionError, RedisTimeoutError))]
            if connection:
                raise connection[0]
            # "ID equal or smaller": a resent pipeline whose first run was applied; the entries are there
            log.warning("event write refused: %s", errors[0])
        if self.cluster:
            await self._wake_readers(refs)

    async def _wake_readers(self, refs: list[TurnRef]) -> None:
        """Cluster: tell followers on other hosts which turns have new events: one message per flush,
        on one channel every worker listens to (best effort: they also look once a second)."""
        if not refs:
            return
        try:
            await self.redis.publish(self.keys.wake_channel, " ".join(ref.turn_id for ref in refs))
        except RedisError as exc:
            log.debug("wake-up not published: %s", exc)

    async def turn_saved(self, ref: TurnRef) -> bool:
        """Whether the turn's end is already saved (a save whose reply was lost on the way back)."""
        return await self.redis.hget(self.keys.turn(ref), "status") not in (None, "running")

    async def claim_recovery(self, ref: TurnRef, session_id: str) -> bool:
        """One host saves an orphaned turn (the others wait for its result); never while its writer
        holds the lease again."""
        k = self.keys
        return bool(await self.redis.eval(CLAIM_RECOVERY, 2, k.lock(ref.user_id, session_id), k.recovery(ref),
                                          ref.turn_id))

    async def get_turn(self, ref: TurnRef) -> TurnInfo | None:
        data = await self.redis.hgetall(self.keys.turn(ref))
        if not data or data.get("user_id") != ref.user_id:
            return None
        return TurnInfo(
            id=ref.turn_id, session_id=data.get("session_id", ""), user_id=ref.user_id,
            status=data.get("status", "running"), message_id=data.get("message_id", ""),
        )

    async def read_events(self, ref: TurnRef, after: int) -> list[TurnEvent]:
        """The turn's events after seq `after`, as its stream holds them now."""
        rows = await self.redis.xrange(self.keys.events(ref), min=f"(0-{after}", max="+")
        return _events_after(rows, after)

    async def read_many_events(self, positions: dict[TurnRef, int]) -> dict[TurnRef, list[TurnEvent]]:
        """Each turn's events after its position: one pipeline of XRANGEs (any slots)."""
        refs = list(positions)
        async with self.redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.xrange(self.keys.events(ref), min=f"(0-{positions[ref]}", max="+")
            replies = await pipe.execute()
        return {ref: _events_after(rows, positions[ref]) for ref, rows in zip(refs, replies) if rows}

    async def read_turn_streams(
        self, positions: dict[TurnRef, int], *, worker_id: str, wake_seen: str, block_ms: int
    ) -> tuple[dict[TurnRef, list[TurnEvent]], str]:
        """One XREAD BLOCK over many turns' event streams and a worker's wake-up stream (one Redis only:
        on a Cluster the streams are in many slots, and followers.ClusterFollower is used instead).

        `positions` maps a turn -> the last seq already had. Returns the new events per
        turn, and the id of the newest wake-up seen (to pass back next time).
        """
        wake_key = self.keys.follower_wake(worker_id)
        turn_of_key = {self.keys.events(ref): ref for ref in positions}
        streams = {wake_key: wake_seen, **{key: f"0-{positions[ref]}" for key, ref in turn_of_key.items()}}
        reply = await self.blocking_redis.xread(streams, block=block_ms, count=1000)
        events: dict[TurnRef, list[TurnEvent]] = {}
        for key, rows in reply or []:
            if key == wake_key:
                wake_seen = rows[-1][0]
                continue
            ref = turn_of_key[key]
            events[ref] = _events_after(rows, positions[ref])
        return events, wake_seen

    async def wake_follower(self, worker_id: str) -> None:
        """End a worker's blocking XREAD now, so that it starts over with a new stream in it."""
        key = self.keys.follower_wake(worker_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.expire(key, FOLLOWER_WAKE_TTL_SECONDS)
            await pipe.execute()

    async def wake_ups(self) -> AsyncIterator[list[str]]:
        """Cluster: the turn ids of each flush any worker announced."""
        pubsub = self.blocking_redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.keys.wake_channel)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield message["data"].split()
        finally:
            await pubsub.aclose()

    async def find_message(self, uid: str, sid: str, message_id: str) -> Message | None:
        """The saved reply of a finished turn (it is near the end of the list)."""
        for raw in reversed(await self.redis.lrange(self.keys.messages(uid, sid), -50, -1)):
            message = Message.from_json(raw)
            if message.id == message_id:
                return message
        return None

    async def request_cancel(self, ref: TurnRef) -> None:
        """Ask whichever worker generates the turn to stop it: at once by pub/sub, and within a lease
        renewal (renew_leases) from the mark on the turn, if that worker's subscription was down."""
        if await self.redis.eval(MARK_CANCEL, 1, self.keys.turn(ref)):
            await self.redis.publish(self.keys.cancel_channel, ref.turn_id)

    async def cancel_requests(self) -> AsyncIterator[str]:
        """Ids of the turns whose cancellation any worker published."""
        pubsub = self.blocking_redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.keys.cancel_channel)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield message["data"]
        finally:
            await pubsub.aclose()

    async def lock_holder(self, uid: str, sid: str) -> str | None:
        """The id of the turn that holds the conversation's lock, if any."""
        return await self.redis.get(self.keys.lock(uid, sid))

    # undoable deletion (web UI) ----------------------------------------

    async def delete_undoably(self, conversation: Conversation, *, keep_seconds: int) -> None:
        """Delete a conversation but keep a copy for `keep_seconds`, so an undo can put it back."""
        sid, uid, k = conversation.id, conversation.user_id, self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(k.messages(uid, sid), 0, -1)
            pipe.hgetall(k.versions(uid, sid))
            pipe.hgetall(k.forks(uid, sid))
            messages, versions, forks = await pipe.execute()
        copy = orjson.dumps({"meta": conversation.to_hash(), "messages": messages, "versions": versions, "forks": forks})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(k.trash(uid, sid), copy, ex=keep_seconds)
            pipe.delete(*k.conversation_keys(uid, sid))
            pipe.zrem(k.index(uid), sid)
            await pipe.execute()

    async def undo_delete(self, uid: str, sid: str) -> Conversation | None:
        """Put back a conversation deleted with `delete_undoably`; None when the copy is gone or not uid's."""
        raw = await self.redis.get(self.keys.trash(uid, sid))
        if raw is None:
            return None
        copy = orjson.loads(raw)
        if copy["meta"].get("user_id") != uid:
            return None
        conversation = Conversation.from_hash(sid, copy["meta"])
        messages = [Message.from_json(item) for item in copy["messages"]]
        await self.restore_conversation(conversation, messages, copy.get("versions"), copy.get("forks"))
        await self.redis.delete(self.keys.trash(uid, sid))
        return conversation

    # custom roles ---------------------------------------------------------

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

    # conversation settings the user picks --------------------------------

    async def set_conversation_model(self, conversation: Conversation, model: str) -> None:
        await self.redis.hset(self.keys.meta(conversation.user_id, conversation.id), "model", model)

    async def rename_conversation(self, conversation: Conversation, title: str) -> None:
        """A title the user chose: marked so that a generated one never replaces it."""
        await self.redis.hset(self.keys.meta(conversation.user_id, conversation.id),
                              mapping={"title": title, "title_by": "user"})

    async def set_generated_title(self, uid: str, sid: str, *, expected: str, title: str) -> bool:
        """Replace the title only while it is still `expected` (the one made from the first message) and
        the user has not renamed the conversation: a rename always wins, whenever it lands."""
        return bool(await self.redis.eval(SET_GENERATED_TITLE, 1, self.keys.meta(uid, sid), expected, title, uid))

    # read-only links --------------------------------------------------------

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

    # search index -----------------------------------------------------------

    def _index_commands(self, pipe: Any, uid: str, sid: str, terms: Iterable[str]) -> None:
        k = self.keys
        terms = list(terms)
        if not terms:
            return
        owner = k.term(uid, "")  # (every term's key is this plus the term)
        pipe.eval(INDEX_TERMS, len(terms) + 2, k.lexicon(uid), k.conversation_terms(uid, sid),
                  *[owner + term for term in terms], sid, self.index_ttl, *terms)

    async def index_terms(self, entries: Iterable[tuple[str, str, Iterable[str]]]) -> None:
        """Add (uid, sid, terms) entries to their owners' search indexes: one pipeline for them all."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for uid, sid, terms in entries:
                self._index_commands(pipe, uid, sid, terms)
            await pipe.execute()

    async def unindex_conversation(self, uid: str, sid: str) -> None:
        k = self.keys
        terms = await self.redis.smembers(k.conversation_terms(uid, sid))
        async with self.redis.pipeline(transaction=True) as pipe:
            for term in terms:
                pipe.srem(k.term(uid, term), sid)
            pipe.delete(k.conversation_terms(uid, sid))
            await pipe.execute()

    async def search_index_ready(self, uid: str) -> bool:
        return bool(await self.redis.exists(self.keys.search_ready(uid)))

    async def mark_search_index_ready(self, uid: str, ready: bool = True) -> None:
        if ready:
            await self.redis.set(self.keys.search_ready(uid), "1", ex=self.index_ttl)
        else:
            await self.redis.delete(self.keys.search_ready(uid))

    async def session_ids(self, uid: str) -> list[str]:
        return await self.redis.zrevrange(self.keys.index(uid), 0, -1)

    async def search_ids(self, uid: str, terms: list[str], prefix: str = "", *, limit: int = 30,
                         expand: int = 50) -> list[str]:
        """Ids of the user's conversations holding every term (and, if `prefix`, a term starting with it),
        newest activity first. At most two round trips whatever the number of conversations: the prefix's
        terms from the lexicon, then one script over the term sets and the session index (SEARCH_INDEX)."""
        k = self.keys
        expanded: list[str] = []
        if prefix:
            low = b"[" + prefix.encode()
            expanded = await self.redis.zrangebylex(k.lexicon(uid), low, low + b"\xff", start=0, num=expand)
            if not expanded:
                return []
        scratch = k.search_scratch(uid, secrets.token_hex(6))
        keys = [k.index(uid), scratch, scratch + ":u", *(k.term(uid, term) for term in terms),
                *(k.term(uid, term) for term in expanded)]
        return await self.redis.eval(SEARCH_INDEX, len(keys), *keys, limit, len(terms), len(expanded),
                                     SEARCH_SCAN_LIMIT)

    async def load_conversations(self, uid: str, sids: list[str]) -> list[Conversation]:
        """The user's conversations by id, in that order (missing ones are left out)."""
        return await self._load_conversations(uid, sids)

    # import -------------------------------------------------------------------

    async def import_conversation(self, conversation: Conversation, messages: list[Message],
                                  terms: Iterable[str]) -> None:
        """Write an imported conversation, list it and index it for search: one MULTI in its owner's slot."""
        sid, uid, k = conversation.id, conversation.user_id, self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*k.conversation_keys(uid, sid))
            pipe.hset(k.meta(uid, sid), mapping=conversation.to_hash())
            if messages:
                pipe.rpush(k.messages(uid, sid), *[m.to_json() for m in messages])
            for message in messages:
                if message.role == "user":
                    pipe.set(k.message(uid, message.id), sid, ex=self.conversation_ttl)
            pipe.zadd(k.index(uid), {sid: conversation.updated * 1000})
            pipe.set(k.claim(uid), "1", ex=self.index_ttl)
            self._index_commands(pipe, uid, sid, terms)
            self._refresh_ttls(pipe, uid, sid)
            await pipe.execute()


def _owned(uid: str, sid: str, meta: dict[str, str]) -> Conversation | None:
    """The conversation a metadata hash describes, if it is `uid`'s (None: absent, or another's)."""
    return Conversation.from_hash(sid, meta) if meta and meta.get("user_id") == uid else None


def _labels(raw: dict[str, str]) -> dict[int, str]:
    """A versions hash: "shown/count" by list index."""
    return {int(index): label for index, label in raw.items()}


def _event_fields(event: TurnEvent) -> dict[str, str]:
    fields = {"t": event.type, "c": event.content}
    if event.message_id:
        fields["m"] = event.message_id
    return fields


def _message_contains(raw: str, needle: str, raw_match: bool) -> bool:
    if raw_match and needle not in raw.casefold():
        return False
    return needle in orjson.loads(raw)["content"].casefold()


def _entry_fields(events: list[TurnEvent]) -> dict[str, str]:
    """One stream entry for consecutive events of a turn (chunks), or for a single event."""
    if len(events) == 1:
        return _event_fields(events[0])
    return {
        "t": "chunk",
        "c": "".join(e.content for e in events),
        "f": str(events[0].seq),
        "n": ",".join(str(len(e.content)) for e in events),
    }


def _events_after(rows: list[tuple[str, dict[str, str]]], after: int) -> list[TurnEvent]:
    """The events of stream entries past seq `after` (an entry may start before it)."""
    return [event for entry_id, fields in rows for event in _parse_entry(entry_id, fields) if event.seq > after]


def _parse_entry(entry_id: str, fields: dict[str, str]) -> list[TurnEvent]:
    last = int(entry_id.split("-", 1)[1])
    if "n" not in fields:
        return [TurnEvent(seq=last, type=fields.get("t", "chunk"), content=fields.get("c", ""),
                          message_id=fields.get("m", ""))]
    content, first, events, offset = fields.get("c", ""), int(fields["f"]), [], 0
    for index, size in enumerate(int(n) for n in fields["n"].split(",")):
        events.append(TurnEvent(seq=first + index, type="chunk", content=content[offset : offset + size]))
        offset += size
    return events
