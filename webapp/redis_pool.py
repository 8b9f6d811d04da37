"""A Redis connection pool with a cap, and nothing else on the hot path.

Every command and pipeline borrows a connection from the pool and gives it back.
redis-py 8's pools do a lot of work on each of those two steps: an asyncio.Lock,
connection-count metrics, a deprecation-argument check, a retry wrapper around an
already open connection, an event dispatch on release; its BlockingConnectionPool
adds an asyncio.Condition and a timeout scope. At hundreds of turns starting in the
same instant that was about a fifth of the cost of a Redis round trip (bench/README.md).

This pool keeps redis-py's connections, parsing, retries and health checks, and
replaces only borrowing and returning: a LIFO list of idle connections, a cap on open
ones, and a FIFO of waiters woken one per returned connection. The event loop is
single-threaded, so list and set operations need no lock. (redis-py's maintenance
notifications and re-authentication hooks, which run on release, are not used here.)
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError


class LeanConnectionPool(ConnectionPool):
    """At most `max_connections` open; a caller past the cap waits up to `wait_timeout` seconds."""

    def __init__(self, *, wait_timeout: float = 30.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wait_timeout = wait_timeout
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> AbstractConnection:
        while True:
            if self._available_connections:
                connection = self._available_connections.pop()
                break
            if len(self._in_use_connections) < self.max_connections:
                connection = self.make_connection()
                break
            await self._wait_for_release()
        self._in_use_connections.add(connection)
        try:
            if not connection.is_connected:
                await connection.connect()
            elif await connection.can_read():
                # unread data: an earlier caller left mid-reply; never hand that to the next one
                await connection.disconnect()
                await connection.connect()
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def _wait_for_release(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.wait_timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # woken but leaving: the returned connection goes to the next waiter
            else:
                waiter.cancel()  # release() skips it
            if isinstance(exc, TimeoutError):
                raise RedisConnectionError("No Redis connection available.") from None
            raise

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def release(self, connection: AbstractConnection) -> None:
        self._in_use_connections.discard(connection)
        if connection.should_reconnect():
            await connection.disconnect()
        self._available_connections.append(connection)
        self._wake_one()
