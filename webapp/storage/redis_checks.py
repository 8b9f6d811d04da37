"""What the app checks of a Redis before it uses it, and again while it runs: that it will not
silently delete data."""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from webapp.base.processes import stop_task
from webapp.config import Settings
from webapp.storage.store import Store

log = logging.getLogger("webapp")

EVICTING_POLICIES = ("allkeys-lru", "allkeys-lfu", "allkeys-random")
RECHECK_SECONDS = 60.0


class RedisRefused(RuntimeError):
    """Redis is configured in a way that loses data; the message is one line saying what to change."""


def refusal(policies: set[str], settings: Settings) -> str | None:
    """Why these eviction policies lose data the app cannot lose (None: they do not, or the risk is
    accepted by ALLOW_EVICTING_REDIS)."""
    evicting = sorted(policy for policy in policies if policy in EVICTING_POLICIES)
    if evicting and not settings.allow_evicting_redis:
        return (f"Redis maxmemory-policy is {evicting[0]}: it may delete accounts and conversations when full. "
                "Set it to noeviction (recommended), or ALLOW_EVICTING_REDIS=true to accept the risk")
    return None


def _warn_volatile(policies: set[str]) -> None:
    if any(policy in EVICTING_POLICIES or policy.startswith("volatile-") for policy in policies):
        log.warning("Redis maxmemory-policy is %s: when Redis is full it deletes conversations before they "
                    "expire; noeviction is recommended", ",".join(sorted(policies)))


async def check_redis(store: Store, settings: Settings) -> None:
    """Refuse a Redis that may evict keys without a TTL (accounts, conversations being written),
    unless ALLOW_EVICTING_REDIS accepts the risk; warn about volatile-* (conversations have TTLs)."""
    policies = await store.eviction_policies()
    if reason := refusal(policies, settings):
        raise RedisRefused(reason)
    _warn_volatile(policies)


class EvictionWatch:
    """The eviction policy read again every RECHECK_SECONDS: one changed while the app runs (CONFIG SET,
    a managed Redis's console) is not refused as at start, but an unsafe one is logged as an error at
    every check until it is mended (a volatile-* one warned about once per change)."""

    def __init__(self, store: Store, settings: Settings, interval: float = RECHECK_SECONDS) -> None:
        self.store = store
        self.settings = settings
        self.interval = interval
        self.seen: set[str] | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="eviction-watch")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except RedisError:  # unreachable: the turns and /readyz say so
                pass
            except Exception as exc:  # (a Cluster's client raises its own kinds): never end the watch
                log.warning("checking the eviction policy failed (%s)", type(exc).__name__)

    async def check(self) -> None:
        policies = await self.store.eviction_policies()
        if self.seen is None:  # the start's check has spoken of these
            self.seen = policies
            if not refusal(policies, self.settings):
                return
        if reason := refusal(policies, self.settings):
            log.error("UNSAFE REDIS: %s (changed while the app runs; it was checked at start)", reason)
        elif policies != self.seen:
            _warn_volatile(policies)
        self.seen = policies

    async def aclose(self) -> None:
        await stop_task(self.task)
