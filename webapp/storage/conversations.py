"""Conversations: their metadata, the per-user index, delete and undo, rename, titles, import.

Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

from typing import Iterable

import orjson

from webapp.base.models import Conversation, Creation, Message
from webapp.storage.attachments import AttachmentStore
from webapp.storage.base import claim_deadline, conversation_of
from webapp.storage.search import SearchStore

# Write a new conversation, unless one with its id exists (0), its owner has ARGV[2] (when not 0)
# already (-1), its storage as last measured is at the quota ARGV[10] (when not 0; -3), or it is over
# the creation rate ARGV[7] (when not 0; -2): 1 when written. Also returns how many conversations the
# owner had before, the rate's packed counts (base.COUNT_HIT's shape; a refused creation is not
# counted) and the storage measured (-1: none recent): one round trip, and two creates racing (a double
# click) write one conversation and never pass the limits. KEYS: meta, messages, index, claim, versions,
# forks, the rate's counter of this window and of the previous one (the owner's slot: the key is the
# uid), the usage; ARGV: session id, limit, index score, first message JSON, conversation TTL, index TTL,
# the rate per window, the previous window's weight, the counter's TTL, the quota in bytes, then the
# metadata hash as field, value, ...
# (the claim marker holds when the identity's data expires: the index score's second plus the index
# TTL; identities.py)
CREATE_CONVERSATION = """
local count = redis.call('zcard', KEYS[3])
local used = tonumber(redis.call('get', KEYS[9]) or '-1')
if redis.call('exists', KEYS[1]) == 1 then return {0, count, 0, used} end
if tonumber(ARGV[2]) > 0 and count >= tonumber(ARGV[2]) then return {-1, count, 0, used} end
if tonumber(ARGV[10]) > 0 and used >= tonumber(ARGV[10]) then return {-3, count, 0, used} end
local rate = 0
if tonumber(ARGV[7]) > 0 then
  local n = redis.call('incr', KEYS[7])
  redis.call('expire', KEYS[7], ARGV[9])
  local p = math.max(tonumber(redis.call('get', KEYS[8]) or '0'), 0)
  rate = math.min(p, 999999) * 1000000 + math.min(n, 999999)
  if n + math.floor(p * tonumber(ARGV[8])) > tonumber(ARGV[7]) then
    redis.call('decr', KEYS[7])
    return {-2, count, rate, used}
  end
end
redis.call('hset', KEYS[1], unpack(ARGV, 11))
redis.call('rpush', KEYS[2], ARGV[4])
redis.call('zadd', KEYS[3], ARGV[3], ARGV[1])
redis.call('set', KEYS[4], string.format('%d', math.floor(tonumber(ARGV[3]) / 1000) + tonumber(ARGV[6])))
for _, key in ipairs({KEYS[2], KEYS[5], KEYS[6]}) do redis.call('expire', key, ARGV[5]) end
for _, key in ipairs({KEYS[1], KEYS[3]}) do redis.call('expire', key, ARGV[6]) end
return {1, count, rate, used}
"""

# A generated title lands only on the title made from the first message, never on a user's rename.
SET_GENERATED_TITLE = (
    "if redis.call('hget', KEYS[1], 'user_id') ~= ARGV[3] then return 0 end "
    "if redis.call('hget', KEYS[1], 'title_by') == 'user' then return 0 end "
    "if redis.call('hget', KEYS[1], 'title') ~= ARGV[1] then return 0 end "
    "redis.call('hset', KEYS[1], 'title', ARGV[2], 'title_by', 'model') return 1"
)


class ConversationStore(SearchStore, AttachmentStore):
    """Conversations: the commands of their keys (see store.Store)."""

    async def create_conversation(self, conversation: Conversation, first_message: Message, *,
                                  limit: int = 0, rate: tuple[tuple[str, str, int, int], int, float] | None = None,
                                  quota: int = 0) -> Creation:
        """Write a new conversation with its first message and list it in its owner's index, unless
        one with its id exists, the owner has `limit` (0: no limit) already, their storage as last
        measured (usage.py) is at `quota` bytes (0: none), or they are over `rate`: (the counter, as
        limits.count_hits takes it, keyed by the owner; its limit per window; the previous window's
        weight). One atomic round trip."""
        sid, uid, k = conversation.id, conversation.user_id, self.keys
        fields = [str(item) for pair in conversation.to_hash().items() for item in pair]
        (name, key, window, seconds), per_window, weight = rate or (("none", uid, 0, 60), 0, 0.0)
        outcome, earlier, counts, used = await self.redis.eval(
            CREATE_CONVERSATION, 9, k.meta(uid, sid), k.messages(uid, sid), k.index(uid), k.claim(uid),
            k.versions(uid, sid), k.forks(uid, sid), k.limit(name, key, window), k.limit(name, key, window - 1),
            k.usage(uid),
            sid, limit, conversation.updated * 1000, first_message.to_json(), self.conversation_ttl, self.index_ttl,
            per_window, repr(weight), 2 * seconds + 30, quota, *fields)
        return Creation(written=outcome == 1, existed=outcome == 0, earlier=int(earlier), rate_limited=outcome == -2,
                        rate_counts=int(counts), storage_full=outcome == -3,
                        storage_used=None if int(used) < 0 else int(used))

    async def get_conversation(self, uid: str, sid: str) -> Conversation | None:
        """The user's conversation `sid`; None when it does not exist under that user."""
        return conversation_of(uid, sid, await self.redis.hgetall(self.keys.meta(uid, sid)))

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
            self._unshelve(pipe, uid, [sid])
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
            self._reshelve(pipe, conversation)
            await pipe.execute()

    async def delete_undoably(self, conversation: Conversation, *, keep_seconds: int) -> None:
        """Delete a conversation but keep a copy for `keep_seconds`, so an undo can put it back."""
        sid, uid, k = conversation.id, conversation.user_id, self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(k.messages(uid, sid), 0, -1)
            pipe.hgetall(k.versions(uid, sid))
            pipe.hgetall(k.forks(uid, sid))
            pipe.hmget(k.meta(uid, sid), "pinned", "archived", "folder")
            messages, versions, forks, shelf = await pipe.execute()
        # (where it was kept as stored now: the caller's copy may be older than a pin)
        meta = {**conversation.to_hash(), **{name: value for name, value in zip(("pinned", "archived", "folder"), shelf)
                                             if value}}
        copy = orjson.dumps({"meta": meta, "messages": messages, "versions": versions, "forks": forks})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(k.trash(uid, sid), copy, ex=keep_seconds)
            self._trash_files(pipe, uid, sid, keep_seconds)
            pipe.delete(*k.conversation_keys(uid, sid))
            pipe.zrem(k.index(uid), sid)
            self._unshelve(pipe, uid, [sid])
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
        async with self.redis.pipeline(transaction=True) as pipe:
            self._untrash_files(pipe, uid, sid)
            pipe.delete(self.keys.trash(uid, sid))
            await pipe.execute()
        return conversation

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

    async def load_conversations(self, uid: str, sids: list[str]) -> list[Conversation]:
        """The user's conversations by id, in that order (missing ones are left out)."""
        return await self._load_conversations(uid, sids)

    async def import_conversation(self, conversation: Conversation, messages: list[Message],
                                  terms: Iterable[str], files: dict[str, str] | None = None) -> None:
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
            self._write_files(pipe, uid, sid, files or {})
            pipe.zadd(k.index(uid), {sid: conversation.updated * 1000})
            pipe.set(k.claim(uid), claim_deadline(self.index_ttl))
            self._index_commands(pipe, uid, sid, terms)
            self._refresh_ttls(pipe, uid, sid)
            self._reshelve(pipe, conversation)
            await pipe.execute()
