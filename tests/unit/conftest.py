"""Fixtures of the in-process unit tests.

The core's tests (test_core_*.py, test_storage.py) use the real parts without a subprocess app:
one redis-server per test session (the bundled binary, on a unix socket in a temporary
directory, emptied before each test), the fake OpenAI-compatible upstream over real HTTP on
127.0.0.1 (tests/conftest.py's `upstream`), and the core built as webapp/main.py's lifespan
builds it (wiring.py), on the test's own event loop. An `async def` test here runs on that loop
(pytest-asyncio is not used: the hook below is all it takes).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.conftest import RedisServer, temporary_redis_server
from tests.fake_upstream import ThreadedFakeUpstream
from webapp.base.metrics import Metrics

if TYPE_CHECKING:
    from tests.unit.wiring import Core

ASYNC_TEST_TIMEOUT = 20.0  # seconds: a hung turn fails its test instead of the run


def pytest_itemcollected(item: pytest.Item) -> None:
    """Everything collected in this directory is the `unit` tier (tests/conftest.py orders tiers by
    marker). pytest calls a conftest's collection hooks only for the items under its directory."""
    item.add_marker(pytest.mark.unit)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an `async def` test on its `event_loop` (the loop its fixtures built the core on)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in inspect.signature(pyfuncitem.obj).parameters}
    test = asyncio.wait_for(pyfuncitem.obj(**arguments), ASYNC_TEST_TIMEOUT)
    loop = pyfuncitem.funcargs.get("event_loop")
    if isinstance(loop, asyncio.AbstractEventLoop):
        loop.run_until_complete(test)
    else:
        asyncio.run(test)
    return True


@pytest.fixture(scope="module")
def metrics() -> Metrics:
    """The metrics of a module's tiny app (a registry of its own: counts start at zero per module)."""
    return Metrics()


@pytest.fixture
def event_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.fixture(scope="session")
def unit_redis() -> Iterator[RedisServer]:
    """One redis-server for the in-process tier, apart from the one the app processes use."""
    yield from temporary_redis_server("unit-redis-")


@pytest.fixture
def core(event_loop: asyncio.AbstractEventLoop, unit_redis: RedisServer,
         upstream: ThreadedFakeUpstream) -> Iterator[Core]:
    """The core on an emptied Redis and the fake model (tests/fake_upstream.py: `[[fail:500]]`,
    `[[stall]]`, `[[drop:N]]`, `[[echo]]`... in a message make it misbehave)."""
    # imported here, not at the top: a module of the app that fails to import (mid-refactor) fails the
    # tests of the core, not the collection of the whole tier
    from tests.unit.wiring import core_settings, start_core

    built = event_loop.run_until_complete(start_core(core_settings(unit_redis.url, upstream.base_url)))
    try:
        yield built
    finally:
        event_loop.run_until_complete(built.aclose())
