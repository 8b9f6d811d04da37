"""Readers of a turn that generates on another app process follow it through Redis,
all of them through one blocking XREAD per process."""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import httpx
import pytest
import redis

from tests.conftest import (
    AppServer, _start_app, _stop_app, create_session, messages_of, post_turn, read_sse, unique, wait_until,
)


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
