"""The search index: each user's terms, the conversations that hold them, and the search itself.

Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

import secrets
from typing import Any, Iterable

import orjson

from webapp.base.models import Conversation
from webapp.storage.base import StoreBase

SEARCH_SCAN_LIMIT = 2000

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

# Index one conversation's new terms: KEYS = lexicon, the conversation's term set, then each term's set,
# then the conversation's metadata (nothing is written for a conversation that is gone: terms queued
# for it, or a reply saved, just before a delete removed its entries must not bring them back); ARGV =
# conversation id, TTL, the prefix of a term's key, '1' to renew every term, then the terms (in
# KEYS' order). One call instead of two commands per term: a reply has dozens of terms, and each command
# queued in a pipeline costs the app more than the server. A term the conversation already holds costs
# one SADD: its set and the lexicon are written for a term new to the conversation. Once a day (or half
# the TTL, if shorter: when the conversation's own term set has less left than that), on a rebuild and
# on an undo, every term the conversation holds gets its set written again and its TTL renewed, so a
# term's set that expired or was evicted since (the conversation's list still naming it) comes back.
# (Its term keys share the conversation's hash tag: one slot.) A later turn mostly repeats words, and
# its terms were ~270 of a turn's Redis commands.
INDEX_TERMS = """
if redis.call('hexists', KEYS[#KEYS], 'user_id') == 0 then return 0 end
local sid, ttl, owner = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local renew = ARGV[4] == '1' or redis.call('ttl', KEYS[2]) < ttl - math.min(86400, ttl / 2)
for i = 3, #KEYS - 1 do
  local term = ARGV[i + 2]
  if redis.call('sadd', KEYS[2], term) == 1 and not renew then
    redis.call('sadd', KEYS[i], sid)
    redis.call('expire', KEYS[i], ttl)
    redis.call('zadd', KEYS[1], 0, term)
  end
end
if renew then
  for _, term in ipairs(redis.call('smembers', KEYS[2])) do
    local key = owner .. term
    redis.call('sadd', key, sid)
    redis.call('expire', key, ttl)
    redis.call('zadd', KEYS[1], 0, term)
  end
  redis.call('expire', KEYS[2], ttl)
  redis.call('expire', KEYS[1], ttl)
end
return #KEYS - 3
"""


class SearchStore(StoreBase):
    """The search index: the commands of their keys (see store.Store)."""

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
                if any(message_contains(raw, needle, raw_match) for raw in raw_messages):
                    matches.append(conversation)
        order = {c.id: i for i, c in enumerate(conversations)}
        matches.sort(key=lambda c: order[c.id])
        return matches[:limit]

    def _index_commands(self, pipe: Any, uid: str, sid: str, terms: Iterable[str], *, renew: bool = False) -> None:
        k = self.keys
        terms = list(terms)
        if not terms:
            return
        owner = k.term(uid, "")  # (every term's key is this plus the term)
        pipe.eval(INDEX_TERMS, len(terms) + 3, k.lexicon(uid), k.conversation_terms(uid, sid),
                  *[owner + term for term in terms], k.meta(uid, sid), sid, self.index_ttl, owner, "1" if renew else "0",
                  *terms)

    async def index_terms(self, entries: Iterable[tuple[str, str, Iterable[str]]], *, renew: bool = False) -> None:
        """Add (uid, sid, terms) entries to their owners' search indexes: one pipeline for them all.
        `renew`: every term each conversation holds is written again (a rebuild, an undo)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for uid, sid, terms in entries:
                self._index_commands(pipe, uid, sid, terms, renew=renew)
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


def message_contains(raw: str, needle: str, raw_match: bool) -> bool:
    if raw_match and needle not in raw.casefold():
        return False
    return needle in orjson.loads(raw)["content"].casefold()
