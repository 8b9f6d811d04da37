"""The storage quota: how much a user's data may take in Redis (STORAGE_QUOTA_BYTES, 0 = none).

What counts is what Redis holds for the user's conversations (metadata, messages, the versions
kept aside by regenerate and edit) and custom roles, measured exactly with MEMORY USAGE
(storage/usage.py) and kept for ten minutes. The doors that write much check it: an import
(its file's size must fit; measured afresh before it is refused), and creating a conversation
(refused when the last measurement says full, in the script that creates it: no extra round
trip; with no recent measurement one is made in the background). A full user is told so (413,
with the figures) and deleting conversations makes room. The settings page shows the figure.

Deleting a conversation forgets the figure, so the next door measures again.

A turn is not checked: its round trips are the hot path's (docs/architecture.md); a turn adds
at most MAX_MESSAGE_CHARS and a reply to a conversation of at most MAX_MESSAGES_PER_CONVERSATION,
at RATE_LIMIT_PER_MINUTE, so a full user's growth is bounded by the conversations they have.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from webapp.base.errors import StorageFull
from webapp.storage.store import Store

log = logging.getLogger("webapp.quota")
MB = 1_000_000


class StorageQuota:
    def __init__(self, store: Store, quota_bytes: int) -> None:
        self.store = store
        self.quota_bytes = quota_bytes
        self.measuring: dict[str, asyncio.Task[None]] = {}  # background measurements, one per user at a time

    async def usage(self, user_id: str) -> int:
        """The user's storage in bytes: the last measurement, or a new one."""
        cached = await self.store.cached_usage(user_id)
        return cached if cached is not None else await self.store.measure_usage(user_id)

    async def check_room(self, user_id: str, adding: int = 0) -> None:
        """StorageFull unless `adding` more bytes fit (a stale figure is measured again before refusing)."""
        if not self.quota_bytes:
            return
        used = await self.store.cached_usage(user_id)
        if used is None or used + adding > self.quota_bytes:
            used = await self.store.measure_usage(user_id)
        if used + adding > self.quota_bytes:
            raise StorageFull(used=round(used / MB, 1), quota=round(self.quota_bytes / MB, 1))

    def refuse_full(self, used: int) -> None:
        """A door whose write found the last measurement at the quota."""
        raise StorageFull(used=round(used / MB, 1), quota=round(self.quota_bytes / MB, 1))

    def measure_soon(self, user_id: str) -> None:
        """No recent figure where a door wanted one: measure off the request's path."""
        if self.quota_bytes and user_id not in self.measuring:
            task = asyncio.create_task(self._measure(user_id), name=f"usage-{user_id}")
            self.measuring[user_id] = task
            task.add_done_callback(lambda _: self.measuring.pop(user_id, None))

    async def _measure(self, user_id: str) -> None:
        try:
            await self.store.measure_usage(user_id)
        except RedisError as exc:
            log.warning("storage of %s not measured: %s", user_id, exc)

    async def changed(self, user_id: str) -> None:
        """Much was just written (an import) or deleted: measure again next time."""
        if self.quota_bytes:
            await self.store.forget_usage(user_id)
