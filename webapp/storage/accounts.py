"""Accounts, their sign-ins and their personal API tokens.

Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

import time
from typing import Any, AsyncIterator

import orjson

from webapp.storage.directory import DirectoryStore


class AccountStore(DirectoryStore):
    """Accounts, their sign-ins and their personal API tokens: the commands of their keys (see store.Store)."""

    async def create_account(self, uid: str, username: str, password_hash: str) -> bool:
        """A new account; False when the username is taken (case-insensitively)."""
        k = self.keys
        if not await self.redis.set(k.account_name(username), uid, nx=True):
            return False
        created = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(k.account(uid), mapping={"username": username, "password": password_hash,
                                               "created": repr(created)})
            pipe.set(k.claim(uid), "1")  # the account's identity is never free to claim
            await pipe.execute()
        await self.list_user(uid, username, created)  # (the directory's keys are in other slots)
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

    async def remove_signin(self, digest: str) -> bool:
        """End one sign-in; whether it was one."""
        k = self.keys
        uid = await self.redis.hget(k.signin(digest), "uid")
        removed = await self.redis.delete(k.signin(digest))
        if uid:
            await self.redis.srem(k.signins(uid), digest)
        return bool(removed)

    async def remove_all_signins(self, uid: str) -> list[str]:
        """End every sign-in of a user: their hashes."""
        k = self.keys
        digests = await self.redis.smembers(k.signins(uid))
        async with self.redis.pipeline(transaction=False) as pipe:  # one key per command: any slots
            for digest in digests:
                pipe.delete(k.signin(digest))
            pipe.delete(k.signins(uid))
            removed = await pipe.execute()
        return [digest for digest, gone in zip(digests, removed) if gone]

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

    async def remove_token(self, uid: str, token_id: str) -> str | None:
        """Revoke one of a user's tokens: its hash (None: no such token)."""
        k = self.keys
        raw = await self.redis.hget(k.tokens(uid), token_id)
        if raw is None:
            return None
        digest = orjson.loads(raw)["hash"]
        await self.redis.delete(k.token(digest))  # stops working before it is unlisted
        await self.redis.hdel(k.tokens(uid), token_id)
        return str(digest)

    async def remove_all_tokens(self, uid: str) -> list[str]:
        """Revoke every token of a user: their hashes."""
        k = self.keys
        rows = await self.redis.hgetall(k.tokens(uid))
        digests = [str(orjson.loads(raw)["hash"]) for raw in rows.values()]
        async with self.redis.pipeline(transaction=False) as pipe:  # one key per command: any slots
            for digest in digests:
                pipe.delete(k.token(digest))  # they stop working before they are unlisted
            if rows:
                pipe.hdel(k.tokens(uid), *rows)
            await pipe.execute()
        return digests

    # revocations: every worker ends the streams opened with a credential that ends ------------

    async def announce_revoked(self, digests: list[str]) -> None:
        """Tell every worker on every host that these sign-ins or tokens (by hash) are no longer valid."""
        if digests:
            await self.redis.publish(self.keys.revoked_channel, " ".join(digests))

    async def revoked_credentials(self) -> AsyncIterator[list[str]]:
        """The hashes of the sign-ins and tokens revoked anywhere, as they are announced; the first item
        is [] once subscribed (so that a listener that reconnects can check what it missed)."""
        pubsub = self.blocking_redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.keys.revoked_channel)
            yield []
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield message["data"].split()
        finally:
            await pubsub.aclose()

    async def credentials_valid(self, digests: list[str]) -> list[bool]:
        """Whether each hash is still a sign-in or a token (or, `user:{uid}`, an enabled account): one pipeline,
        one key per command (any slots)."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for digest in digests:
                if digest.startswith("user:"):  # a proxy user's streams: valid while the account is, and enabled
                    pipe.exists(k.account(digest[5:]))
                    pipe.hget(k.account(digest[5:]), "disabled")
                else:
                    pipe.exists(k.signin(digest))
                    pipe.exists(k.token(digest))
            found = await pipe.execute()
        return [bool(first) and not second if digest.startswith("user:") else bool(first or second)
                for digest, first, second in zip(digests, found[0::2], found[1::2])]
