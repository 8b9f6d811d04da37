"""How the app talks to Redis: redis-py's asyncio client with a leaner hot path.

Every command and pipeline borrows a connection from a pool, packs its commands into
the wire protocol, and gives the connection back. At hundreds of turns starting in the
same instant, redis-py 8 spends more of a round trip on those steps than on the I/O
(bench/README.md), so two of them are replaced here:

- borrowing and returning (LeanConnectionPool): redis-py's pools take an asyncio.Lock,
  record connection-count metrics, check for deprecated arguments and run a retry
  wrapper around an already open connection each time, and dispatch an event on
  release; its BlockingConnectionPool adds an asyncio.Condition and a timeout scope.
  Here: a LIFO list of idle connections, a cap on open ones, and a FIFO of waiters
  woken one per returned connection. The event loop is single-threaded, so the list
  and set need no lock. (redis-py's maintenance notifications and re-authentication
  hooks, which run on release, are not used by this app.)
- packing: the asyncio connection packs in pure Python, while redis-py's sync client
  already uses hiredis's C packer when hiredis is installed; connections here do the
  same, byte for byte (about 8x faster for a turn's MULTI).

Connections, reply parsing, retries and health checks stay redis-py's. The app speaks
RESP2, pinned (`protocol=2`): redis-py 8 would otherwise negotiate RESP3 with HELLO 3,
whose replies (maps, push messages on idle connections) the code is not written for.

Past one Redis: `redis+sentinel://` (or REDIS_SENTINELS) gives a client that asks the
sentinels for the current master and follows a failover; a Redis Cluster (REDIS_CLUSTER,
or found by asking the server) gives redis-py's cluster client. Both use redis-py's own
pools: the lean pool above is for the one-Redis hot path.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Iterable

from urllib.parse import unquote, urlsplit

from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.asyncio.connection import AbstractConnection, Connection
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .config import Settings

try:
    from hiredis import pack_command as hiredis_pack_command
except ImportError:  # hiredis is in requirements.txt; without it redis-py packs in Python
    hiredis_pack_command = None

BLOCKING_CONNECTIONS_MAX = 100  # the worker's stream follower and cancel listener each hold one


class HiredisPacking:
    """Mixin for a redis-py asyncio connection class: pack commands with hiredis."""

    def pack_command(self, *args: Any) -> list[bytes]:
        # like redis-py: 'CONFIG GET' style names are sent as separate arguments
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis_pack_command(args)]
        except TypeError:
            pass
        # bytearray (redis-py sends its bytes); bool or None are refused, as redis-py does
        args = tuple(bytes(arg) if isinstance(arg, (bytearray, memoryview)) else arg for arg in args)
        try:
            return [hiredis_pack_command(args)]
        except TypeError as exc:
            raise DataError(f"Invalid input: {exc}") from None

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        return [b"".join(self.pack_command(*command)[0] for command in commands)]


_packing_classes: dict[type, type] = {}


def with_hiredis_packing(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """`connection_class` (TCP, TLS or unix socket) packing with hiredis, when hiredis is there."""
    if hiredis_pack_command is None or issubclass(connection_class, HiredisPacking):
        return connection_class
    if connection_class not in _packing_classes:
        _packing_classes[connection_class] = type(
            f"Hiredis{connection_class.__name__}", (HiredisPacking, connection_class), {}
        )
    return _packing_classes[connection_class]


class LeanConnectionPool(ConnectionPool):
    """At most `max_connections` open; a caller past the cap waits up to `wait_timeout` seconds.

    A returned connection goes straight to the longest waiter (it never counts as idle
    in between), so a caller arriving later cannot take it and waiters are served in order.
    """

    def __init__(
        self, *, connection_class: type[AbstractConnection] = Connection, wait_timeout: float = 30.0, **kwargs: Any
    ) -> None:
        default_encoding = kwargs.get("encoding", "utf-8") == "utf-8" and kwargs.get("encoding_errors", "strict") == "strict"
        if default_encoding:  # hiredis packs str as strict UTF-8
            connection_class = with_hiredis_packing(connection_class)
        super().__init__(connection_class=connection_class, **kwargs)
        self.wait_timeout = wait_timeout
        self._waiters: deque[asyncio.Future[AbstractConnection]] = deque()

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> AbstractConnection:
        if self._available_connections:
            connection = self._available_connections.pop()
        elif len(self._in_use_connections) < self.max_connections:
            connection = self.make_connection()
        else:
            connection = await self._wait_for_release()
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

    async def _wait_for_release(self) -> AbstractConnection:
        waiter: asyncio.Future[AbstractConnection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.wait_timeout):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._pass_on(waiter.result())  # handed a connection but leaving: the next waiter gets it
            else:
                waiter.cancel()  # _pass_on() skips it
            if isinstance(exc, TimeoutError):
                raise RedisConnectionError("No Redis connection available.") from None
            raise

    def _pass_on(self, connection: AbstractConnection) -> None:
        """A connection its user is done with: to the longest waiter (still in use), else idle."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._in_use_connections.discard(connection)
        self._available_connections.append(connection)

    async def release(self, connection: AbstractConnection) -> None:
        if connection not in self._in_use_connections:
            return  # already returned: a second idle copy would let two callers share one socket
        try:
            if connection.should_reconnect():
                await connection.disconnect()
        finally:
            self._pass_on(connection)


PROTOCOL = 2  # RESP2: see the module docstring


def tls_options(settings: Settings) -> dict[str, Any]:
    """rediss:// with REDIS_TLS_VERIFY=false: encrypted, but the server's (self-signed) certificate and
    host name are not checked, as Heroku-style Redis add-ons need."""
    if settings.redis_url.startswith("rediss://") and not settings.redis_tls_verify:
        return {"ssl_cert_reqs": "none", "ssl_check_hostname": False}
    return {}


def _retry_options() -> dict[str, Any]:
    return {
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=5),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


def sentinel_target(settings: Settings) -> tuple[list[tuple[str, int]], str, dict[str, Any]] | None:
    """(sentinel addresses, master name, connection options) when Redis is reached through Sentinel.

    `redis+sentinel://[:password@]host:port[,host:port...]/master-name[/db]`, or
    REDIS_SENTINELS=host:port,... with REDIS_SENTINEL_MASTER.
    """
    url = settings.redis_url
    options: dict[str, Any] = {}
    if url.startswith("redis+sentinel://"):
        parts = urlsplit(url.replace("redis+sentinel://", "http://", 1))
        hosts = parts.netloc.rsplit("@", 1)[-1]
        if "@" in parts.netloc:
            user, _, password = parts.netloc.rsplit("@", 1)[0].partition(":")
            options["password"] = unquote(password) or None
            options["username"] = unquote(user) or None
        path = [piece for piece in parts.path.split("/") if piece]
        master = path[0] if path else settings.redis_sentinel_master
        if len(path) > 1:
            options["db"] = int(path[1])
    elif settings.redis_sentinels:
        hosts, master = settings.redis_sentinels, settings.redis_sentinel_master
    else:
        return None
    addresses = []
    for host in hosts.split(","):
        name, _, port = host.strip().rpartition(":")
        addresses.append((name or host.strip(), int(port or 26379)))
    return addresses, master, options


async def detect_cluster(settings: Settings) -> bool:
    """Whether REDIS_URL names a node of a Redis Cluster (REDIS_CLUSTER unset: ask the server)."""
    if settings.redis_cluster is not None:
        return settings.redis_cluster
    if sentinel_target(settings) is not None or settings.redis_url.startswith("unix://"):
        return False
    client = Redis.from_url(settings.redis_url, protocol=PROTOCOL, decode_responses=True,
                            socket_connect_timeout=5, **tls_options(settings), **_retry_options())
    try:
        info = await client.info("cluster")
        return str(info.get("cluster_enabled", 0)) == "1"
    finally:
        await client.aclose()


def create_redis(settings: Settings, *, bounded: bool, cluster: bool = False) -> Any:
    """A client for commands (`bounded`) or for blocking reads: one Redis, Sentinel or a Cluster."""
    size = settings.redis_max_connections if bounded else BLOCKING_CONNECTIONS_MAX
    common: dict[str, Any] = {
        "decode_responses": True, "protocol": PROTOCOL, "socket_connect_timeout": 5,
        "socket_timeout": settings.redis_socket_timeout or None, "health_check_interval": 30,
        **tls_options(settings),
    }
    if cluster:
        return RedisCluster.from_url(settings.redis_url, max_connections=size, socket_keepalive=True,
                                     **common, **_retry_options())
    target = sentinel_target(settings)
    if target is not None:
        addresses, master, options = target
        sentinel = Sentinel(addresses, sentinel_kwargs={"socket_connect_timeout": 5, "protocol": PROTOCOL,
                                                        "password": options.get("password")},
                            **options, **_retry_options())
        return sentinel.master_for(master, max_connections=size, **common)
    return create_single_redis(settings, bounded=bounded)


def create_single_redis(settings: Settings, *, bounded: bool) -> Redis:
    """A client with its own pool; commands retry through a short Redis restart.

    The `bounded` pool (requests and turns) makes a caller wait for a free connection
    instead of opening hundreds when hundreds of turns start at once: commands take
    well under a millisecond, and each new connection costs a handshake. Blocking
    reads (the stream follower's XREAD BLOCK, the cancel listener's pub/sub) hold a
    connection for seconds, so they use a pool of their own and never starve it.

    No per-command socket timeout by default: redis-py's default (5 s) wraps every
    read in asyncio.timeout and every write in asyncio.wait_for, which cost ~20% of
    the app's CPU at 500 streams; a dead server is still noticed through the closed
    socket, keepalive and the health check.
    """
    retry_options = _retry_options()
    pool = LeanConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections if bounded else BLOCKING_CONNECTIONS_MAX,
        wait_timeout=30,
        decode_responses=True,
        protocol=PROTOCOL,
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=settings.redis_socket_timeout or None,
        **({} if settings.redis_url.startswith("unix://") else {"socket_keepalive": True}),
        **tls_options(settings),
        **retry_options,
    )
    return Redis(connection_pool=pool, **retry_options)
