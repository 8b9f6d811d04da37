"""The lean EventSourceResponse: pings, events, and cleanup when the client goes away."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import AsyncIterator, Iterator

import httpx
import orjson
import pytest
import uvicorn
from sse_starlette import ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from tests.conftest import free_port, wait_until
from webapp.web.sse import TurnEventResponse, json_event_frame

cleaned_up: list[str] = []


async def slow_events(name: str, count: int, delay: float) -> AsyncIterator[ServerSentEvent]:
    try:
        for index in range(count):
            await asyncio.sleep(delay)
            yield ServerSentEvent(data=f"{name}-{index}", id=str(index + 1))
    finally:
        cleaned_up.append(name)


async def endpoint(request: Request) -> TurnEventResponse:
    name = request.query_params["name"]
    count = int(request.query_params.get("count", "3"))
    delay = float(request.query_params.get("delay", "0.3"))
    return TurnEventResponse(slow_events(name, count, delay), ping=0.1)


@pytest.fixture(scope="module")
def sse_app() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[Route("/events", endpoint)]), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=10)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_events_arrive_with_pings_in_between_and_the_stream_ends(sse_app: str) -> None:
    with httpx.stream("GET", f"{sse_app}/events", params={"name": "a", "count": 3}, timeout=10) as response:
        body = "".join(response.iter_text())
    assert response.headers["content-type"].startswith("text/event-stream")
    assert [line for line in body.splitlines() if line.startswith("data:")] == ["data: a-0", "data: a-1", "data: a-2"]
    assert body.count(": ping") >= 2
    assert "a" in cleaned_up


def test_a_client_that_leaves_stops_the_stream_and_runs_its_cleanup(sse_app: str) -> None:
    with httpx.stream(
        "GET", f"{sse_app}/events", params={"name": "b", "count": 100, "delay": 0.05}, timeout=10
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: b-2"):
                break
    started = time.monotonic()
    wait_until(lambda: "b" in cleaned_up, timeout=3)
    assert time.monotonic() - started < 3


def test_hand_framed_json_events_match_sse_starlette() -> None:
    for payload in (
        {"content": "第一行\n第二行\r\n\"quoted\" </script>", "type": "chunk"},
        {"type": "end", "session_id": "0b3f6a4e-6f1e-4a59-9c53-8f3f1f8a1d2e"},
        {"content": "", "type": "chunk"},
    ):
        data = orjson.dumps(payload)
        framed = json_event_frame("turn-id:7", data)
        assert framed == ServerSentEvent(data=data.decode(), id="turn-id:7").encode()
        assert framed.count(b"\r\n") == 3  # id line, one data line, blank line
