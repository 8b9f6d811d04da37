"""What the app checks of a Redis before it uses it: that it will not silently delete data."""

from __future__ import annotations

import logging

from webapp.config import Settings
from webapp.storage.store import Store

log = logging.getLogger("webapp")


class RedisRefused(RuntimeError):
    """Redis is configured in a way that loses data; the message is one line saying what to change."""


EVICTING_POLICIES = ("allkeys-lru", "allkeys-lfu", "allkeys-random")


async def check_redis(store: Store, settings: Settings) -> None:
    """Refuse a Redis that may evict keys without a TTL (accounts, conversations being written),
    unless ALLOW_EVICTING_REDIS accepts the risk; warn about volatile-* (conversations have TTLs)."""
    policies = await store.eviction_policies()
    evicting = sorted(policy for policy in policies if policy in EVICTING_POLICIES)
    if evicting and not settings.allow_evicting_redis:
        raise RedisRefused(
            f"Redis maxmemory-policy is {evicting[0]}: it may delete accounts and conversations when full. "
            "Set it to noeviction (recommended), or ALLOW_EVICTING_REDIS=true to accept the risk"
        )
    if evicting or any(policy.startswith("volatile-") for policy in policies):
        log.warning("Redis maxmemory-policy is %s: when Redis is full it deletes conversations before they "
                    "expire; noeviction is recommended", ",".join(sorted(policies)))
