"""bench/durable_floor.py, the benchmarks' durable floor, against the fake model and its own redis-server: it
serves the seed API as the load generator drives it, and keeps what it claims to keep (the measure of
what durability alone costs is only one if the floor is durable)."""

from __future__ import annotations

from typing import Iterator

import httpx
import pytest
import redis

from bench.servers import DurableFloor
from tests.conftest import iter_sse, wait_until
from tests.fake_upstream import ThreadedFakeUpstream, expected_reply
from webapp.base.i18n import t
from webapp.core.roles import get_role


@pytest.fixture(scope="module")
def floor(upstream: ThreadedFakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DurableFloor]:
    server = DurableFloor(upstream.base_url.removesuffix("/v1"), tmp_path_factory.mktemp("floor")).start()
    try:
        yield server
    finally:
        server.stop()


def turn(client: httpx.Client, chat: dict[str, str], message: str) -> list[dict[str, str]]:
    params = {"user_id": chat["user_id"], "session_id": chat["session_id"], "message": message, "role": "assistant"}
    with client.stream("GET", "/chat/stream", params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [event.data for event in iter_sse(response)]


def test_the_floor_serves_the_seed_api_with_context_and_keeps_every_message(floor: DurableFloor) -> None:
    system = get_role("assistant").system_prompt
    with httpx.Client(base_url=floor.url, timeout=30) as client:
        chat = client.post("/chat/start").json()
        assert chat["user_id"] and chat["session_id"]
        replies = []
        for number, message in enumerate(["first question", "second question"], start=1):
            events = turn(client, chat, message)
            assert events[-1] == {"type": "end"}
            assert all(event["type"] == "chunk" for event in events[:-1])
            text = "".join(event["content"] for event in events[:-1])
            # the model saw the system prompt, the welcome and every message since (ctx counts them)
            assert text == expected_reply(2 * number, system, message, 12)
            replies.append(text)
        history = client.get("/chat/history", params=chat).json()["messages"]
    assert [(m["role"], m["content"]) for m in history] == [
        ("assistant", t("welcome", "zh")), ("user", "first question"), ("assistant", replies[0]),
        ("user", "second question"), ("assistant", replies[1])]


def test_a_reply_is_saved_when_its_client_leaves_and_its_chunks_are_in_a_stream(floor: DurableFloor) -> None:
    with httpx.Client(base_url=floor.url, timeout=30) as client:
        chat = client.post("/chat/start").json()
        params = {**chat, "message": "leaving early [[delay:50]]", "role": "assistant"}
        with client.stream("GET", "/chat/stream", params=params) as response:
            first = next(iter_sse(response))  # one event, then the tab closes
        assert first.data["type"] == "chunk"

        def saved() -> list[dict[str, str]] | None:
            messages = client.get("/chat/history", params=chat).json()["messages"]
            return messages if len(messages) == 3 else None

        messages = wait_until(saved, timeout=10)
    assert messages[2]["role"] == "assistant" and messages[2]["status"] == "complete"
    assert messages[2]["content"].startswith("ctx=2 ")
    with redis.Redis(unix_socket_path=str(floor.redis_socket), decode_responses=True) as server:
        turn_id = server.hget(f"floor:{chat['user_id']}:{chat['session_id']}:meta", "last_turn")
        entries = [entry for _, entry in server.xrange(f"floor:events:{turn_id}")]
        assert server.config_get("appendonly")["appendonly"] == "yes"  # (as the app's embedded Redis)
    # this turn's stream: its chunks, in order, are the saved reply; its end comes last, once
    assert entries[-1] == {"t": "end"} and len(entries) > 2
    assert all(entry["t"] == "chunk" for entry in entries[:-1])
    assert "".join(entry["c"] for entry in entries[:-1]) == messages[2]["content"]
