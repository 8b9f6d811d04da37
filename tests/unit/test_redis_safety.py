"""What the app keeps checking of its Redis while it runs (issue 34): an eviction policy changed to one
that deletes accounts and conversations is said loudly, on a real redis-server."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.unit.wiring import Core
from webapp.storage.redis_checks import EvictionWatch


async def test_an_eviction_policy_turned_unsafe_while_the_app_runs_is_logged_as_an_error_at_every_check(
        core: Core, caplog: pytest.LogCaptureFixture) -> None:
    watch = EvictionWatch(core.store, core.settings, interval=0.05)
    watch.start()
    before = (await core.store.redis.config_get("maxmemory-policy"))["maxmemory-policy"]
    try:
        await asyncio.sleep(0.2)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # noeviction: nothing to say
        await core.store.redis.config_set("maxmemory-policy", "allkeys-lru")
        await asyncio.sleep(0.3)
    finally:
        await core.store.redis.config_set("maxmemory-policy", before)
        await watch.aclose()

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) >= 2, "said at every check while it lasts, not once"
    assert "allkeys-lru" in errors[0] and "noeviction" in errors[0] and "ALLOW_EVICTING_REDIS" in errors[0]


async def test_the_core_rechecks_the_eviction_policy_in_the_background(core: Core) -> None:
    assert core.eviction_watch.task is not None and not core.eviction_watch.task.done()
