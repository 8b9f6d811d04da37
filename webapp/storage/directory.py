"""The user directory an admin pages through (an index of accounts: never a SCAN of the keyspace), a
user's figures for the admin page, removing a user's last keys, and the audit list of admin actions.

Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

import time
from typing import Any

import orjson

from webapp.storage.base import StoreBase
from webapp.storage.spending import TOTAL

AUDIT_KEPT = 1000


def name_member(username: str, uid: str) -> str:
    """A member of the name index: sorted (ZRANGEBYLEX) by the lower-case name; `|` is in no username."""
    return f"{username.lower()}|{uid}"


class DirectoryStore(StoreBase):
    """The user directory, the admin page's figures and the audit list (see store.Store)."""

    def _list_user(self, pipe: Any, uid: str, username: str, created: float) -> None:
        pipe.zadd(self.keys.users, {uid: created})
        pipe.zadd(self.keys.user_names, {name_member(username, uid): 0})

    async def list_user(self, uid: str, username: str, created: float) -> None:
        """Put an account in the directory (made now, or one made before the directory: at its sign-in)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            self._list_user(pipe, uid, username, created)
            await pipe.execute()

    async def fill_directory(self) -> int:
        """Once per Redis (a marker says it is done): list the accounts made before the directory existed,
        found by their name keys. The one SCAN of the app, at start, on an upgrade; a fill cut off half-way
        is run again (listing is idempotent). The number of accounts listed."""
        k = self.keys
        if await self.redis.exists(k.users_filled):
            return 0
        listed = 0
        names = [key async for key in self.redis.scan_iter(match=k.account_name("*"), count=1000)]
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.get(key)
                uids = await pipe.execute()
            async with self.redis.pipeline(transaction=False) as pipe:
                for uid in uids:
                    if uid:
                        pipe.hmget(k.account(uid), "username", "created")
                accounts = await pipe.execute()
            async with self.redis.pipeline(transaction=False) as pipe:
                for uid, (username, created) in zip([u for u in uids if u], accounts):
                    if username:
                        self._list_user(pipe, uid, username, float(created or 0))
                        listed += 1
                await pipe.execute()
        await self.redis.set(k.users_filled, "1")
        return listed

    async def user_page(self, offset: int, count: int, prefix: str = "") -> tuple[list[str], int]:
        """(uids, how many match): newest accounts first; with a `prefix`, by name from it."""
        k = self.keys
        if not prefix:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrevrange(k.users, offset, offset + count - 1)
                pipe.zcard(k.users)
                uids, total = await pipe.execute()
            return list(uids), int(total)
        low = prefix.lower()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrangebylex(k.user_names, f"[{low}", f"[{low}\xff", start=offset, num=count)
            pipe.zlexcount(k.user_names, f"[{low}", f"[{low}\xff")
            members, total = await pipe.execute()
        return [member.rpartition("|")[2] for member in members], int(total)

    async def user_figures(self, uids: list[str], month: str) -> list[dict[str, Any]]:
        """Each user's account fields, conversations, last activity (ms), tokens this month, own budget and
        last storage measurement: one pipeline (on a Cluster, one per node)."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for uid in uids:
                pipe.hgetall(k.account(uid))
                pipe.zcard(k.index(uid))
                pipe.zrange(k.index(uid), -1, -1, withscores=True)
                pipe.hget(k.spending(uid, month), TOTAL)
                pipe.get(k.budget(uid))
                pipe.get(k.usage(uid))
            replies = await pipe.execute()
        rows = []
        for i, uid in enumerate(uids):
            account, conversations, last, tokens, budget, storage = replies[i * 6:(i + 1) * 6]
            rows.append({"uid": uid, "account": account or {}, "conversations": int(conversations),
                         "last_active": float(last[0][1]) / 1000 if last else 0.0, "tokens": int(tokens or 0),
                         "budget": int(budget) if budget is not None else None,
                         "storage": int(storage) if storage is not None else None})
        return rows

    async def set_disabled(self, uid: str, disabled: bool) -> bool:
        """Mark an account disabled (or not); False when there is no such account."""
        key = self.keys.account(uid)
        if not await self.redis.exists(key):
            return False
        if disabled:
            await self.redis.hset(key, "disabled", repr(time.time()))
        else:
            await self.redis.hdel(key, "disabled")
        return True

    async def remove_user(self, uid: str, username: str, months: list[str], digest_of: Any) -> None:
        """An account's last keys, once its conversations, sign-ins and tokens are gone: its links (by
        `digest_of(token)`), roles, spending of `months`, budget, search index, storage figure, pins, archive
        and folders, the account,
        its name and claim, its place in the directory. (A turn's state and events, and the pointers from
        message ids, expire on their own within a day.)"""
        k = self.keys
        shares = await self.redis.hgetall(k.shares(uid))
        terms = await self.redis.zrange(k.lexicon(uid), 0, -1)
        async with self.redis.pipeline(transaction=False) as pipe:  # one key per command: any slots
            for token in shares.values():
                pipe.delete(k.share(digest_of(token)))  # links stop working first
            for start in range(0, len(terms), 500):
                pipe.delete(*[k.term(uid, term) for term in terms[start:start + 500]])
            for key in (k.shares(uid), k.roles(uid), k.tokens(uid), k.signins(uid), k.budget(uid), k.budget_lane(uid),
                        k.usage(uid), k.lexicon(uid), k.search_ready(uid), k.index(uid),
                        k.pinned(uid), k.archived(uid), k.folders(uid), k.filed(uid), k.uploads(uid),
                        k.archive_renewed(uid),
                        *[k.spending(uid, month) for month in months]):
                pipe.delete(key)
            pipe.zrem(k.users, uid)
            pipe.zrem(k.user_names, name_member(username, uid))
            if username:
                pipe.delete(k.account_name(username))
            pipe.delete(k.account(uid))
            pipe.delete(k.claim(uid))
            await pipe.execute()

    async def forget_message_ids(self, uid: str, mids: list[str]) -> None:
        """The pointers from a deleted user's message ids to their conversations (those of versions edited
        away expire with the conversation TTL)."""
        for start in range(0, len(mids), 500):
            await self.redis.delete(*[self.keys.message(uid, mid) for mid in mids[start:start + 500]])

    async def audit(self, who: str, what: str, whom: str, detail: str = "") -> None:
        entry = orjson.dumps({"who": who, "what": what, "whom": whom, "detail": detail, "at": time.time()})
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(self.keys.audit, entry)
            pipe.ltrim(self.keys.audit, 0, AUDIT_KEPT - 1)
            await pipe.execute()

    async def audit_entries(self, count: int = 50) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw in await self.redis.lrange(self.keys.audit, 0, count - 1)]
