"""Turns: a conversation's lock and its lease, a turn's start and its save, repeated requests, recovery.

Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

import time
from typing import Any

from webapp.base.models import Conversation, Lease, Message, TurnEvent, TurnInfo, TurnLock
from webapp.storage.base import claim_deadline
from webapp.storage.keys import TurnRef
from webapp.storage.spending import SpendingStore
from webapp.storage.turn_events import (
    STREAM_MAXLEN,
    STREAM_RETENTION_SECONDS,
    TurnEventStore,
    entry_fields,
    event_fields,
)

TURN_RETENTION_SECONDS = 86400

REQUEST_ID_SECONDS = 600  # a repeated form (same request id) within this long starts no second turn

# A turn's start (save_turn_start): the user message, the conversation's metadata and session index, the
# turn's state, the TTLs (base._refresh_ttls's, less the versions'), then the context window read back; only
# while the conversation exists: the lock proved it, but a delete does not wait for a lock (it stops the
# running reply, which this one is not yet) and must not get back a metadata hash with no owner and a
# list holding only this message. KEYS: meta, messages, session index, turn, claim, archive, the message's
# id key; ARGV: the message's JSON ('' for none), conversation TTL, title, preview, role, count, updated,
# turn id, index score, '1' to unarchive, session id, user id, turn TTL, index TTL, claim value, where the
# context window starts (-N). The window (a list), or nil when the conversation is gone and nothing was
# written.
START_TURN = """
if redis.call('hexists', KEYS[1], 'user_id') == 0 then return false end
if ARGV[1] ~= '' then
  redis.call('rpush', KEYS[2], ARGV[1])
  redis.call('set', KEYS[7], ARGV[11], 'EX', ARGV[2])
end
redis.call('hset', KEYS[1], 'title', ARGV[3], 'preview', ARGV[4], 'role', ARGV[5], 'count', ARGV[6],
           'updated', ARGV[7], 'turn', ARGV[8], 'last', ARGV[8])
redis.call('zadd', KEYS[3], ARGV[9], ARGV[11])
if ARGV[10] == '1' then
  redis.call('hdel', KEYS[1], 'archived')
  redis.call('zrem', KEYS[6], ARGV[11])
end
redis.call('hset', KEYS[4], 'session_id', ARGV[11], 'user_id', ARGV[12], 'status', 'running', 'message_id', '')
redis.call('expire', KEYS[4], ARGV[13])
redis.call('expire', KEYS[2], ARGV[2])
redis.call('expire', KEYS[1], ARGV[14])
redis.call('expire', KEYS[3], ARGV[14])
redis.call('set', KEYS[5], ARGV[15])
return redis.call('lrange', KEYS[2], ARGV[16], -1)
"""

# What an edit, a regenerate or a turn with files wrote before its start found the conversation gone
# (START_TURN): a branch (messages, versions, forks, the metadata's count and preview), files moved in.
# KEYS: meta, messages, versions, forks, files (keys.conversation_keys), session index; ARGV: session id.
DROP_OWNERLESS = """
if redis.call('hexists', KEYS[1], 'user_id') == 1 then return 0 end
redis.call('del', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('zrem', KEYS[6], ARGV[1])
return 1
"""

# A reply's writes to its conversation (finish_turn), made only while the conversation exists (its
# metadata names its owner): a delete can land while the reply generates (its turn began after the
# delete read the conversation, or it runs on another host) and must not get back a metadata hash with
# no owner and a message list holding only the reply. The TTLs are base._refresh_ttls's.
# KEYS: meta, messages, session index, versions, forks, files, claim; ARGV: the reply's JSON ('' for
# none), preview, updated, index score, tokens to add, conversation TTL, index TTL, claim value, session
# id. 1: written; 0: the conversation is gone, nothing was.
SAVE_REPLY = """
if redis.call('hexists', KEYS[1], 'user_id') == 0 then return 0 end
if ARGV[1] ~= '' then
  redis.call('rpush', KEYS[2], ARGV[1])
  redis.call('hincrby', KEYS[1], 'count', 1)
  redis.call('hset', KEYS[1], 'preview', ARGV[2], 'updated', ARGV[3], 'turn', '')
  redis.call('zadd', KEYS[3], ARGV[4], ARGV[9])
else
  redis.call('hset', KEYS[1], 'turn', '')
end
if ARGV[5] ~= '0' then redis.call('hincrby', KEYS[1], 'tok', ARGV[5]) end
for _, i in ipairs({2, 4, 5, 6}) do redis.call('expire', KEYS[i], ARGV[6]) end
redis.call('expire', KEYS[1], ARGV[7])
redis.call('expire', KEYS[3], ARGV[7])
redis.call('set', KEYS[7], ARGV[8])
return 1
"""

# Give a conversation's lock back only if it is still the holder's: a save retried after its
# lock expired must not drop the lock another turn has taken since.
RELEASE_LOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

# Renew a writer's lease (1; 2: renewed, but Stop was asked for the turn). A lease that lapsed while
# its writer was only slow (an overloaded host) is taken again, unless a recovery of the turn has begun
# or another turn holds the conversation (0: the writer stops). Atomic with CLAIM_RECOVERY, so a turn is
# either saved by its writer or recovered. A turn its writer saved since the renewal was asked for (the
# save gives the lock back, and the next turn may take it) is 3: over, not lost.
# KEYS: lock, recovery, turn; ARGV: turn id, lease ms.
RENEW_LEASE = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
elseif redis.call('exists', KEYS[2]) == 1 then
  return 0
elseif redis.call('hget', KEYS[3], 'status') ~= 'running' then
  return 3
elseif holder then
  return 0
else
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if redis.call('hexists', KEYS[3], 'cancel') == 1 then return 2 end
return 1
"""

# A turn whose save failed for good: nothing of its reply is kept, now or later, and its conversation is
# free at once (0, and nothing done: another host has begun to recover it, and will keep its text). Its
# stream goes (a recovery would save the text it holds), then, each on its own, what a full Redis
# (noeviction) may refuse: the turn's state, the final event for readers elsewhere. DEL and HDEL are
# never refused for memory. KEYS: lock, recovery, turn, events, meta; ARGV: turn id, the final event's
# seq, type, text, the stream's retention (s).
ABANDON_TURN = """
if redis.call('exists', KEYS[2]) == 1 then return 0 end
if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end
if redis.call('hget', KEYS[5], 'turn') == ARGV[1] then redis.call('hdel', KEYS[5], 'turn') end
redis.call('del', KEYS[4])
redis.pcall('hset', KEYS[3], 'status', 'error', 'message_id', '')
redis.pcall('xadd', KEYS[4], '0-' .. ARGV[2], 't', ARGV[3], 'c', ARGV[4])
redis.call('expire', KEYS[4], ARGV[5])
return 1
"""

# One host saves an orphaned turn, and only while its writer does not hold the lease.
# KEYS: lock, recovery; ARGV: turn id.
CLAIM_RECOVERY = """
if redis.call('get', KEYS[1]) == ARGV[1] then return 0 end
if redis.call('set', KEYS[2], '1', 'NX', 'EX', 60) then return 1 end
return 0
"""


class TurnStore(TurnEventStore, SpendingStore):
    """Turns: the commands of their keys (see store.Store)."""

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

    async def lock_turn(self, uid: str, sid: str, *, turn_id: str, hits: list[tuple[str, str, int, int]],
                        request_id: str | None = None, budget_month: str = "") -> TurnLock:
        """Claim the client's request id (if any), read the metadata, take the conversation's lock and
        count limits: one round trip (`earlier`: the request repeats one that started that turn).

        The lock is a lease of `lease_ms`: the writer renews it while the reply generates
        (renew_leases), so a host that dies frees the conversation within seconds.
        `hits` are (limit name, key, window number, window seconds) counters to increment,
        as in count_hits(). Whether the caller may go on is the core's decision; it gives
        the lock back with release_lock() when not. With a `budget_month` (budgets are on), the same round
        trip reads the user's tokens that month and own budget, and takes their budget lane if free.
        """
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            if request_id:
                self._claim_request(pipe, uid, request_id, turn_id)
            pipe.hgetall(k.meta(uid, sid))
            pipe.set(k.lock(uid, sid), turn_id, nx=True, px=self.lease_ms)
            pipe.llen(k.messages(uid, sid))
            if budget_month:
                self._read_budget(pipe, uid, budget_month, turn_id, self.turn_timeout * 1000)
            self._count_hits(pipe, hits)
            replies = await pipe.execute()
        earlier = None
        if request_id:
            claimed, holder, *replies = replies
            earlier = None if claimed else (holder or None)
        meta, locked, length, *counts = replies
        budget = None
        if budget_month:
            budget, counts = self.budget_replies(counts[:4]), counts[4:]
        if meta and meta.get("user_id") != uid:
            meta = {}
        return TurnLock(meta=meta, locked=bool(locked), length=int(length), counts=[int(c) for c in counts[0::2]],
                        earlier=earlier, budget=budget)

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
        self, conversation: Conversation, message: Message | None, *, turn_id: str, context_messages: int,
        unarchive: bool = False,
    ) -> list[Message] | None:
        """Save the user message and the turn's state, and read the context window back: one script
        (START_TURN), which writes nothing and returns None when the conversation is gone (deleted since
        the lock was taken).

        `conversation` already carries what the turn changes (title, preview, role, count,
        updated); the lock makes this the only writer of its count while the turn starts.
        The window is the last `context_messages` messages (LRANGE -N -1), whatever the length.
        A user message is also indexed by its id (editing it by id needs its conversation).
        `unarchive`: the conversation leaves the archive.
        """
        sid, uid, k = conversation.id, conversation.user_id, self.keys
        message_key = k.message(uid, message.id if message is not None else "-")
        window = await self.redis.eval(
            START_TURN, 7, k.meta(uid, sid), k.messages(uid, sid), k.index(uid), k.turn(TurnRef(uid, turn_id)),
            k.claim(uid), k.archived(uid), message_key,
            message.to_json() if message is not None else "", self.conversation_ttl, conversation.title,
            conversation.preview, conversation.role, conversation.message_count, repr(conversation.updated), turn_id,
            repr(conversation.updated * 1000), "1" if unarchive else "0", sid, uid, TURN_RETENTION_SECONDS,
            self.index_ttl, claim_deadline(self.index_ttl), -context_messages,  # (from Python: -0 is "0")
        )
        return [Message.from_json(raw) for raw in window] if isinstance(window, list) else None

    async def drop_ownerless(self, uid: str, sid: str) -> None:
        """After a start found its conversation gone: what the start wrote before it found out (an edit's or a
        regenerate's new branch, the files it moved in) goes too, unless the conversation is back (an undo)."""
        k = self.keys
        await self.redis.eval(DROP_OWNERLESS, 6, *k.conversation_keys(uid, sid), k.index(uid), sid)

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
        spending_day: str = "",
        lane: bool = False,
    ) -> bool:
        """Save the reply, write the stream's last chunks and final event, release the lock: one MULTI.
        True when the reply (or, with none, the end of the turn) was written to its conversation; False
        when the conversation is gone (deleted meanwhile, here or on another host: SAVE_REPLY).

        `preview` is what the session list shows for the conversation once `reply` is saved. With a
        `spending_day` (YYYY-MM-DD), the reply's tokens are added to its user's sums (even when its
        conversation was deleted meanwhile: they were spent); `lane`: the turn gives its budget lane back.
        """
        sid, uid, k = conversation.id, conversation.user_id, self.keys
        ref = TurnRef(uid, turn_id)
        now = time.time()
        usage = reply.usage if reply is not None and spending_day else None  # (counted: what it spent)
        async with self.redis.pipeline(transaction=True) as pipe:
            # (the first command: its answer is results[0])
            pipe.eval(SAVE_REPLY, 7, k.meta(uid, sid), k.messages(uid, sid), k.index(uid), k.versions(uid, sid),
                      k.forks(uid, sid), k.files(uid, sid), k.claim(uid),
                      reply.to_json() if reply is not None else "", preview, repr(now), repr(now * 1000),
                      usage.input_tokens + usage.output_tokens if usage is not None else 0,
                      self.conversation_ttl, self.index_ttl, claim_deadline(self.index_ttl), sid)
            pipe.hset(
                k.turn(ref),
                mapping={"status": reply.status if reply else "error", "message_id": reply.id if reply else ""},
            )
            if unwritten:
                pipe.xadd(k.events(ref), entry_fields(unwritten), id=f"0-{unwritten[-1].seq}",
                          maxlen=STREAM_MAXLEN, approximate=True)
            pipe.xadd(k.events(ref), event_fields(final_event), id=f"0-{final_event.seq}",
                      maxlen=STREAM_MAXLEN, approximate=True)
            pipe.expire(k.events(ref), STREAM_RETENTION_SECONDS)
            if release_lock:
                pipe.eval(RELEASE_LOCK, 1, k.lock(uid, sid), turn_id)
            if usage is not None and reply is not None:
                self._count_spending(pipe, uid, spending_day, reply.model, usage)
            if lane:
                self._release_lane(pipe, uid, turn_id)
            results = await pipe.execute()
        if self.cluster:
            await self._wake_readers([ref])
        return results[0] == 1

    async def abandon_turn(self, conversation: Conversation, turn_id: str, final_event: TurnEvent) -> bool:
        """A turn whose save failed for good: nothing of its reply stays, the lock goes, readers elsewhere get
        the final event where Redis takes it (ABANDON_TURN). False: another host recovers the turn."""
        sid, uid, k = conversation.id, conversation.user_id, self.keys
        ref = TurnRef(uid, turn_id)
        done = await self.redis.eval(ABANDON_TURN, 5, k.lock(uid, sid), k.recovery(ref), k.turn(ref), k.events(ref),
                                     k.meta(uid, sid), turn_id, final_event.seq, final_event.type, final_event.content,
                                     STREAM_RETENTION_SECONDS)
        if self.cluster:
            await self._wake_readers([ref])
        return bool(done)

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

    async def lock_holder(self, uid: str, sid: str) -> str | None:
        """The id of the turn that holds the conversation's lock, if any."""
        return await self.redis.get(self.keys.lock(uid, sid))
