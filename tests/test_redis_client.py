"""webapp.storage.redis_client against a real redis-server: the pool's cap, waiting, timeouts, cancellation; packing."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError

from tests.conftest import RedisServer, run_async
from webapp.storage.redis_client import LeanConnectionPool, with_hiredis_packing


def run_with_client(
    redis_server: RedisServer, body: Callable[[Redis, LeanConnectionPool], Awaitable[Any]], *,
    client_class: type[Redis] = Redis, **pool_options: Any
) -> Any:
    async def main() -> Any:
        pool = LeanConnectionPool.from_url(redis_server.url, decode_responses=True, **pool_options)
        client = client_class(connection_pool=pool)
        try:
            return await body(client, pool)
        finally:
            await client.aclose()
            await pool.disconnect()

    return run_async(main)


def test_many_callers_share_the_capped_connections(redis_server: RedisServer) -> None:
    async def body(client: Redis, pool: LeanConnectionPool) -> None:
        key = "pool-test:counter"
        await client.delete(key)

        async def one(index: int) -> None:
            async with client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.set(f"pool-test:item:{index}", index, ex=30)
                await pipe.execute()
            assert await client.get(f"pool-test:item:{index}") == str(index)

        await asyncio.gather(*(one(i) for i in range(300)))
        assert await client.get(key) == "300"
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 4
        assert not pool._in_use_connections

    run_with_client(redis_server, body, max_connections=4)


def test_a_caller_past_the_cap_waits_and_then_times_out(redis_server: RedisServer) -> None:
    async def body(client: Redis, pool: LeanConnectionPool) -> None:
        held = await pool.get_connection()
        started = asyncio.get_running_loop().time()
        with pytest.raises(RedisConnectionError, match="No Redis connection available"):
            await client.ping()
        assert 0.15 <= asyncio.get_running_loop().time() - started < 2
        # a returned connection goes to the next caller
        waiting = asyncio.ensure_future(client.ping())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await pool.release(held)
        assert await asyncio.wait_for(waiting, 2) is True

    run_with_client(redis_server, body, max_connections=1, wait_timeout=0.2)


def test_a_cancelled_waiter_passes_its_turn_on(redis_server: RedisServer) -> None:
    async def body(client: Redis, pool: LeanConnectionPool) -> None:
        held = await pool.get_connection()
        first = asyncio.ensure_future(client.ping())
        second = asyncio.ensure_future(client.ping())
        await asyncio.sleep(0.05)
        # the connection comes back and wakes `first`, which is cancelled before it runs
        await pool.release(held)
        first.cancel()
        assert await asyncio.wait_for(second, 2) is True
        with pytest.raises(asyncio.CancelledError):
            await first
        assert not pool._in_use_connections

    run_with_client(redis_server, body, max_connections=1, wait_timeout=5)


def test_a_returned_connection_goes_to_the_waiter_not_to_a_later_caller(redis_server: RedisServer) -> None:
    async def body(client: Redis, pool: LeanConnectionPool) -> None:
        held = await pool.get_connection()
        waiting = asyncio.ensure_future(pool.get_connection())
        await asyncio.sleep(0.05)
        await pool.release(held)
        late = asyncio.ensure_future(pool.get_connection())  # arrives after the release
        got = await asyncio.wait_for(waiting, 2)
        assert got is held
        await asyncio.sleep(0.05)
        assert not late.done()  # still capped at one: it waits its turn
        await pool.release(got)
        assert await asyncio.wait_for(late, 2) is held
        await pool.release(held)

    run_with_client(redis_server, body, max_connections=1, wait_timeout=5)


def test_releasing_twice_does_not_share_a_connection(redis_server: RedisServer) -> None:
    async def body(client: Redis, pool: LeanConnectionPool) -> None:
        connection = await pool.get_connection()
        await pool.release(connection)
        await pool.release(connection)
        first = await pool.get_connection()
        second = await pool.get_connection()
        assert first is not second
        await pool.release(first)
        await pool.release(second)

    run_with_client(redis_server, body, max_connections=4)


def test_a_connection_left_mid_reply_is_not_handed_out_dirty(redis_server: RedisServer) -> None:
    async def body(client: Redis, pool: LeanConnectionPool) -> None:
        await client.set("pool-test:dirty", "value")
        await client.set("pool-test:other", "someone else's reply")
        connection = await pool.get_connection()
        # a command whose reply is never read, then the connection goes back
        await connection.send_command("GET", "pool-test:other")
        await asyncio.sleep(0.05)
        await pool.release(connection)
        assert await client.get("pool-test:dirty") == "value"
        assert await client.ping() is True

    run_with_client(redis_server, body, max_connections=1)


@pytest.mark.redis_restart
def test_commands_survive_a_redis_restart(redis_server: RedisServer) -> None:
    async def body(client: Redis, pool: LeanConnectionPool) -> None:
        await client.set("pool-test:before", "1")
        redis_server.restart()
        await client.set("pool-test:after", "2")  # the first command after the restart reconnects
        assert await client.get("pool-test:after") == "2"

    run_with_client(
        redis_server, body, max_connections=2,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=5), retry_on_error=[RedisConnectionError],
    )


PACKED_COMMANDS: list[tuple[object, ...]] = [
    ("RPUSH", "chat:session:x:messages", '{"content": "你好, é and \\u0000"}'),
    ("HSET", "chat:session:x", "count", 7, "updated", 1764088000.123456, "title", ""),
    ("ZADD", "chat:user:u:sessions", 1764088000123.456, "x"),
    ("SET", "k", b"\x00\xff binary", "EX", 90, "NX"),
    ("XADD", "s", "MAXLEN", "~", 1000, "*", "f", "1", "n", "a\nb"),
    ("CONFIG GET", "maxmemory"),
    ("SET", "k", memoryview(b"view")),
    ("SET", "k", bytearray(b"array")),
    ("SET", "k", -0.0),
]


def test_hiredis_packing_is_byte_for_byte_redis_py(redis_server: RedisServer) -> None:
    ours = with_hiredis_packing(UnixDomainSocketConnection)(path=str(redis_server.socket_path))
    theirs = UnixDomainSocketConnection(path=str(redis_server.socket_path))
    assert type(ours).__name__ == "HiredisUnixDomainSocketConnection"
    for command in PACKED_COMMANDS:
        assert b"".join(ours.pack_command(*command)) == b"".join(theirs.pack_command(*command)), command
    assert b"".join(ours.pack_commands(PACKED_COMMANDS)) == b"".join(theirs.pack_commands(PACKED_COMMANDS))
    with pytest.raises(DataError):
        ours.pack_command("SET", "k", True)
    assert with_hiredis_packing(Connection).__name__ == "HiredisConnection"
    assert with_hiredis_packing(with_hiredis_packing(Connection)) is with_hiredis_packing(Connection)


def test_the_pool_packs_with_hiredis_and_round_trips_unicode(redis_server: RedisServer) -> None:
    async def body(client: Redis, pool: LeanConnectionPool) -> None:
        connection = await pool.get_connection()
        assert type(connection).__name__ == "HiredisUnixDomainSocketConnection"
        await pool.release(connection)
        async with client.pipeline(transaction=True) as pipe:
            pipe.set("pool-test:unicode", "多轮对话 ✓")
            pipe.zadd("pool-test:z", {"a": 1764088000123.456})
            pipe.get("pool-test:unicode")
            pipe.zscore("pool-test:z", "a")
            _, _, text, score = await pipe.execute()
        assert text == "多轮对话 ✓"
        assert score == 1764088000123.456

    run_with_client(redis_server, body, max_connections=2)


def run_with_lean(redis_server: RedisServer, body: Callable[[Redis, Redis], Awaitable[Any]], **pool_options: Any) -> Any:
    """`body(lean, plain)`: the app's client (LeanRedis: replies read in one loop) and redis-py's own."""
    from webapp.storage.redis_client import LeanRedis

    async def with_plain(lean: Redis, pool: LeanConnectionPool) -> Any:
        plain = Redis.from_url(redis_server.url, decode_responses=True)
        try:
            return await body(lean, plain)
        finally:
            await plain.aclose()

    return run_with_client(redis_server, with_plain, client_class=LeanRedis, **pool_options)


async def a_turns_commands(client: Redis, transaction: bool, key: str) -> list[Any]:
    async with client.pipeline(transaction=transaction) as pipe:
        pipe.delete(key, key + ":l", key + ":z", key + ":x", key + ":s")
        pipe.rpush(key + ":l", "你好", "b")
        pipe.hset(key, mapping={"a": "1", "b": "二"})
        pipe.hincrby(key, "count", 2)
        pipe.zadd(key + ":z", {"s": 1.5})
        pipe.expire(key, 60)
        pipe.set(key + ":s", "v", nx=True, px=5000)
        pipe.get(key + ":missing")
        pipe.lrange(key + ":l", 0, -1)
        pipe.hgetall(key)
        pipe.zrange(key + ":z", 0, -1, withscores=True)
        pipe.xadd(key + ":x", {"t": "chunk"}, id="0-1")
        pipe.exists(key)
        return await pipe.execute()


@pytest.mark.parametrize("transaction", [True, False])
def test_a_lean_pipeline_answers_as_redis_pys_does(redis_server: RedisServer, transaction: bool) -> None:
    async def body(lean: Redis, plain: Redis) -> tuple[list[Any], list[Any]]:
        return (await a_turns_commands(lean, transaction, "lean-pipe:a"),
                await a_turns_commands(plain, transaction, "lean-pipe:b"))

    ours, theirs = run_with_lean(redis_server, body)
    assert ours == theirs and ours[6] is True and ours[7] is None
    assert ours[9] == {"a": "1", "b": "二", "count": "2"} and ours[10] == [("s", 1.5)]


def test_a_lean_pipelines_errors_are_redis_pys(redis_server: RedisServer) -> None:
    from redis.exceptions import ResponseError

    async def body(lean: Redis, plain: Redis) -> list[Any]:
        found = []
        for client in (lean, plain):
            await client.set("lean-pipe:str", "x")
            for transaction in (True, False):
                async with client.pipeline(transaction=transaction) as pipe:  # a runtime error (WRONGTYPE)
                    pipe.set("lean-pipe:k", "1").lpush("lean-pipe:str", "y").incr("lean-pipe:k")
                    with pytest.raises(ResponseError) as raised:
                        await pipe.execute()
                    found.append(str(raised.value).split(" of pipeline")[0])
                async with client.pipeline(transaction=transaction) as pipe:  # or in place, not raised
                    pipe.lpush("lean-pipe:str", "y").get("lean-pipe:k")
                    replies = await pipe.execute(raise_on_error=False)
                    found.append([type(r).__name__ for r in replies] + [replies[1]])
            async with client.pipeline(transaction=True) as pipe:  # refused when queued: EXECABORT
                pipe.execute_command("SET", "lean-pipe:k")
                pipe.incr("lean-pipe:k")
                with pytest.raises(ResponseError) as raised:
                    await pipe.execute()
                found.append(str(raised.value)[:60])
            assert await client.get("lean-pipe:k") in ("2", "3")  # (the aborted MULTI changed nothing)
        return found

    found = run_with_lean(redis_server, body)
    assert found[:5] == found[5:] and len(found) == 10


def test_a_lean_pipeline_cancelled_mid_reply_leaves_no_reply_behind(redis_server: RedisServer) -> None:
    async def body(lean: Redis, plain: Redis) -> list[Any]:
        await lean.delete("lean-pipe:list")
        await lean.rpush("lean-pipe:list", *[f"item {n} " * 40 for n in range(20000)])

        async def big() -> None:
            async with lean.pipeline(transaction=True) as pipe:
                pipe.lrange("lean-pipe:list", 0, -1).lrange("lean-pipe:list", 0, -1)
                await pipe.execute()

        for _ in range(5):  # cancelled while the replies (megabytes) are still arriving
            task = asyncio.ensure_future(big())
            await asyncio.sleep(0.002)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for _ in range(3):  # a single command cancelled mid-reply too
            task = asyncio.ensure_future(lean.lrange("lean-pipe:list", 0, -1))
            await asyncio.sleep(0.002)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        async with lean.pipeline(transaction=False) as pipe:  # the next borrower reads its own replies
            pipe.set("lean-pipe:after", "ok").get("lean-pipe:after").llen("lean-pipe:list")
            replies = await pipe.execute()
        replies.append(await lean.get("lean-pipe:after"))
        replies.append(len(lean.connection_pool._in_use_connections))  # every connection given back
        return replies

    assert run_with_lean(redis_server, body, max_connections=1) == [True, "ok", 20000, "ok", 0]


def test_a_lean_pipeline_honours_the_socket_timeout_per_reply(redis_server: RedisServer) -> None:
    from redis.exceptions import TimeoutError as RedisTimeoutError

    async def body(lean: Redis, plain: Redis) -> Any:
        async with lean.pipeline(transaction=False) as pipe:  # replies in time: answered
            for n in range(200):
                pipe.set(f"lean-pipe:t{n}", n)
            assert len(await pipe.execute()) == 200
        async with lean.pipeline(transaction=True) as pipe:  # a reply that never comes in time: a timeout
            pipe.execute_command("DEBUG", "SLEEP", "0.5")
            with pytest.raises(RedisTimeoutError):
                await pipe.execute()
        await asyncio.sleep(0.5)  # (DEBUG SLEEP holds the whole server)
        return await lean.get("lean-pipe:t199")  # (the connection was dropped, the next one is clean)

    assert run_with_lean(redis_server, body, socket_timeout=0.2) == "199"


def test_new_connections_name_the_client_without_reading_package_metadata(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's pool names its library and version (CLIENT SETINFO, on a Redis that has it) from DRIVER_INFO,
    looked up once: redis-py's default reads the installed package's metadata from disk for every connection."""
    from importlib import metadata

    import redis

    from webapp.config import Settings
    from webapp.storage.redis_client import DRIVER_INFO, create_single_redis

    assert (DRIVER_INFO.name, DRIVER_INFO.lib_version) == ("redis-py", metadata.version("redis"))

    def no_lookup(name: str) -> str:
        raise AssertionError(f"package metadata read for {name} while connecting")

    async def main() -> None:
        client = create_single_redis(Settings(redis_url=redis_server.url), bounded=True)
        pool = client.connection_pool
        monkeypatch.setattr(redis.utils.metadata, "version", no_lookup)
        try:  # 20 callers at once: as many new connections, each with its handshake
            assert await asyncio.gather(*(client.echo("ok") for _ in range(20))) == ["ok"] * 20
            connections = pool._available_connections + list(pool._in_use_connections)
            assert len(connections) == 20
            assert all(connection.driver_info is DRIVER_INFO for connection in connections)
        finally:
            monkeypatch.undo()
            await client.aclose()

    run_async(main)
