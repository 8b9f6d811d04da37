"""One-off move of data written by the first key layout (`chat:session:{sid}`...) to the
hash-tagged one (`chat:{uid}:s:{sid}`..., keys.py), at start, on one Redis.

The first layout keyed a conversation by its own id, so one turn's MULTI spanned many
Cluster slots. Moving is RENAME (which keeps each key's TTL) on the one Redis that layout
could run on; a Cluster never held it. One worker migrates while the others wait for
`layout` to say it is done; a migration cut off half-way is simply run again (every step
looks for what is still in the old place).
"""

from __future__ import annotations

import asyncio
import logging
import re

import orjson
from redis.exceptions import RedisError, ResponseError

from webapp.storage.keys import LAYOUT_VERSION, TurnRef
from webapp.storage.store import Store

log = logging.getLogger("webapp.migrate")

OLD_PREFIX = "chat:"  # the first layout had no REDIS_PREFIX
_SESSION = re.compile(r"^chat:session:([A-Za-z0-9_-]+)(?::(messages|lock|versions|forks))?$")
_USER = re.compile(r"^chat:user:([A-Za-z0-9_.@-]+?)(?::(sessions|signins|tokens))?$")
_ACCOUNT = re.compile(r"^chat:account:(?!name:)([A-Za-z0-9_-]+)$")
_MESSAGE = re.compile(r"^chat:message:([A-Za-z0-9_-]+)$")
_TURN = re.compile(r"^chat:turn:([A-Za-z0-9_-]+)(?::(events))?$")
_TRASH = re.compile(r"^chat:trash:([A-Za-z0-9_-]+)$")


async def migrate_layout(store: Store, *, wait_seconds: float = 120) -> int:
    """Move old-layout keys into place; the number moved. Cluster or another prefix: nothing to do."""
    if store.cluster or store.keys.prefix != OLD_PREFIX:
        return 0
    redis, k = store.redis, store.keys
    if await redis.get(k.layout) == LAYOUT_VERSION:
        return 0
    marker = k.layout + ":migrating"
    if not await redis.set(marker, "1", nx=True, ex=300):
        for _ in range(int(wait_seconds * 10)):  # another worker migrates
            if await redis.get(k.layout) == LAYOUT_VERSION:
                return 0
            await asyncio.sleep(0.1)
        raise RuntimeError("the key layout migration did not finish in time")
    try:
        moved = await _migrate(store)
        await redis.set(k.layout, LAYOUT_VERSION)
    finally:
        await redis.delete(marker)
    if moved:
        log.warning("moved %d keys to the hash-tagged key layout", moved)
    return moved


async def _migrate(store: Store) -> int:
    redis, k = store.redis, store.keys
    keys = [key async for key in redis.scan_iter(match=OLD_PREFIX + "*", count=1000)]
    owner_of_session: dict[str, str] = {}
    owner_of_turn: dict[str, str] = {}
    for key in keys:
        session = _SESSION.match(key)
        if session and session.group(2) is None:
            owner_of_session[session.group(1)] = await redis.hget(key, "user_id") or ""
        turn = _TURN.match(key)
        if turn and turn.group(2) is None:
            owner_of_turn[turn.group(1)] = await redis.hget(key, "user_id") or ""
    moves: list[tuple[str, str]] = []
    for key in keys:
        target = None
        if match := _SESSION.match(key):
            sid, part = match.groups()
            uid = owner_of_session.get(sid)
            if uid:
                target = {None: k.meta, "messages": k.messages, "lock": k.lock, "versions": k.versions,
                          "forks": k.forks}[part](uid, sid)
        elif match := _USER.match(key):
            uid, part = match.groups()
            target = {None: k.claim, "sessions": k.index, "signins": k.signins, "tokens": k.tokens}[part](uid)
        elif match := _ACCOUNT.match(key):
            target = k.account(match.group(1))
        elif match := _MESSAGE.match(key):
            uid = owner_of_session.get(await redis.get(key) or "")
            target = k.message(uid, match.group(1)) if uid else None
        elif match := _TURN.match(key):
            tid, part = match.groups()
            uid = owner_of_turn.get(tid)
            if uid:
                ref = TurnRef(uid, tid)
                target = k.events(ref) if part else k.turn(ref)
        elif match := _TRASH.match(key):
            raw = await redis.get(key)
            uid = orjson.loads(raw)["meta"].get("user_id") if raw else None
            target = k.trash(uid, match.group(1)) if uid else None
        if target is not None and target != key:
            moves.append((key, target))
    moved = 0
    for source, target in moves:
        try:
            await redis.rename(source, target)
            moved += 1
        except ResponseError:  # gone meanwhile (expired)
            pass
        except RedisError:
            raise
    return moved
