"""Redis client: the CPU one round trip costs the app, per connection pool and packer.

Starting a turn is two Redis round trips and /chat/start one; when hundreds of turns
start in the same instant, what each round trip costs in Python decides how long the
last of them waits. This measures the client alone, in this process, against a real
redis-server (the embedded one, unix socket): sequential calls and 200 concurrent
callers, for a PING, a 3-command pipeline and the MULTI that starts a turn.

    python -m bench.redis_client
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis  # noqa: E402

from bench.servers import Workdir, git_revision, results_file  # noqa: E402
from webapp.__main__ import EmbeddedRedis  # noqa: E402
from webapp.storage.redis_client import LeanConnectionPool  # noqa: E402

MESSAGE = '{"id":"m1","role":"user","content":"how do streamed replies work? 多轮对话","ts":"2026-11-25T12:00:00Z"}'


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pools(url: str) -> dict[str, Callable[[], ConnectionPool]]:
    options: dict[str, Any] = {"decode_responses": True, "health_check_interval": 30}
    return {
        "redis-py ConnectionPool": lambda: ConnectionPool.from_url(url, max_connections=1000, **options),
        "redis-py BlockingConnectionPool (64), the app before": lambda: BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=30, **options
        ),
        "LeanConnectionPool (64) + hiredis packing, the app now": lambda: LeanConnectionPool.from_url(
            url, max_connections=64, **options
        ),
    }


def operations(client: Redis) -> dict[str, Callable[[int], Awaitable[Any]]]:
    async def ping(index: int) -> None:
        await client.ping()

    async def pipeline(index: int) -> None:
        async with client.pipeline(transaction=False) as pipe:
            pipe.hgetall(f"bench:meta:{index % 100}")
            pipe.set(f"bench:lock:{index % 100}", "turn", nx=True, ex=60)
            pipe.expire(f"bench:lock:{index % 100}", 60)
            await pipe.execute()

    async def turn_multi(index: int) -> None:
        sid = f"bench:s:{index % 100}"
        async with client.pipeline(transaction=True) as pipe:
            pipe.rpush(f"{sid}:messages", MESSAGE)
            pipe.hset(sid, mapping={"title": "t", "preview": "p", "role": "assistant", "count": 3,
                                    "updated": repr(time.time()), "turn": "t1"})
            pipe.zadd("bench:index", {sid: time.time() * 1000})
            pipe.hset(f"{sid}:turn", mapping={"session_id": sid, "user_id": "u", "status": "running"})
            for key in (f"{sid}:turn", f"{sid}:messages", sid, "bench:index", "bench:user"):
                pipe.expire(key, 600)
            pipe.ltrim(f"{sid}:messages", -50, -1)
            pipe.lrange(f"{sid}:messages", -20, -1)
            await pipe.execute()

    return {"PING": ping, "pipeline of 3": pipeline, "turn-start MULTI (12 commands)": turn_multi}


async def measure(url: str, calls: int, concurrency: list[int]) -> list[dict[str, Any]]:
    rows = []
    for pool_name, make_pool in pools(url).items():
        for conc in concurrency:
            pool = make_pool()
            client = Redis(connection_pool=pool)
            for op_name, op in operations(client).items():
                await asyncio.gather(*(op(i) for i in range(200)))  # warm: connections open

                async def worker(start: int, count: int) -> None:
                    for i in range(start, start + count):
                        await op(i)

                per_worker = calls // conc
                started, cpu = time.perf_counter(), _cpu()
                await asyncio.gather(*(worker(w * per_worker, per_worker) for w in range(conc)))
                cpu_us = (_cpu() - cpu) / (per_worker * conc) * 1e6
                wall = time.perf_counter() - started
                rows.append({"pool": pool_name, "concurrency": conc, "operation": op_name,
                             "cpu_us_per_call": round(cpu_us, 1), "calls_per_s": round(per_worker * conc / wall)})
            await client.aclose()
            await pool.disconnect()
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    ops = list(dict.fromkeys(r["operation"] for r in rows))
    lines = ["| pool | callers | " + " | ".join(f"{op}: CPU µs" for op in ops) + " |",
             "|---|---:|" + "---:|" * len(ops)]
    for (pool, conc) in dict.fromkeys((r["pool"], r["concurrency"]) for r in rows):
        cells = [next(r["cpu_us_per_call"] for r in rows if (r["pool"], r["concurrency"], r["operation"]) == (pool, conc, op))
                 for op in ops]
        lines.append(f"| {pool} | {conc} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=6000, help="calls per operation and variant")
    parser.add_argument("--concurrency", default="1,200", help="comma-separated numbers of concurrent callers")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    concurrency = [int(n) for n in args.concurrency.split(",")]
    try:
        import uvloop
        runner: Callable[..., Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    with Workdir("redis") as workdir:
        redis_server = EmbeddedRedis(workdir / "data")
        redis_server.start()
        try:
            rows = runner(measure(redis_server.url, args.calls, concurrency))
        finally:
            redis_server.stop()
    print(render(rows))
    output = results_file("redis-client", args.output)
    output.write_text(json.dumps({"revision": git_revision(), "calls": args.calls, "rows": rows}, indent=2))
    print(f"results: {output}")


if __name__ == "__main__":
    main()
