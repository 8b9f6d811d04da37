"""Redis going away and coming back: the app answers again without a restart of its own."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.conftest import AppServer, RedisServer, start_chat, stream_turn, wait_until


@pytest.mark.redis_restart
def test_app_recovers_after_redis_restarts(
    app_server: AppServer, redis_server: RedisServer, make_client: Callable[..., httpx.Client]
) -> None:
    start_chat(make_client())

    redis_server.stop()
    try:
        during = make_client(timeout=10).post("/chat/start")
    finally:
        redis_server.start()

    assert during.status_code >= 500
    assert "redis.sock" not in during.text and "Traceback" not in during.text
    assert app_server.process.poll() is None, "the app must survive a Redis outage"
    client = make_client()

    def started() -> dict | None:
        response = client.post("/chat/start")
        return response.json() if response.status_code == 200 else None

    chat = wait_until(started, timeout=10, interval=0.2)
    assert client.get("/healthz").status_code == 200
    turn = stream_turn(client, chat, "back again")
    assert turn.ended and turn.reply["ctx"] == 2
