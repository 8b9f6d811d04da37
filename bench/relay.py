"""The floor: a relay that stores nothing, for bench.load to measure the app against.

A Starlette app with one aiohttp session to the model: `POST /chat/stream` takes the whole
conversation (the client keeps it, as the direct phase does), asks the model for a streamed
reply and passes each delta on as the seed's SSE events (`data: {"content", "type": "chunk"}`
... `{"type": "end"}`). No Redis, no history, no limits, no identity: what any server that
relays a model's stream costs, and nothing more. It runs as the app does (uvicorn, uvloop,
httptools, one worker, no access log), so the app's ratio to it is what durability, resumable
streams, search, titles, accounts and limits cost.

    python -m bench.relay --port 8100 --upstream http://127.0.0.1:8001/v1
"""

from __future__ import annotations

import argparse
from contextlib import asynccontextmanager
from typing import AsyncIterator

import aiohttp
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

END = b'data: {"type":"end"}\n\n'


def create_relay(upstream: str, model: str = "gpt-4o-mini") -> Starlette:
    session: dict[str, aiohttp.ClientSession] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        session["http"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None, sock_read=60))
        yield
        await session["http"].close()

    async def relay(messages: list[dict[str, str]]) -> AsyncIterator[bytes]:
        body = orjson.dumps({"model": model, "messages": messages, "stream": True})
        headers = {"Authorization": "Bearer relay", "Content-Type": "application/json"}
        async with session["http"].post(f"{upstream}/chat/completions", data=body, headers=headers) as response:
            if response.status != 200:
                yield b'data: {"type":"error","content":"upstream %d"}\n\n' % response.status
                return
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                payload = line[6:].strip()
                if payload == b"[DONE]":
                    break
                choices = orjson.loads(payload).get("choices") or [{}]
                text = (choices[0].get("delta") or {}).get("content")
                if text:
                    yield b"data: " + orjson.dumps({"content": text, "type": "chunk"}) + b"\n\n"
        yield END

    async def stream(request: Request) -> Response:
        data = orjson.loads(await request.body())
        return StreamingResponse(relay(data["messages"]), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/chat/stream", stream, methods=["POST"]), Route("/healthz", health)],
                     lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--upstream", required=True, help="the model's base URL, e.g. http://127.0.0.1:8001/v1")
    args = parser.parse_args()
    uvicorn.run(create_relay(args.upstream), host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", backlog=4096)


if __name__ == "__main__":
    main()
