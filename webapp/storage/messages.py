"""A conversation's messages: pages of them, one by id, and the versions (branches) of a message.

Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

from webapp.base.models import BranchChange, BranchState, Conversation, Message
from webapp.storage.base import StoreBase, conversation_of


class MessageStore(StoreBase):
    """A conversation's messages: the commands of their keys (see store.Store)."""

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
        return messages, max(0, total - len(messages)), version_labels_of(labels), conversation_of(uid, sid, meta)

    async def version_labels(self, conversation: Conversation) -> dict[int, str]:
        """"shown/count" by list index, where a message has versions (a small hash)."""
        return version_labels_of(await self.redis.hgetall(self.keys.versions(conversation.user_id, conversation.id)))

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

    async def find_message(self, uid: str, sid: str, message_id: str) -> Message | None:
        """The saved reply of a finished turn (it is near the end of the list)."""
        for raw in reversed(await self.redis.lrange(self.keys.messages(uid, sid), -50, -1)):
            message = Message.from_json(raw)
            if message.id == message_id:
                return message
        return None


def version_labels_of(raw: dict[str, str]) -> dict[int, str]:
    """A versions hash: "shown/count" by list index."""
    return {int(index): label for index, label in raw.items()}
