"""The durable floor: the least a server must do per turn to keep every conversation in Redis.

The relay (bench/relay.py) stores nothing, so its ratio to the model is what any server costs. This
one keeps what issue 32 requires the app to keep, and nothing more: every reply saved before its `end`,
and resumable from any host (its chunks in a Redis Stream). The app's ratio to it is what the app's
other features cost; its own ratio to the relay is what that keeping costs in this one design (an upper
bound on durability's cost, not a proven minimum). It speaks the seed API (`POST /chat/start`, `GET
/chat/stream`, `GET /chat/history`), so the load generator drives it exactly as it drives the app:

- `/chat/start`: the conversation's metadata and its welcome message, one MULTI;
- a turn: the user's message saved and the context window (the last 20 messages) read back in one
  MULTI before the model is asked; the reply generated in a task of its own (it goes on if the client
  leaves) and handed to its reader from memory, coalesced into events of 40 ms; its chunks written
  to a Redis Stream in batches every 100 ms by one writer for all turns (a reader on another host, or
  resuming, could read them); at the model's end one MULTI saves the reply, the stream's last chunks
  and its end, and only then is `end` sent (`end` means saved);
- uvicorn as the app runs it (uvloop, httptools, one worker, no access log), the app's embedded
  redis-server (EmbeddedRedis: a unix socket, AOF everysec) and the app's Redis client (LeanRedis).

What it does not do, and the app does: identities and ownership, the conversation's lock, limits and
budgets, resuming a stream, leases and recovery after a crash, the search index, titles, versions,
roles, metrics, logs.

    python -m bench.durable_floor --port 8200 --upstream http://127.0.0.1:8001/v1 --data-dir /tmp/floor
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from webapp.__main__ import EmbeddedRedis
from webapp.base.i18n import t
from webapp.core.roles import get_role
from webapp.llm.providers import delta_text
from webapp.storage.redis_client import DRIVER_INFO, LeanConnectionPool, LeanRedis

log = logging.getLogger("bench.durable_floor")

CONTEXT = 20  # messages
COALESCE_S = 0.040
FLUSH_S = 0.100
TTL = 7 * 86400
END = b'data: {"type":"end"}\n\n'


def chunk_frame(text: str) -> bytes:
    return b"data: " + orjson.dumps({"content": text, "type": "chunk"}) + b"\n\n"


class Turn:
    """A reply generating here: its events, for the one reader fed from memory."""

    def __init__(self, key: str) -> None:
        self.key = key  # the conversation's
        self.frames: list[bytes] = []
        self.pending: list[str] = []  # deltas not yet in an event
        self.text: list[str] = []
        self.ended = False
        self.last_emit = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.waiter: asyncio.Future[None] | None = None

    def publish(self, frame: bytes) -> None:
        self.frames.append(frame)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def follow(self) -> AsyncIterator[bytes]:
        index = 0
        while True:
            if len(self.frames) > index:
                batch = b"".join(self.frames[index:])
                index = len(self.frames)
                yield batch
            elif self.ended:
                return
            else:
                self.waiter = asyncio.get_running_loop().create_future()
                await self.waiter


class Floor:
    def __init__(self, upstream: str, redis_url: str) -> None:
        self.upstream = upstream
        self.redis = LeanRedis(connection_pool=LeanConnectionPool.from_url(
            redis_url, max_connections=256, decode_responses=True, protocol=2, driver_info=DRIVER_INFO))
        self.http: aiohttp.ClientSession | None = None
        self.unwritten: dict[str, list[str]] = {}  # turn id -> chunk texts not yet in its stream
        self.wake = asyncio.Event()
        self.inflight: asyncio.Future[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    # -- the event writer: one pipeline every FLUSH_S for every turn that has new chunks

    def add(self, turn_id: str, text: str) -> None:
        if turn_id not in self.unwritten:
            self.unwritten[turn_id] = []
            self.wake.set()
        self.unwritten[turn_id].append(text)

    async def write_events(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            await asyncio.sleep(FLUSH_S)
            batch, self.unwritten = self.unwritten, {}
            self.inflight = asyncio.get_running_loop().create_future()
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for turn_id, texts in batch.items():
                        pipe.xadd(f"floor:events:{turn_id}", {"t": "chunk", "c": "".join(texts)})
                    await pipe.execute()
            except Exception:  # (never dies: the batch goes back, first, and is tried again)
                log.exception("the floor's event write failed")
                for turn_id, texts in batch.items():
                    self.unwritten[turn_id] = texts + self.unwritten.get(turn_id, [])
                self.wake.set()
                await asyncio.sleep(0.5)
            finally:
                self.inflight.set_result(None)

    async def take(self, turn_id: str) -> list[str]:
        """The turn's unwritten chunks, once a write in flight has ended (the stream's order: an earlier
        batch may hold this turn's chunks). As the app's EventWriter.take, it waits for any batch in flight."""
        texts = self.unwritten.pop(turn_id, [])
        if self.inflight is not None and not self.inflight.done():
            await self.inflight
            texts = self.unwritten.pop(turn_id, []) + texts  # (a failed write put its chunks back)
        return texts

    # -- a turn

    def emit(self, turn_id: str, turn: Turn) -> None:
        turn.timer = None
        if not turn.pending or turn.ended:
            return
        text = "".join(turn.pending)
        turn.pending.clear()
        turn.last_emit = asyncio.get_running_loop().time()
        turn.publish(chunk_frame(text))
        self.add(turn_id, text)

    def delta(self, turn_id: str, turn: Turn, text: str) -> None:
        turn.text.append(text)
        turn.pending.append(text)
        if turn.timer is not None:
            return
        loop = asyncio.get_running_loop()
        due = turn.last_emit + COALESCE_S
        if loop.time() >= due:
            self.emit(turn_id, turn)
        else:
            turn.timer = loop.call_at(due, self.emit, turn_id, turn)

    async def generate(self, turn_id: str, turn: Turn, messages: list[dict[str, str]]) -> None:
        assert self.http is not None
        body = orjson.dumps({"model": "gpt-4o-mini", "messages": messages, "stream": True})
        headers = {"Authorization": "Bearer floor", "Content-Type": "application/json"}
        status = "complete"
        try:
            async with self.http.post(f"{self.upstream}/chat/completions", data=body, headers=headers) as response:
                if response.status != 200:
                    raise RuntimeError(f"upstream {response.status}")
                async for line in response.content:
                    text = delta_text(line)
                    if text:
                        self.delta(turn_id, turn, text)
        except Exception:
            log.exception("the floor's model request failed")
            status = "error"
        if turn.timer is not None:
            turn.timer.cancel()
        self.emit(turn_id, turn)
        reply = orjson.dumps({"role": "assistant", "content": "".join(turn.text), "status": status,
                              "ts": time.time()}).decode()
        try:
            last = await self.take(turn_id)
            events = f"floor:events:{turn_id}"
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(f"{turn.key}:messages", reply)
                pipe.expire(f"{turn.key}:messages", TTL)
                pipe.hset(f"{turn.key}:meta", mapping={"updated": time.time(), "running": "", "last_turn": turn_id})
                if last:
                    pipe.xadd(events, {"t": "chunk", "c": "".join(last)})
                pipe.xadd(events, {"t": "end" if status == "complete" else "error"})
                pipe.expire(events, 3600)
                await pipe.execute()
        except Exception:  # (never `end` for a reply that is not saved)
            log.exception("the floor's save failed")
            status = "unsaved"
        turn.ended = True
        turn.publish(END if status == "complete" else b'data: {"type":"error","content":"%s"}\n\n' % status.encode())

    async def start_chat(self, request: Request) -> Response:
        user_id = request.query_params.get("user_id") or secrets.token_hex(8)
        session_id = secrets.token_hex(16)
        key = f"floor:{user_id}:{session_id}"
        welcome = orjson.dumps({"role": "assistant", "content": t("welcome", "zh"), "ts": time.time()}).decode()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{key}:meta", mapping={"user_id": user_id, "role": "assistant", "created": time.time()})
            pipe.rpush(f"{key}:messages", welcome)
            pipe.expire(f"{key}:meta", TTL)
            pipe.expire(f"{key}:messages", TTL)
            await pipe.execute()
        return JSONResponse({"user_id": user_id, "session_id": session_id, "role": "assistant"})

    async def stream(self, request: Request) -> Response:
        query = request.query_params
        user_id, session_id, message = query.get("user_id", ""), query.get("session_id", ""), query.get("message", "")
        role = get_role(query.get("role") or "assistant")
        key = f"floor:{user_id}:{session_id}"
        saved = orjson.dumps({"role": "user", "content": message, "ts": time.time()}).decode()
        turn_id = secrets.token_hex(8)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(f"{key}:messages", saved)
            pipe.lrange(f"{key}:messages", -CONTEXT, -1)
            pipe.hset(f"{key}:meta", mapping={"updated": time.time(), "running": turn_id})
            pipe.expire(f"{key}:messages", TTL)
            _, window, *_ = await pipe.execute()
        messages = [{"role": "system", "content": role.system_prompt}]
        messages += [{"role": m["role"], "content": m["content"]} for m in map(orjson.loads, window)]
        turn = Turn(key)
        task = asyncio.create_task(self.generate(turn_id, turn, messages))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return StreamingResponse(turn.follow(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def history(self, request: Request) -> Response:
        query = request.query_params
        key = f"floor:{query.get('user_id', '')}:{query.get('session_id', '')}"
        raw = await self.redis.lrange(f"{key}:messages", 0, -1)
        return JSONResponse({"messages": [orjson.loads(m) for m in raw]})


def create_floor(upstream: str, redis_url: str) -> Starlette:
    floor = Floor(upstream, redis_url)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        floor.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None, sock_read=60))
        writer = asyncio.create_task(floor.write_events())
        yield
        writer.cancel()
        await floor.http.close()
        await floor.redis.aclose()

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/chat/start", floor.start_chat, methods=["POST"]),
                             Route("/chat/stream", floor.stream), Route("/chat/history", floor.history),
                             Route("/healthz", health)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--upstream", required=True, help="the model's base URL, e.g. http://127.0.0.1:8001/v1")
    parser.add_argument("--data-dir", type=Path, required=True, help="its redis-server's socket, AOF and pid file")
    args = parser.parse_args()
    redis = EmbeddedRedis(args.data_dir)  # (the app's own: its socket, AOF and pid file under data_dir/redis)
    redis.start()
    try:
        uvicorn.run(create_floor(args.upstream, redis.url), host="127.0.0.1",
                    port=args.port, loop="uvloop", http="httptools", access_log=False, log_level="warning",
                    backlog=4096)
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
