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
- a new connection's name and version for CLIENT SETINFO (DRIVER_INFO): redis-py looks its own
  version up in the installed package's metadata (a scan of sys.path and an email-header parse)
  for every connection it makes; here once per process (in a burst that fills the pool, that
  lookup was a seventh of the app's CPU).
- a pipeline's replies (LeanPipeline): redis-py reads them one at a time, each through
  four layers of coroutines (a turn's MULTI of 24 commands: 26 such reads); here they
  are taken off hiredis's reader in one loop, with redis-py's own error handling,
  disconnects and reply callbacks (~60 µs less for a 24-command MULTI, a quarter of its CPU).

Connections, single commands' reply parsing, retries and health checks stay redis-py's. The app speaks
RESP2, pinned (`protocol=2`): redis-py 8 would otherwise negotiate RESP3 with HELLO 3,
whose replies (maps, push messages on idle connections) the code is not written for.

Past one Redis: `redis+sentinel://` (or REDIS_SENTINELS) gives a client that asks the
sentinels for the current master and follows a failover; a Redis Cluster (REDIS_CLUSTER,
or found by asking the server) gives redis-py's cluster client. Both use redis-py's own
pools: the lean pool above is for the one-Redis hot path.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPubSub
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot
from redis.driver_info import DriverInfo
from redis.exceptions import (AskError, ClusterDownError, DataError, ExecAbortError, ResponseError, TryAgainError,
                              WatchError)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.utils import get_lib_version

from webapp.config import Settings
from webapp.storage.store import Store

try:
    from hiredis import pack_command as hiredis_pack_command
except ImportError:  # hiredis is in requirements.txt; without it redis-py packs in Python
    hiredis_pack_command = None

log = logging.getLogger("webapp")

BLOCKING_CONNECTIONS_MAX = 100  # the worker's stream follower and cancel listener each hold one

# what every connection tells the server (CLIENT SETINFO), looked up once: redis-py's default reads the
# package metadata from disk for each new connection
DRIVER_INFO = DriverInfo(name="redis-py", lib_version=get_lib_version())


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


class LeanPipeline(Pipeline):
    """A pipeline (or MULTI/EXEC transaction) whose replies are read in one loop off hiredis's reader.
    Anything unusual (a watched transaction, a command with reply options, another parser) goes the
    way redis-py goes."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """As redis-py's, less what this app does not use: its observability hooks (an await each, and a
        task for the shielded release per pipeline). Scripts, WATCH and MULTI by hand go redis-py's way."""
        stack = self.command_stack
        if not stack or self.scripts or self.watching or self.explicit_transaction:
            return await super().execute(raise_on_error)
        connection = self.connection or await self.connection_pool.get_connection()
        self.connection = connection
        run = self._execute_transaction if self.is_transaction else self._execute_pipeline
        try:
            return await connection.retry.call_with_retry(
                lambda: run(connection, stack, raise_on_error),
                lambda error: self._disconnect_raise_on_watching(connection, error))
        finally:
            await self.reset()

    async def reset(self) -> None:
        pool = self.connection_pool
        if self.watching or not isinstance(pool, LeanConnectionPool):
            await super().reset()
            return
        self.command_stack = []
        self.scripts = set()
        self.explicit_transaction = False
        connection, self.connection = self.connection, None
        if connection is not None and not pool.release_now(connection):
            await asyncio.shield(pool.release(connection))  # (a disconnect first: see LeanConnectionPool.release)

    def _plain(self, connection: AbstractConnection, commands: Any) -> bool:
        return (not self.watching and isinstance(getattr(connection, "_parser", None), _AsyncHiredisParser)
                and connection.protocol in (2, "2")
                and all(not options or options.keys() == {"keys"} for _, options in commands)
                and not any(args[0] in _STATEFUL for args, _ in commands))

    async def _execute_transaction(self, connection: Any, commands: Any, raise_on_error: bool) -> list[Any]:
        if not self._plain(connection, commands):
            return await super()._execute_transaction(connection, commands, raise_on_error)
        await connection.send_packed_command(
            connection.pack_commands([("MULTI",), *(args for args, _ in commands), ("EXEC",)]))
        replies = await read_replies(connection, len(commands) + 2)
        errors = [(n, reply) for n, reply in enumerate(replies[1:-1]) if isinstance(reply, ResponseError)]
        for n, error in errors:
            self.annotate_exception(error, n + 1, commands[n][0])
        if isinstance(replies[0], ResponseError):
            errors.insert(0, (0, replies[0]))
        response = replies[-1]
        if isinstance(response, ResponseError):  # (EXECABORT: a command was refused when queued)
            if isinstance(response, ExecAbortError) and errors:
                raise errors[0][1] from response
            raise response
        self.watching = False
        if response is None:
            raise WatchError("Watched variable changed.")
        for n, error in errors:
            response.insert(n, error)
        if len(response) != len(commands):
            await connection.disconnect()
            raise ResponseError("Wrong number of response items from pipeline execution") from None
        if raise_on_error:
            self.raise_first_error(commands, response)
        return self._called_back(commands, response)

    async def _execute_pipeline(self, connection: Any, commands: Any, raise_on_error: bool) -> list[Any]:
        if not self._plain(connection, commands):
            return await super()._execute_pipeline(connection, commands, raise_on_error)
        await connection.send_packed_command(connection.pack_commands([args for args, _ in commands]))
        response = self._called_back(commands, await read_replies(connection, len(commands)))
        if raise_on_error:
            self.raise_first_error(commands, response)
        return response

    def _called_back(self, commands: Any, response: list[Any]) -> list[Any]:
        """Each reply through its command's response callback, as redis-py does (a coroutine callback: none of
        the commands this app sends has one)."""
        callbacks = self.response_callbacks
        data = []
        for reply, (args, options) in zip(response, commands):
            if not isinstance(reply, Exception):
                callback = callbacks.get(args[0])
                if callback is not None:
                    reply = callback(reply)
            data.append(reply)
        return data


_STATEFUL = {"WATCH", "UNWATCH", "MULTI", "EXEC", "DISCARD", "SUBSCRIBE", "PSUBSCRIBE", "MONITOR", "HELLO"}


async def read_replies(connection: Any, count: int) -> list[Any]:
    """`count` replies from a connection whose parser is hiredis's, as Connection.read_response reads one: the
    socket timeout, a disconnect on any error (an unread reply never stays on a pooled connection), the
    same exceptions, the health check's clock, and error replies returned in place, not raised."""
    parser, replies = connection._parser, []
    try:
        if connection.socket_timeout is not None:  # (for each reply, as redis-py's: a long pipeline is no timeout)
            async with asyncio.timeout(connection.socket_timeout) as deadline:
                await _fill(parser, replies, count, deadline, connection.socket_timeout)
        else:
            await _fill(parser, replies, count)
    except TimeoutError:
        await connection.disconnect(nowait=True)
        raise RedisTimeoutError(f"Timeout reading from {connection._host_error()}") from None
    except OSError as exc:
        await connection.disconnect(nowait=True)
        raise RedisConnectionError(f"Error while reading from {connection._host_error()} : {exc.args}") from None
    except BaseException:
        await connection.disconnect(nowait=True)
        raise
    if connection.health_check_interval:
        connection.next_health_check = asyncio.get_running_loop().time() + connection.health_check_interval
    return replies


async def _fill(parser: Any, replies: list[Any], count: int, deadline: asyncio.Timeout | None = None,
                timeout: float = 0.0) -> None:
    if not parser._connected:
        raise RedisConnectionError("Connection closed by server.")
    reader = parser._reader
    while len(replies) < count:
        reply = reader.gets()
        if reply is NOT_ENOUGH_DATA:
            await parser.read_from_socket()
        elif isinstance(reply, RedisConnectionError):
            raise reply
        else:
            replies.append(reply)
            if deadline is not None:
                deadline.reschedule(asyncio.get_running_loop().time() + timeout)


class LeanRedis(Redis):
    """redis-py's client, its pipelines LeanPipeline; a command as redis-py sends it (retries, disconnect on
    error), less its observability hooks (this app exports its own metrics)."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        pool = self.connection_pool
        if self.single_connection_client or not isinstance(pool, LeanConnectionPool):
            return await super().execute_command(*args, **options)
        connection = await pool.get_connection()
        try:
            return await connection.retry.call_with_retry(
                lambda: self._send_command_parse_response(connection, args[0], *args, **options),
                lambda error: self._close_connection(connection, error))
        finally:
            if not pool.release_now(connection):
                await pool.release(connection)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return LeanPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


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
        self.checkouts = 0  # one per command or pipeline sent: the round trips (chat_redis_round_trips)

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> AbstractConnection:
        self.checkouts += 1
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

    def release_now(self, connection: AbstractConnection) -> bool:
        """Give a connection back with no await (a pipeline's reset: no task for a shielded release); False
        when it must be disconnected first (release does that)."""
        if connection not in self._in_use_connections:
            return True  # already returned: a second idle copy would let two callers share one socket
        if connection.should_reconnect():
            return False
        self._pass_on(connection)
        return True

    async def release(self, connection: AbstractConnection) -> None:
        if self.release_now(connection):
            return
        try:
            await connection.disconnect()
        finally:
            self._pass_on(connection)


class ClusterRedis:
    """A Redis Cluster, spoken to as on one Redis: each command, and each pipeline's commands
    grouped by node, go to the master of their key's slot over a lean one-Redis client per node
    (LeanConnectionPool, hiredis packing); what has no key (PING, INFO, PUBLISH, pub/sub) and
    anything redirected goes through redis-py's RedisCluster, which follows MOVED and ASK.

    Why not RedisCluster for everything: its asyncio transactions run every queued command
    through a new thread and a new event loop (`TransactionStrategy.execute_command`), which
    blocks the app's loop (a turn's two MULTIs cost 20 ms of CPU that way), and its per-command
    routing and retry layers cost more than the command. Every MULTI and script of the store
    stays in one slot (keys.py), so it can go to that slot's master as on one Redis.
    """

    def __init__(self, cluster: RedisCluster, settings: Settings, bounded: bool) -> None:
        self.cluster = cluster
        self.settings = settings
        self.bounded = bounded
        self.nodes: dict[str, Redis] = {}
        self.router = _NodeRouter(self)
        self._refreshing: asyncio.Future[None] | None = None
        self._refreshed_at = -REFRESH_SECONDS

    def __getattr__(self, name: str) -> Any:
        if name in ROUTED_COMMANDS:
            return getattr(self.router, name)
        return getattr(self.cluster, name)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        return SlotTransaction(self) if transaction else NodePipeline(self)

    def pubsub(self, **kwargs: Any) -> ClusterPubSub:
        return _ClusterPubSub(self, **kwargs)

    async def node_for(self, key: str) -> Redis:
        """A one-Redis client for the master that serves `key`'s slot now."""
        if self.cluster._initialize:
            await self.cluster.initialize()
        node = self.cluster.nodes_manager.get_node_from_slot(key_slot(key.encode()))
        client = self.nodes.get(node.name)
        if client is None:
            parts = urlsplit(self.settings.redis_url)
            credentials = parts.netloc.rpartition("@")[0]
            netloc = f"{credentials}@{node.host}:{node.port}" if credentials else f"{node.host}:{node.port}"
            client = create_single_redis(self.settings, bounded=self.bounded,
                                         url=urlunsplit(parts._replace(netloc=netloc)))
            self.nodes[node.name] = client
        return client

    async def refresh(self) -> None:
        """Ask the cluster again which node serves which slots (after MOVED, or a failover): one question
        at a time, which every caller meanwhile waits for."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
        await asyncio.shield(self._refreshing)

    async def _refresh(self) -> None:
        try:
            await self.cluster.nodes_manager.initialize()
        finally:
            self._refreshed_at = asyncio.get_running_loop().time()

    async def node_failed(self) -> None:
        """A node did not answer (killed, its host gone): its slots may have a new master by now. The
        slot map is asked for again, at most every REFRESH_SECONDS however many commands failed, so the
        app follows a failover within about that of the promotion; until then the commands fail (the
        turn's save and event writes, and the lease keeper, try again)."""
        if asyncio.get_running_loop().time() - self._refreshed_at < REFRESH_SECONDS:
            return
        try:
            await self.refresh()
        except Exception as exc:  # (no node answered: the next failure asks again)
            log.warning("Redis Cluster: reading the slot map failed (%s)", type(exc).__name__)

    async def aclose(self) -> None:
        for client in self.nodes.values():
            await client.aclose(close_connection_pool=True)  # (its pool was handed to it: closed only when asked)
        self.nodes = {}
        await self.cluster.aclose()


# the commands the store sends with a key (`keys.py`): routed by that key's slot
ROUTED_COMMANDS = frozenset({
    "get", "set", "delete", "exists", "expire", "incr", "eval",
    "hget", "hgetall", "hset", "hdel", "hmget", "hincrby",
    "lrange", "llen", "lindex", "rpush", "ltrim",
    "sadd", "srem", "smembers",
    "zadd", "zrem", "zcard", "zcount", "zrange", "zrevrange", "zrangebyscore", "zrevrangebyscore", "zscore",
    "xadd", "xrange", "rename",
})
_REDIRECTED = (AskError, ClusterDownError, TryAgainError)  # refused before anything ran (MovedError is an AskError)
_UNANSWERED = (RedisConnectionError, RedisTimeoutError)  # the node itself: down, or gone
REFRESH_SECONDS = 0.5


def _command_key(args: tuple[Any, ...]) -> str | None:
    """The first key of a command as redis-py sends it (EVAL script numkeys key...)."""
    name = str(args[0]).upper()
    if name in ("EVAL", "EVALSHA"):
        return str(args[3]) if int(args[2]) > 0 else None
    return str(args[1]) if len(args) > 1 else None


class _NodeRouter(Redis):
    """redis-py's command methods, whose execute_command sends to the slot's master."""

    def __init__(self, owner: ClusterRedis) -> None:  # no pool of its own: see execute_command
        self.owner = owner

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        key = _command_key(args)
        if key is None:
            return await self.owner.cluster.execute_command(*args, **options)
        node = await self.owner.node_for(key)
        try:
            return await node.execute_command(*args, **options)
        except _REDIRECTED:
            await self.owner.refresh()
            return await self.owner.cluster.execute_command(*args, **options)
        except _UNANSWERED:
            await self.owner.node_failed()
            moved = await self.owner.node_for(key)
            if moved is node:
                raise
            return await moved.execute_command(*args, **options)  # its slot has a new master: once more there


class _QueuedCommands:
    """Commands queued as on a redis-py pipeline (`pipe.hset(...)`), sent on execute()."""

    def __init__(self, owner: ClusterRedis) -> None:
        self.owner = owner
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.calls = []

    def __getattr__(self, name: str) -> Any:
        def queue(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return self
        return queue

    def key_of(self, index: int) -> str:
        """The key a queued command routes by (EVAL script numkeys key...)."""
        name, args, _ = self.calls[index]
        return str(args[2] if name == "eval" else args[0])

    def replay(self, pipe: Any, indices: Iterable[int]) -> None:
        for index in indices:
            name, args, kwargs = self.calls[index]
            getattr(pipe, name)(*args, **kwargs)


class NodePipeline(_QueuedCommands):
    """A pipeline (no MULTI) over many slots: one lean pipeline per master, sent concurrently;
    the replies come back in the order the commands were queued."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if not self.calls:
            return []
        groups: dict[int, tuple[Redis, list[int]]] = {}
        for index in range(len(self.calls)):
            client = await self.owner.node_for(self.key_of(index))
            groups.setdefault(id(client), (client, []))[1].append(index)
        try:
            replies = await asyncio.gather(*(self._send(client, indices, raise_on_error)
                                             for client, indices in groups.values()))
        except _REDIRECTED:  # the slots moved (resharding, failover): once more through RedisCluster
            await self.owner.refresh()
            async with self.owner.cluster.pipeline(transaction=False) as pipe:
                self.replay(pipe, range(len(self.calls)))
                return await pipe.execute(raise_on_error=raise_on_error)
        except _UNANSWERED:  # (the others' commands may have run: the caller decides whether to resend)
            await self.owner.node_failed()
            raise
        results: list[Any] = [None] * len(self.calls)
        for (_, indices), group_replies in zip(groups.values(), replies):
            for index, reply in zip(indices, group_replies):
                results[index] = reply
        return results

    async def _send(self, client: Redis, indices: list[int], raise_on_error: bool) -> list[Any]:
        async with client.pipeline(transaction=False) as pipe:
            self.replay(pipe, indices)
            return await pipe.execute(raise_on_error=raise_on_error)


class SlotTransaction(_QueuedCommands):
    """A MULTI's commands, sent to the master of the first key's slot on execute()."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if not self.calls:
            return []
        for attempt in range(3):
            client = await self.owner.node_for(self.key_of(0))
            try:
                async with client.pipeline(transaction=True) as pipe:
                    self.replay(pipe, range(len(self.calls)))
                    return await pipe.execute(raise_on_error=raise_on_error)
            except _REDIRECTED:  # refused before anything was applied: ask where, then again
                if attempt == 2:
                    raise
                await self.owner.refresh()
            except _UNANSWERED:
                await self.owner.node_failed()
                if attempt == 2 or await self.owner.node_for(self.key_of(0)) is client:
                    raise
                # its slot has a new master: the dead one applied nothing it could have replicated, or
                # lost it with it; a save checks that anyway before it resends (saving.py)
        raise AssertionError("unreachable")


class _ClusterPubSub(ClusterPubSub):
    """redis-py's Cluster pub/sub, which picks its node from the client's slot map on its first command:
    the map is read first (a map never read is empty, and the pick a KeyError each time: issue 34), and
    read again when the node picked does not answer (killed, failed over), so the next try finds a live
    one."""

    def __init__(self, owner: ClusterRedis, **kwargs: Any) -> None:
        super().__init__(owner.cluster, **kwargs)
        self.owner = owner

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        await self.owner.cluster.initialize()  # (a no-op once it has been)
        try:
            return await super().execute_command(*args, **kwargs)
        except _UNANSWERED:
            await self.owner.node_failed()
            raise


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
        "driver_info": DRIVER_INFO, **tls_options(settings),
    }
    if cluster:
        return ClusterRedis(RedisCluster.from_url(settings.redis_url, max_connections=size, socket_keepalive=True,
                                                  **common, **_retry_options()), settings, bounded)
    target = sentinel_target(settings)
    if target is not None:
        addresses, master, options = target
        sentinel = Sentinel(addresses, sentinel_kwargs={"socket_connect_timeout": 5, "protocol": PROTOCOL,
                                                        "password": options.get("password")},
                            **options, **_retry_options())
        return sentinel.master_for(master, max_connections=size, **common)
    return create_single_redis(settings, bounded=bounded)


def create_single_redis(settings: Settings, *, bounded: bool, url: str | None = None) -> Redis:
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
        url or settings.redis_url,
        max_connections=settings.redis_max_connections if bounded else BLOCKING_CONNECTIONS_MAX,
        wait_timeout=30,
        decode_responses=True,
        protocol=PROTOCOL,
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=settings.redis_socket_timeout or None,
        driver_info=DRIVER_INFO,
        **({} if settings.redis_url.startswith("unix://") else {"socket_keepalive": True}),
        **tls_options(settings),
        **retry_options,
    )
    return LeanRedis(connection_pool=pool, **retry_options)


async def connect_store(settings: Settings, *, blocking: bool = True) -> Store:
    """The store on the configured Redis (one, Sentinel or Cluster: asked of the server when
    REDIS_CLUSTER is unset), with its command pool and, if `blocking`, its pool for blocking reads.
    Redis unreachable: a one-Redis store, so the app still starts and /readyz says why."""
    try:
        cluster = await detect_cluster(settings)
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        log.error("Redis is not reachable (%s); set REDIS_CLUSTER if it is a Cluster", exc)
        cluster = False
    redis = create_redis(settings, bounded=True, cluster=cluster)
    return Store(
        redis,
        blocking_redis=create_redis(settings, bounded=False, cluster=cluster) if blocking else None,
        conversation_ttl=settings.conversation_ttl,
        index_ttl=settings.index_ttl,
        turn_timeout=settings.turn_timeout_seconds,
        lease_ms=int(settings.turn_lease_seconds * 1000),
        prefix=settings.redis_prefix,
        cluster=cluster,
    )
