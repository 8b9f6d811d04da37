"""Every Redis key and command of the app. Nothing else touches Redis; nothing here knows HTTP.

The store knows keys, commands and which writes must be atomic; it holds no policy:
what a title or preview says, whether a rate is over its limit, or which conversation
to reuse is decided by the core (conversations.py, turn_writer.py) and handed in.

Keys (all prefixed `chat:`):
    user:{uid}                     claim marker of an identity (string, index TTL)
    user:{uid}:sessions            ZSET session_id -> last activity (ms), index TTL
    session:{sid}                  HASH metadata (user_id, title, preview, role, count, created, updated, turn)
    session:{sid}:messages         LIST of JSON messages, RPUSH (chronological), conversation TTL
    session:{sid}:lock             the running turn's id while a reply is generated (one per conversation)
    session:{sid}:versions         HASH list index -> "shown/count" where a message has versions, conversation TTL
    session:{sid}:forks            HASH list index -> JSON of the versions kept aside there (versions.py), conversation TTL
    message:{mid}                  the session id of a user message (edit by message id), conversation TTL
    request:{uid}:{rid}            the turn a client request id started (a repeated request starts none), 10 min
    turn:{tid}                     HASH turn state (session_id, user_id, status, message_id)
    turn:{tid}:events              STREAM of reply events, ids `0-{seq}`, capped, expires after the turn
    trash:{sid}                    JSON copy of a conversation deleted from the web UI, kept briefly for undo
    cancel                         pub/sub channel: turn ids to cancel, on whichever worker runs them
    limit:{name}:{key}:{window}    fixed-window counter of a limit (per IP, per account...), expires after its window
    account:{uid}                  HASH an account (username, password hash, created); no TTL
    account:name:{username}        the uid of a username (lower case); no TTL
    signin:{sha256}                HASH a sign-in (uid, created), by the hash of its cookie; session TTL
    user:{uid}:signins             SET the sign-in hashes of a user (sign out everywhere)
    token:{sha256}                 the uid of a personal API token, by the hash of the token; no TTL
    user:{uid}:tokens              HASH token id -> JSON {name, created, hash} of a user's tokens
"""

from __future__ import annotations

import logging
import time
from typing import Any, AsyncIterator, Iterable

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .models import Conversation, Message, TurnEvent, TurnInfo, TurnLock
from .versions import BranchChange, BranchState

log = logging.getLogger("webapp.store")

PREFIX = "chat:"
CANCEL_CHANNEL = PREFIX + "cancel"
STREAM_MAXLEN = 20000
STREAM_RETENTION_SECONDS = 3600
TURN_RETENTION_SECONDS = 86400
FOLLOWER_WAKE_TTL_SECONDS = 60  # a worker that is gone leaves nothing behind for long
SEARCH_SCAN_LIMIT = 2000


def _user_key(uid: str) -> str:
    return f"{PREFIX}user:{uid}"


def _index_key(uid: str) -> str:
    return f"{PREFIX}user:{uid}:sessions"


def _meta_key(sid: str) -> str:
    return f"{PREFIX}session:{sid}"


def _messages_key(sid: str) -> str:
    return f"{PREFIX}session:{sid}:messages"


def _versions_key(sid: str) -> str:
    return f"{PREFIX}session:{sid}:versions"


def _forks_key(sid: str) -> str:
    return f"{PREFIX}session:{sid}:forks"


def _message_key(mid: str) -> str:
    return f"{PREFIX}message:{mid}"


def _request_key(uid: str, request_id: str) -> str:
    return f"{PREFIX}request:{uid}:{request_id}"


# Give a conversation's lock back only if it is still the holder's: a save retried after its
# lock expired must not drop the lock another turn has taken since.
RELEASE_LOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def _lock_key(sid: str) -> str:
    return f"{PREFIX}session:{sid}:lock"


def _turn_key(tid: str) -> str:
    return f"{PREFIX}turn:{tid}"


def _events_key(tid: str) -> str:
    return f"{PREFIX}turn:{tid}:events"


def _follower_wake_key(worker_id: str) -> str:
    return f"{PREFIX}follower:{worker_id}:wake"


def _trash_key(sid: str) -> str:
    return f"{PREFIX}trash:{sid}"


def _limit_key(name: str, key: str, window: int) -> str:
    return f"{PREFIX}limit:{name}:{key}:{window}"


def _account_key(uid: str) -> str:
    return f"{PREFIX}account:{uid}"


def _account_name_key(username: str) -> str:
    return f"{PREFIX}account:name:{username.lower()}"


def _signin_key(digest: str) -> str:
    return f"{PREFIX}signin:{digest}"


def _signins_key(uid: str) -> str:
    return f"{PREFIX}user:{uid}:signins"


def _token_key(digest: str) -> str:
    return f"{PREFIX}token:{digest}"


def _tokens_key(uid: str) -> str:
    return f"{PREFIX}user:{uid}:tokens"


class Store:
    """Typed operations over one redis.asyncio client (decode_responses=True)."""

    def __init__(
        self,
        redis: Redis,
        *,
        conversation_ttl: int,
        index_ttl: int,
        turn_timeout: int,
        blocking_redis: Redis | None = None,
    ) -> None:
        self.redis = redis
        # blocking reads (XREAD BLOCK, pub/sub) hold a connection for long: their own pool
        self.blocking_redis = blocking_redis or redis
        self.conversation_ttl = conversation_ttl
        self.index_ttl = index_ttl
        self.turn_timeout = turn_timeout

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except RedisError:
            return False

    # identities ---------------------------------------------------------

    async def claim_user(self, uid: str) -> bool:
        """Claim an identity that nobody holds yet; False when it is already someone's."""
        return bool(await self.redis.set(_user_key(uid), "1", nx=True, ex=self.index_ttl))

    async def identity_exists(self, uid: str) -> bool:
        """Whether an identity has been claimed (or still has data)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(_user_key(uid))
            pipe.exists(_index_key(uid))
            claimed, indexed = await pipe.execute()
        return bool(claimed or indexed)

    async def count_conversations(self, uid: str) -> int:
        return int(await self.redis.zcard(_index_key(uid)))

    async def move_conversations(self, from_uid: str, to_uid: str) -> int:
        """Give every conversation of `from_uid` to `to_uid` (an anonymous history claimed at sign-in)."""
        rows = await self.redis.zrange(_index_key(from_uid), 0, -1, withscores=True)
        for start in range(0, len(rows), 200):
            chunk = rows[start : start + 200]
            async with self.redis.pipeline(transaction=True) as pipe:
                for sid, score in chunk:
                    pipe.hset(_meta_key(sid), "user_id", to_uid)
                    pipe.zadd(_index_key(to_uid), {sid: score})
                    pipe.zrem(_index_key(from_uid), sid)
                pipe.expire(_index_key(to_uid), self.index_ttl)
                await pipe.execute()
        return len(rows)

    # limits -------------------------------------------------------------

    async def count_hits(self, hits: list[tuple[str, str, int, int]]) -> list[int]:
        """Count one hit in each (limit name, key, window number, window seconds): one round trip.

        Returns each window's count including this hit; whether that is too many is the caller's call.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            _count_hits(pipe, hits)
            results = await pipe.execute()
        return [int(count) for count in results[0::2]]

    # accounts -----------------------------------------------------------

    async def create_account(self, uid: str, username: str, password_hash: str) -> bool:
        """A new account; False when the username is taken (case-insensitively)."""
        if not await self.redis.set(_account_name_key(username), uid, nx=True):
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_account_key(uid), mapping={"username": username, "password": password_hash,
                                                  "created": repr(time.time())})
            pipe.set(_user_key(uid), "1")  # the account's identity is never free to claim
            await pipe.execute()
        return True

    async def account_by_name(self, username: str) -> tuple[str, dict[str, str]] | None:
        """(uid, account fields) of a username, or None."""
        uid = await self.redis.get(_account_name_key(username))
        if uid is None:
            return None
        data = await self.redis.hgetall(_account_key(uid))
        return (uid, data) if data else None

    async def account(self, uid: str) -> dict[str, str] | None:
        return await self.redis.hgetall(_account_key(uid)) or None

    async def set_password(self, uid: str, password_hash: str) -> None:
        await self.redis.hset(_account_key(uid), "password", password_hash)

    async def add_signin(self, uid: str, digest: str, ttl: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_signin_key(digest), mapping={"uid": uid, "created": repr(time.time())})
            pipe.expire(_signin_key(digest), ttl)
            pipe.sadd(_signins_key(uid), digest)
            pipe.expire(_signins_key(uid), ttl)
            await pipe.execute()

    async def signin_user(self, digest: str) -> str | None:
        return await self.redis.hget(_signin_key(digest), "uid")

    async def remove_signin(self, digest: str) -> None:
        uid = await self.redis.hget(_signin_key(digest), "uid")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(_signin_key(digest))
            if uid:
                pipe.srem(_signins_key(uid), digest)
            await pipe.execute()

    async def remove_all_signins(self, uid: str) -> int:
        digests = await self.redis.smembers(_signins_key(uid))
        async with self.redis.pipeline(transaction=True) as pipe:
            for digest in digests:
                pipe.delete(_signin_key(digest))
            pipe.delete(_signins_key(uid))
            await pipe.execute()
        return len(digests)

    async def add_token(self, uid: str, token_id: str, digest: str, name: str) -> None:
        record = orjson.dumps({"name": name, "created": time.time(), "hash": digest})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(_token_key(digest), uid)
            pipe.hset(_tokens_key(uid), token_id, record)
            await pipe.execute()

    async def token_user(self, digest: str) -> str | None:
        return await self.redis.get(_token_key(digest))

    async def list_tokens(self, uid: str) -> list[tuple[str, dict[str, Any]]]:
        rows = await self.redis.hgetall(_tokens_key(uid))
        return sorted(((token_id, orjson.loads(raw)) for token_id, raw in rows.items()),
                      key=lambda row: row[1].get("created", 0))

    async def remove_token(self, uid: str, token_id: str) -> bool:
        raw = await self.redis.hget(_tokens_key(uid), token_id)
        if raw is None:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(_token_key(orjson.loads(raw)["hash"]))
            pipe.hdel(_tokens_key(uid), token_id)
            await pipe.execute()
        return True

    # conversations ------------------------------------------------------

    def _refresh_ttls(self, pipe: Any, uid: str, sid: str, *, versions: bool = True) -> None:
        pipe.expire(_messages_key(sid), self.conversation_ttl)
        if versions:  # a turn refreshes them once, when it ends (they live as long as the messages)
            pipe.expire(_versions_key(sid), self.conversation_ttl)
            pipe.expire(_forks_key(sid), self.conversation_ttl)
        pipe.expire(_meta_key(sid), self.index_ttl)
        pipe.expire(_index_key(uid), self.index_ttl)
        pipe.expire(_user_key(uid), self.index_ttl)

    async def create_conversation(self, conversation: Conversation, first_message: Message) -> None:
        """Write a new conversation with its first message, and list it in its owner's index."""
        sid, uid = conversation.id, conversation.user_id
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_meta_key(sid), mapping=conversation.to_hash())
            pipe.rpush(_messages_key(sid), first_message.to_json())
            pipe.zadd(_index_key(uid), {sid: conversation.updated * 1000})
            pipe.set(_user_key(uid), "1", ex=self.index_ttl)
            self._refresh_ttls(pipe, uid, sid)
            await pipe.execute()

    async def get_conversation(self, sid: str) -> Conversation | None:
        data = await self.redis.hgetall(_meta_key(sid))
        return Conversation.from_hash(sid, data) if data else None

    async def list_conversations(
        self, uid: str, *, limit: int = 20, cursor: tuple[float, str] | None = None
    ) -> tuple[list[Conversation], tuple[float, str] | None]:
        """Newest activity first. The cursor is the (score, id) of the previous page's last item,
        so sessions that share an activity time are neither skipped nor repeated."""
        key = _index_key(uid)
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
                pipe.hgetall(_meta_key(sid))
            rows = await pipe.execute()
        found, missing = [], []
        for sid, data in zip(sids, rows):
            if data and data.get("user_id") == uid:
                found.append(Conversation.from_hash(sid, data))
            else:
                missing.append(sid)
        if missing:
            await self.redis.zrem(_index_key(uid), *missing)
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
        sids = await self.redis.zrevrange(_index_key(uid), 0, SEARCH_SCAN_LIMIT - 1)
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
                    pipe.lrange(_messages_key(conversation.id), 0, -1)
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
            await self.redis.hset(_meta_key(conversation.id), mapping=fields)

    async def delete_conversation(self, conversation: Conversation) -> None:
        sid = conversation.id
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(_meta_key(sid), _messages_key(sid), _versions_key(sid), _forks_key(sid))
            pipe.zrem(_index_key(conversation.user_id), sid)
            await pipe.execute()

    async def restore_conversation(self, conversation: Conversation, messages: list[Message],
                                   versions: dict[str, str] | None = None, forks: dict[str, str] | None = None) -> None:
        """Put a deleted conversation back (undo), with its metadata, messages and versions."""
        sid = conversation.id
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(_meta_key(sid), _messages_key(sid), _versions_key(sid), _forks_key(sid))
            pipe.hset(_meta_key(conversation.id), mapping=conversation.to_hash())
            if versions:
                pipe.hset(_versions_key(sid), mapping=versions)
            if forks:
                pipe.hset(_forks_key(sid), mapping=forks)
            if messages:
                pipe.rpush(_messages_key(conversation.id), *[m.to_json() for m in messages])
            pipe.zadd(_index_key(conversation.user_id), {conversation.id: conversation.updated * 1000})
            self._refresh_ttls(pipe, conversation.user_id, conversation.id)
            await pipe.execute()

    # messages -----------------------------------------------------------

    async def all_messages(self, sid: str) -> list[Message]:
        return [Message.from_json(raw) for raw in await self.redis.lrange(_messages_key(sid), 0, -1)]

    async def message_page(self, sid: str, *, limit: int, before: int | None) -> tuple[list[Message], int, int]:
        """A page of messages ending just before list index `before` (default: the end).

        Returns (messages, index of the first returned message, total). Two commands
        whatever the history length.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(_messages_key(sid))
            if before is None:
                pipe.lrange(_messages_key(sid), -limit, -1)
            else:
                pipe.lrange(_messages_key(sid), max(0, before - limit), before - 1 if before > 0 else -1)
            total, raw = await pipe.execute()
        if before is not None and before <= 0:
            raw = []
        messages = [Message.from_json(item) for item in raw]
        end = total if before is None else min(before, total)
        return messages, max(0, end - len(messages)), total

    async def version_labels(self, sid: str) -> dict[int, str]:
        """"shown/count" by list index, where a message has versions (a small hash)."""
        return {int(index): label for index, label in (await self.redis.hgetall(_versions_key(sid))).items()}

    async def read_branch(self, sid: str, index: int) -> BranchState:
        """The active branch from list `index` on, with the version bookkeeping at and after it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(_messages_key(sid), index, -1)
            pipe.hgetall(_versions_key(sid))
            messages, labels = await pipe.execute()
        versions = {int(j): label for j, label in labels.items() if int(j) >= index}
        forks: dict[int, str] = {}
        if versions:
            indices = sorted(versions)
            rows = await self.redis.hmget(_forks_key(sid), [str(j) for j in indices])
            forks = {j: raw for j, raw in zip(indices, rows) if raw is not None}
        return BranchState(index=index, messages=messages, forks=forks, versions=versions)

    async def write_branch(self, conversation: Conversation, change: BranchChange, *, preview: str) -> None:
        """Replace the active branch from `change.index` on, with its version bookkeeping: one MULTI."""
        sid, uid = conversation.id, conversation.user_id
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.ltrim(_messages_key(sid), 0, change.index - 1)
            if change.messages:
                pipe.rpush(_messages_key(sid), *change.messages)
            if change.forks_del:
                pipe.hdel(_forks_key(sid), *[str(j) for j in change.forks_del])
            if change.forks_set:
                pipe.hset(_forks_key(sid), mapping={str(j): raw for j, raw in change.forks_set.items()})
            if change.versions_del:
                pipe.hdel(_versions_key(sid), *[str(j) for j in change.versions_del])
            if change.versions_set:
                pipe.hset(_versions_key(sid), mapping={str(j): v for j, v in change.versions_set.items()})
            pipe.hset(_meta_key(sid), mapping={"count": change.index + len(change.messages), "preview": preview})
            self._refresh_ttls(pipe, uid, sid)
            await pipe.execute()

    async def message_at(self, sid: str, index: int) -> Message | None:
        raw = await self.redis.lindex(_messages_key(sid), index)
        return Message.from_json(raw) if raw else None

    async def session_of_message(self, mid: str) -> str | None:
        return await self.redis.get(_message_key(mid))

    async def find_message_index(self, sid: str, mid: str, *, chunk: int = 200) -> int | None:
        """The list index of a message of the active branch, searched from the newest."""
        total = await self.redis.llen(_messages_key(sid))
        end = total
        while end > 0:
            start = max(0, end - chunk)
            rows = await self.redis.lrange(_messages_key(sid), start, end - 1)
            for offset in range(len(rows) - 1, -1, -1):
                if f'"id":"{mid}"' in rows[offset]:
                    return start + offset
            end = start
        return None

    async def claim_request(self, uid: str, request_id: str, turn_id: str) -> str | None:
        """Record that a client request starts `turn_id`; the turn id of an earlier identical request, if any."""
        key = _request_key(uid, request_id)
        if await self.redis.set(key, turn_id, nx=True, ex=600):
            return None
        return await self.redis.get(key) or None

    async def forget_request(self, uid: str, request_id: str) -> None:
        """A request that started nothing (refused): the same id may try again."""
        await self.redis.delete(_request_key(uid, request_id))

    # turns --------------------------------------------------------------

    async def lock_turn(self, sid: str, *, turn_id: str, hits: list[tuple[str, str, int, int]]) -> TurnLock:
        """Read the metadata, take the conversation's turn lock and count limits: one round trip.

        `hits` are (limit name, key, window number, window seconds) counters to increment,
        as in count_hits(). Whether the caller may go on is the core's decision; it gives
        the lock back with release_lock() when not.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(_meta_key(sid))
            pipe.set(_lock_key(sid), turn_id, nx=True, ex=self.turn_timeout)
            pipe.llen(_messages_key(sid))
            _count_hits(pipe, hits)
            meta, locked, length, *counts = await pipe.execute()
        return TurnLock(meta=meta, locked=bool(locked), length=int(length), counts=[int(c) for c in counts[0::2]])

    async def release_lock(self, sid: str, holder: str) -> None:
        """Give the lock back, if `holder` (a turn id) still holds it."""
        await self.redis.eval(RELEASE_LOCK, 1, _lock_key(sid), holder)

    async def save_turn_start(
        self, conversation: Conversation, message: Message | None, *, turn_id: str, context_messages: int
    ) -> list[Message]:
        """Save the user message and the turn's state, and read the context window back: one MULTI.

        `conversation` already carries what the turn changes (title, preview, role, count,
        updated); the lock makes this the only writer of its count while the turn starts.
        The window is the last `context_messages` messages (LRANGE -N -1), whatever the length.
        A user message is also indexed by its id (editing it by id needs its conversation).
        """
        sid, uid = conversation.id, conversation.user_id
        async with self.redis.pipeline(transaction=True) as pipe:
            if message is not None:  # None: a retry or a regenerated reply answers the message already there
                pipe.rpush(_messages_key(sid), message.to_json())
                pipe.set(_message_key(message.id), sid, ex=self.conversation_ttl)
            pipe.hset(
                _meta_key(sid),
                mapping={
                    "title": conversation.title, "preview": conversation.preview, "role": conversation.role,
                    "count": conversation.message_count, "updated": repr(conversation.updated), "turn": turn_id,
                },
            )
            pipe.zadd(_index_key(uid), {sid: conversation.updated * 1000})
            pipe.hset(
                _turn_key(turn_id),
                mapping={"session_id": sid, "user_id": uid, "status": "running", "message_id": ""},
            )
            pipe.expire(_turn_key(turn_id), TURN_RETENTION_SECONDS)
            self._refresh_ttls(pipe, uid, sid, versions=False)
            pipe.lrange(_messages_key(sid), -context_messages, -1)
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
        sid, uid = conversation.id, conversation.user_id
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            if reply is not None and conversation_exists:
                pipe.rpush(_messages_key(sid), reply.to_json())
                pipe.hincrby(_meta_key(sid), "count", 1)
                pipe.hset(
                    _meta_key(sid), mapping={"preview": preview, "updated": repr(now), "turn": ""}
                )
                pipe.zadd(_index_key(uid), {sid: now * 1000})
            elif conversation_exists:
                pipe.hset(_meta_key(sid), "turn", "")
            pipe.hset(
                _turn_key(turn_id),
                mapping={"status": reply.status if reply else "error", "message_id": reply.id if reply else ""},
            )
            if unwritten:
                pipe.xadd(
                    _events_key(turn_id), _entry_fields(unwritten), id=f"0-{unwritten[-1].seq}",
                    maxlen=STREAM_MAXLEN, approximate=True,
                )
            pipe.xadd(
                _events_key(turn_id), _event_fields(final_event), id=f"0-{final_event.seq}",
                maxlen=STREAM_MAXLEN, approximate=True,
            )
            pipe.expire(_events_key(turn_id), STREAM_RETENTION_SECONDS)
            if release_lock:
                pipe.eval(RELEASE_LOCK, 1, _lock_key(sid), turn_id)
            if conversation_exists:
                self._refresh_ttls(pipe, uid, sid)
            await pipe.execute()

    async def abandon_turn(self, sid: str, turn_id: str, final_event: TurnEvent) -> None:
        """A turn whose save failed: its state says error, readers elsewhere get the error event, the
        lock goes. Each command on its own: where a full Redis refuses some, the others still apply."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(_events_key(turn_id), _event_fields(final_event), id=f"0-{final_event.seq}")
            pipe.expire(_events_key(turn_id), STREAM_RETENTION_SECONDS)
            pipe.eval(RELEASE_LOCK, 1, _lock_key(sid), turn_id)
            pipe.hset(_turn_key(turn_id), "status", "error")
            pipe.hset(_meta_key(sid), "turn", "")
            await pipe.execute(raise_on_error=False)

    async def append_events(self, batch: Iterable[tuple[str, list[TurnEvent]]]) -> None:
        """Write the chunk events of many turns in one pipeline, one stream entry per turn.

        Consecutive chunks of a turn share an entry whose id is the last seq; its `f`
        (first seq) and `n` (lengths) let a reader resuming mid-entry take just the
        chunks it lacks. Not a transaction: the order per key holds, and one bad
        entry must not fail the others.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            for turn_id, events in batch:
                pipe.xadd(
                    _events_key(turn_id), _entry_fields(events), id=f"0-{events[-1].seq}",
                    maxlen=STREAM_MAXLEN, approximate=True,
                )
                if events[0].seq == 1:  # later entries need no EXPIRE of their own: finish_turn sets the last one
                    pipe.expire(_events_key(turn_id), STREAM_RETENTION_SECONDS + self.turn_timeout)
            results = await pipe.execute(raise_on_error=False)
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            connection = [e for e in errors if isinstance(e, (RedisConnectionError, RedisTimeoutError))]
            if connection:
                raise connection[0]
            # "ID equal or smaller": a resent pipeline whose first run was applied; the entries are there
            log.warning("event write refused: %s", errors[0])

    async def turn_saved(self, turn_id: str) -> bool:
        """Whether the turn's end is already saved (a save whose reply was lost on the way back)."""
        return await self.redis.hget(_turn_key(turn_id), "status") not in (None, "running")

    async def claim_recovery(self, turn_id: str) -> bool:
        """One reader saves an orphaned turn; the others wait for its result."""
        return bool(await self.redis.set(_turn_key(turn_id) + ":recovery", "1", nx=True, ex=60))

    async def get_turn(self, turn_id: str) -> TurnInfo | None:
        data = await self.redis.hgetall(_turn_key(turn_id))
        if not data:
            return None
        return TurnInfo(
            id=turn_id, session_id=data.get("session_id", ""), user_id=data.get("user_id", ""),
            status=data.get("status", "running"), message_id=data.get("message_id", ""),
        )

    async def read_events(self, turn_id: str, after: int) -> list[TurnEvent]:
        """The turn's events after seq `after`, as its stream holds them now."""
        rows = await self.redis.xrange(_events_key(turn_id), min=f"(0-{after}", max="+")
        return _events_after(rows, after)

    async def read_turn_streams(
        self, positions: dict[str, int], *, worker_id: str, wake_seen: str, block_ms: int
    ) -> tuple[dict[str, list[TurnEvent]], str]:
        """One XREAD BLOCK over many turns' event streams and a worker's wake-up stream.

        `positions` maps turn id -> the last seq already had. Returns the new events per
        turn, and the id of the newest wake-up seen (to pass back next time).
        """
        wake_key = _follower_wake_key(worker_id)
        turn_of_key = {_events_key(turn_id): turn_id for turn_id in positions}
        streams = {wake_key: wake_seen, **{key: f"0-{positions[turn_id]}" for key, turn_id in turn_of_key.items()}}
        reply = await self.blocking_redis.xread(streams, block=block_ms, count=1000)
        events: dict[str, list[TurnEvent]] = {}
        for key, rows in reply or []:
            if key == wake_key:
                wake_seen = rows[-1][0]
                continue
            turn_id = turn_of_key[key]
            events[turn_id] = _events_after(rows, positions[turn_id])
        return events, wake_seen

    async def wake_follower(self, worker_id: str) -> None:
        """End a worker's blocking XREAD now, so that it starts over with a new stream in it."""
        key = _follower_wake_key(worker_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.expire(key, FOLLOWER_WAKE_TTL_SECONDS)
            await pipe.execute()

    async def find_message(self, sid: str, message_id: str) -> Message | None:
        """The saved reply of a finished turn (it is near the end of the list)."""
        for raw in reversed(await self.redis.lrange(_messages_key(sid), -50, -1)):
            message = Message.from_json(raw)
            if message.id == message_id:
                return message
        return None

    async def request_cancel(self, turn_id: str) -> None:
        await self.redis.publish(CANCEL_CHANNEL, turn_id)

    async def cancel_requests(self) -> AsyncIterator[str]:
        """Turn ids whose cancellation any worker published."""
        pubsub = self.blocking_redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(CANCEL_CHANNEL)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield message["data"]
        finally:
            await pubsub.aclose()

    async def lock_holder(self, sid: str) -> str | None:
        """The id of the turn that holds the conversation's lock, if any."""
        return await self.redis.get(_lock_key(sid))

    # undoable deletion (web UI) ----------------------------------------

    async def delete_undoably(self, conversation: Conversation, *, keep_seconds: int) -> None:
        """Delete a conversation but keep a copy for `keep_seconds`, so an undo can put it back."""
        sid = conversation.id
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(_messages_key(sid), 0, -1)
            pipe.hgetall(_versions_key(sid))
            pipe.hgetall(_forks_key(sid))
            messages, versions, forks = await pipe.execute()
        copy = orjson.dumps({"meta": conversation.to_hash(), "messages": messages, "versions": versions, "forks": forks})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(_trash_key(conversation.id), copy, ex=keep_seconds)
            pipe.delete(_meta_key(sid), _messages_key(sid), _versions_key(sid), _forks_key(sid))
            pipe.zrem(_index_key(conversation.user_id), conversation.id)
            await pipe.execute()

    async def undo_delete(self, uid: str, sid: str) -> Conversation | None:
        """Put back a conversation deleted with `delete_undoably`; None when the copy is gone or not uid's."""
        raw = await self.redis.get(_trash_key(sid))
        if raw is None:
            return None
        copy = orjson.loads(raw)
        if copy["meta"].get("user_id") != uid:
            return None
        conversation = Conversation.from_hash(sid, copy["meta"])
        messages = [Message.from_json(item) for item in copy["messages"]]
        await self.restore_conversation(conversation, messages, copy.get("versions"), copy.get("forks"))
        await self.redis.delete(_trash_key(sid))
        return conversation


def _count_hits(pipe: Any, hits: list[tuple[str, str, int, int]]) -> None:
    """INCR each (limit name, key, window number, window seconds) counter; it expires with its window.
    Each adds two replies to the pipeline: the count, then the EXPIRE's."""
    for name, key, window, seconds in hits:
        pipe.incr(_limit_key(name, key, window))
        pipe.expire(_limit_key(name, key, window), seconds + 30)


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
