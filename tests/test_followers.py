"""Readers of a turn that generates on another app process follow it through Redis,
all of them through one blocking XREAD per process (webapp.core.turns.followers)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Awaitable, Callable, Iterator

import httpx
import pytest
import redis
from redis.asyncio import Redis, RedisCluster

from tests.conftest import (
    ON_CLUSTER,
    AppServer,
    RedisServer,
    _start_app,
    _stop_app,
    create_session,
    iter_sse,
    messages_of,
    post_turn,
    read_sse,
    run_async,
    unique,
    wait_until,
)
from webapp.base.models import TurnEvent, new_id
from webapp.core.turns.followers import StreamFollower, Subscription, make_follower
from webapp.storage.keys import TurnRef
from webapp.storage.store import Store


def chunks(first: int, last: int) -> list[TurnEvent]:
    return [TurnEvent(seq=seq, type="chunk", content=f"c{seq} ") for seq in range(first, last + 1)]


async def read_until(subscription: Subscription, last_seq: int, timeout: float = 2) -> list[int]:
    """The seqs a subscription hands out, up to and including `last_seq`."""
    seqs: list[int] = []
    while not seqs or seqs[-1] < last_seq:
        batch = await subscription.next(timeout)
        assert batch, f"no events within {timeout} s"
        seqs += [event.seq for event in batch]
    return seqs


def run_with_store(redis_server: RedisServer, body: Callable[[Store], Awaitable[None]]) -> None:
    async def main() -> None:
        if ON_CLUSTER:
            client = RedisCluster.from_url(redis_server.url, decode_responses=True)
        else:
            client = Redis.from_url(redis_server.url, decode_responses=True)
        try:
            await body(Store(client, conversation_ttl=600, index_ttl=600, turn_timeout=60, cluster=ON_CLUSTER))
        finally:
            await client.aclose()

    run_async(main)


def test_a_subscription_that_joins_behind_gets_no_gap(redis_server: RedisServer) -> None:
    """Events an XREAD read from seq 3 must not reach a reader at seq 1: it would miss 2 and 3."""

    async def body(store: Store) -> None:
        follower = StreamFollower(store)
        ahead, behind = Subscription(3), Subscription(1)
        turn = TurnRef("u_test", "t")
        follower.subscriptions[turn] = {ahead, behind}
        follower.deliver({turn: 3}, {turn: chunks(4, 5)})
        assert [e.seq for e in ahead.pending] == [4, 5]
        assert behind.pending == [] and behind.position == 1

    run_with_store(redis_server, body)


def test_readers_joining_at_different_places_each_get_every_event_once(redis_server: RedisServer) -> None:
    async def body(store: Store) -> None:
        follower = make_follower(store, block_ms=300)
        turn_id = TurnRef("u_test", new_id())
        await store.append_events([(turn_id, chunks(1, 3))])
        ahead = await follower.subscribe(turn_id, 3)
        await asyncio.sleep(0.1)  # the follower now blocks in XREAD from seq 3
        behind = await follower.subscribe(turn_id, 1)
        await store.append_events([(turn_id, chunks(4, 4))])
        await store.append_events([(turn_id, [TurnEvent(seq=5, type="end", message_id="m")])])

        assert await read_until(ahead, 5) == [4, 5]
        assert await read_until(behind, 5) == [2, 3, 4, 5]
        follower.unsubscribe(turn_id, ahead)
        follower.unsubscribe(turn_id, behind)
        assert follower.task is not None
        await asyncio.wait_for(follower.task, 2)  # nobody left to follow: the task ends
        await follower.aclose()

    run_with_store(redis_server, body)


@pytest.fixture(scope="module")
def second_app(redis_server, upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """Another app process on the same Redis (the test suite's SECRET_KEY: the same cookies work)."""
    app = _start_app(
        tmp_path_factory.mktemp("second-app"),
        {
            "REDIS_URL": redis_server.url,
            "OPENAI_API_KEY": "test-key",
            "OPENAI_BASE_URL": upstream.base_url,
            "OPENAI_MODEL": "fake-model",
        },
    )
    yield app
    _stop_app(app)


def blocked_xreads(redis_client: redis.Redis) -> int:
    return sum(1 for c in redis_client.client_list() if c.get("cmd") == "xread" and "b" in c.get("flags", ""))


@pytest.mark.single_redis
def test_many_readers_on_another_process_share_one_blocking_read(
    app_server: AppServer, second_app: AppServer, redis_client: redis.Redis
) -> None:
    wait_until(lambda: blocked_xreads(redis_client) == 0, timeout=8)  # followers of earlier tests are gone
    readers = 5
    with httpx.Client(base_url=app_server.base_url, timeout=30) as client:
        session = create_session(client)
        started = post_turn(client, session["id"], unique("fanout") + " [[tokens:60]] [[delay:40]]").json()
        results: list[list[dict[str, Any]] | None] = [None] * readers

        def follow(index: int) -> None:
            with httpx.Client(base_url=second_app.base_url, timeout=30, cookies=client.cookies) as other:
                with other.stream("GET", started["events_url"]) as response:
                    assert response.status_code == 200
                    results[index] = read_sse(response)

        threads = [threading.Thread(target=follow, args=(index,)) for index in range(readers)]
        for thread in threads:
            thread.start()
        most_blocked = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            most_blocked = max(most_blocked, blocked_xreads(redis_client))
            time.sleep(0.05)
        for thread in threads:
            thread.join(timeout=30)

        assert most_blocked == 1, f"{most_blocked} blocking XREADs for {readers} readers on one process"
        wait_until(lambda: blocked_xreads(redis_client) == 0, timeout=8)  # and none once they are done
        saved = messages_of(client, session["id"])["items"][-1]
        assert saved["role"] == "assistant" and saved["content"].startswith("ctx=2")
        for events in results:
            assert events is not None and events[-1]["data"]["type"] == "end"
            chunks = [e for e in events if e["data"]["type"] == "chunk"]
            assert "".join(e["data"]["content"] for e in chunks) == saved["content"]
            seqs = [int(e["id"].rpartition(":")[2]) for e in events]
            assert seqs == sorted(set(seqs)), "every event once, in order"


def test_a_reader_joining_late_gets_the_whole_reply_and_then_the_rest(
    app_server: AppServer, second_app: AppServer
) -> None:
    with httpx.Client(base_url=app_server.base_url, timeout=30) as client:
        session = create_session(client)
        started = post_turn(client, session["id"], unique("late") + " [[tokens:40]] [[delay:30]]").json()
        first: list[dict[str, Any]] = []

        def follow_early() -> None:
            with httpx.Client(base_url=second_app.base_url, timeout=30, cookies=client.cookies) as other:
                with other.stream("GET", started["events_url"]) as response:
                    first.extend(read_sse(response))

        early = threading.Thread(target=follow_early)
        early.start()
        time.sleep(0.6)  # the early reader is mid-reply; this one subscribes from the start
        with httpx.Client(base_url=second_app.base_url, timeout=30, cookies=client.cookies) as other:
            with other.stream("GET", started["events_url"]) as response:
                late = read_sse(response)
        early.join(timeout=30)
        saved = messages_of(client, session["id"])["items"][-1]["content"]

    def text(events: list[dict[str, Any]]) -> str:
        return "".join(e["data"].get("content", "") for e in events if e["data"]["type"] == "chunk")

    assert first[-1]["data"]["type"] == "end" and late[-1]["data"]["type"] == "end"
    assert text(first) == text(late) == saved and saved.startswith("ctx=2")


@pytest.mark.redis_restart
def test_the_follower_keeps_following_through_a_redis_restart(redis_server: RedisServer) -> None:
    async def body(store: Store) -> None:
        follower = make_follower(store, block_ms=300)
        turn_id = TurnRef("u_test", new_id())
        await store.append_events([(turn_id, chunks(1, 2))])
        subscription = await follower.subscribe(turn_id, 2)
        await asyncio.sleep(0.1)  # blocked in XREAD
        await asyncio.to_thread(redis_server.restart)  # the XREAD's connection drops; data is gone
        for _ in range(50):  # the app's own client retries through a restart the same way
            try:
                await store.append_events([(turn_id, chunks(3, 4))])
                break
            except redis.exceptions.ConnectionError:
                await asyncio.sleep(0.1)
        assert await read_until(subscription, 4, timeout=5) == [3, 4]  # the follower goes on after it
        follower.unsubscribe(turn_id, subscription)
        await follower.aclose()

    run_with_store(redis_server, body)


@pytest.mark.skipif(not ON_CLUSTER, reason="the Cluster's followers (TEST_REDIS=cluster)")
def test_on_a_cluster_many_remote_readers_share_one_wake_up_connection(
    app_server: AppServer, second_app: AppServer, redis_client: redis.RedisCluster
) -> None:
    """No cross-slot XREAD on a Cluster: readers on another process are woken through one pub/sub
    connection per process, however many there are."""
    def subscribed() -> int:
        return sum(1 for node in redis_client.get_primaries()
                   for c in redis_client.client_list(target_nodes=node) if int(c.get("sub", 0)) > 0)

    readers = 6
    with httpx.Client(base_url=app_server.base_url, timeout=30) as client:
        session = create_session(client)
        warm = post_turn(client, session["id"], unique("warm")).json()
        with httpx.Client(base_url=second_app.base_url, timeout=30, cookies=client.cookies) as other:
            with other.stream("GET", warm["events_url"]) as response:
                read_sse(response)  # the second process's wake-up listener is up now
        before = subscribed()
        started = post_turn(client, session["id"], unique("fanout") + " [[tokens:60]] [[delay:40]]").json()
        results: list[list[dict[str, Any]] | None] = [None] * readers

        def follow(index: int) -> None:
            with httpx.Client(base_url=second_app.base_url, timeout=30, cookies=client.cookies) as other:
                with other.stream("GET", started["events_url"]) as response:
                    results[index] = read_sse(response)

        threads = [threading.Thread(target=follow, args=(index,)) for index in range(readers)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        during = subscribed()
        for thread in threads:
            thread.join(timeout=30)
    assert during == before, f"{during - before} more pub/sub connections for {readers} readers"
    texts = {"".join(e["data"]["content"] for e in r if e["data"]["type"] == "chunk") for r in results if r}
    assert len(texts) == 1 and "" not in texts and all(r and r[-1]["data"]["type"] == "end" for r in results)


def test_a_reader_on_another_process_gets_the_reply_at_the_flush_cadence(
    app_server: AppServer, second_app: AppServer
) -> None:
    """On one Redis and on a Cluster alike (issue 34: on a Cluster the wake-ups failed with a KeyError
    every 0.5 s and readers fell back to a read a second): events arrive about every STREAM_FLUSH_MS."""
    flush = 0.1  # STREAM_FLUSH_MS's default
    with httpx.Client(base_url=app_server.base_url, timeout=30) as client:
        session = create_session(client)
        started = post_turn(client, session["id"], unique("cadence") + " [[tokens:60]] [[delay:40]]").json()
        arrivals: list[float] = []
        with httpx.Client(base_url=second_app.base_url, timeout=30, cookies=client.cookies) as other:
            with other.stream("GET", started["events_url"]) as response:
                for event in iter_sse(response):
                    if event.type == "chunk":
                        arrivals.append(time.monotonic())
    gaps = sorted(later - earlier for earlier, later in zip(arrivals, arrivals[1:]))
    assert len(arrivals) >= 10, f"{len(arrivals)} events for a reply of 2.4 s"
    assert gaps[len(gaps) // 2] <= 2 * flush, f"median gap {gaps[len(gaps) // 2] * 1000:.0f} ms"
    assert "wake-ups failed" not in second_app.log()
