"""The app's CPU per turn start, and Redis's time per turn, when every user sends at the same instant.

At 200 users the seed API's wall over the relay is mostly its turns' starts (docs/performance-history.md,
issue 32): all users start a turn together, and the event loop serves the starts one after another. Here N
users each make a conversation (`/chat/start`, all at once: the first burst after the app started, while its
Redis pool fills; the app's CPU per call is printed), then send a turn at once (`/chat/stream`) to a model
that waits `--ttft-ms` (1.5 s) before its first token: the app's CPU from the burst until every response
has begun is the starts' alone (no token has arrived yet). With 1000 users the clock's 10 ms ticks are ~2%
of a round. Afterwards Redis's own account (`INFO commandstats`): microseconds per turn by command (a
script's commands count in its EVAL's time and again in their own lines).

    python -m bench.start_burst [--users 1000] [--rounds 5] [--rev REV]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis

from bench.servers import App, FakeModel, Workdir, cpu_seconds, export_revision, git_revision, results_file


async def burst(url: str, pid: int, sessions: list[tuple[aiohttp.ClientSession, str]]) -> tuple[float, float]:
    """One turn of every user at once: (app CPU ms per start, ms until every response began)."""
    began, count = asyncio.Event(), 0
    cpu_before, started = cpu_seconds(pid), time.perf_counter()
    cpu_all = 0.0

    async def turn(http: aiohttp.ClientSession, session_id: str) -> None:
        nonlocal count, cpu_all
        async with http.get(f"{url}/chat/stream", params={"session_id": session_id, "message": "hello there"}) as reply:
            assert reply.status == 200, reply.status
            count += 1
            if count == len(sessions):
                cpu_all = cpu_seconds(pid)
                began.set()
            async for _ in reply.content:
                pass

    tasks = [asyncio.create_task(turn(http, session_id)) for http, session_id in sessions]
    await began.wait()
    elapsed = time.perf_counter() - started
    await asyncio.gather(*tasks)
    return 1000 * (cpu_all - cpu_before) / len(sessions), 1000 * elapsed


async def first_starts(app: App, connector: aiohttp.TCPConnector, users: int,
                       sessions: list[tuple[aiohttp.ClientSession, str]]) -> dict[str, float]:
    """Every user's `/chat/start` in one burst, the first after the app started (its lazily loaded code warmed
    by two users first): the app's CPU per call and the calls' latency while its Redis pool fills."""
    await asyncio.sleep(3)  # (the start's warm-up thread, which imports the SDK, has finished)
    latencies: list[float] = []

    async def start(http: aiohttp.ClientSession) -> str:
        began = time.perf_counter()
        async with http.post(f"{app.url}/chat/start") as answer:
            session_id = (await answer.json())["session_id"]
        latencies.append(1000 * (time.perf_counter() - began))
        return session_id

    for _ in range(2):
        async with aiohttp.ClientSession() as warm:
            await start(warm)
    latencies.clear()
    https = [aiohttp.ClientSession(connector=connector, connector_owner=False, cookie_jar=aiohttp.CookieJar(unsafe=True))
             for _ in range(users)]  # (one cookie jar each: each user is an identity of their own)
    cpu = cpu_seconds(app.pid)
    ids = await asyncio.gather(*(start(http) for http in https))
    cpu = cpu_seconds(app.pid) - cpu
    sessions.extend(zip(https, ids))
    latencies.sort()
    result = {"cpu_ms_per_call": round(1000 * cpu / users, 3), "p50_ms": round(latencies[len(latencies) // 2]),
              "p99_ms": round(latencies[int(len(latencies) * 0.99)])}
    print(f"  the first /chat/start burst: {result['cpu_ms_per_call']} ms of app CPU a call, p50 {result['p50_ms']} ms,"
          f" p99 {result['p99_ms']} ms", flush=True)
    return result


async def measure(app: App, users: int, rounds: int) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    sessions = []
    try:
        first = await first_starts(app, connector, users, sessions)
        per_start, begun = [], []
        for round_ in range(rounds + 1):  # round 0 warms up (the pools' connections, lazily loaded code)
            cpu, elapsed = await burst(app.url, app.pid, sessions)
            if round_:
                per_start.append(cpu)
                begun.append(elapsed)
                print(f"  round {round_}: {cpu:.3f} ms of app CPU per start; every response begun in {elapsed:.0f} ms",
                      flush=True)
            await asyncio.sleep(1.0)
    finally:
        for http, _ in sessions:
            await http.close()
        await connector.close()
    client = redis.Redis(unix_socket_path=str(app.redis_socket))
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    turns = users * (rounds + 1)
    by_command = {name.removeprefix("cmdstat_"): round(value["usec"] / turns, 1) for name, value in stats.items()}
    return {"first_chat_start": first,
            "start_cpu_ms": {"median": round(statistics.median(per_start), 3), "best": round(min(per_start), 3),
                             "rounds": per_start},
            "begun_ms_median": round(statistics.median(begun)), "redis_usec_per_turn": dict(
                sorted(by_command.items(), key=lambda item: -item[1]))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ttft-ms", type=int, default=1500)
    parser.add_argument("--rev", default=None, help="run the app as committed at this git revision")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra app setting")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    with Workdir("burst") as workdir:
        model = FakeModel(ttft_ms=args.ttft_ms, token_delay_ms=1, tokens=5, workdir=workdir).start()
        source = export_revision(args.rev, workdir / "src") if args.rev else Path(__file__).resolve().parent.parent
        app = App(upstream_url=model.url, workdir=workdir, env=dict(item.split("=", 1) for item in args.env),
                  source=source).start()
        try:
            print(f"app code {git_revision(args.rev)}: {args.users} users, a turn each at once, {args.rounds} rounds")
            result = asyncio.run(measure(app, args.users, args.rounds))
        finally:
            app.stop()
            model.stop()
    result.update(revision=git_revision(args.rev), users=args.users, when=time.strftime("%Y-%m-%d %H:%M:%S"))
    cpu = result["start_cpu_ms"]
    print(f"app CPU per turn start: median {cpu['median']} ms, best {cpu['best']} ms; every response begun in "
          f"{result['begun_ms_median']} ms (median)")
    top = list(result["redis_usec_per_turn"].items())[:8]
    print("Redis µs per turn (warm-up round included): " + ", ".join(f"{name} {usec}" for name, usec in top))
    output = results_file("start-burst", args.output)
    output.write_text(json.dumps(result, indent=2))
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
