"""Sidebar: how quick is it with 2,000 conversations, 100 pinned, 20 folders (and 100 archived)? (issue 37)

One user gets 2,000 conversations (4 messages each), written straight into the app's embedded Redis
through the app's own Store; 100 are pinned, 400 filed into 20 folders (20 each), 100 archived. A
second user gets the same 2,000 with none of that (the list as it was). Over HTTP, one request at a
time, it times the sidebar's first page (`GET /sidebar` as HTMX asks for it: the pinned group, the
folders with their newest 5, the first 30 of the rest), a later page, the archive, a folder, and the
whole conversation page; then one turn in a pinned, filed conversation and one in a plain one, with
the Redis commands of each (MONITOR, less the lease keeper's own bookkeeping).

    python -m bench.sidebar
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fake_upstream import BENCH_TOKEN_DELAY_MS, BENCH_TOKENS, BENCH_TTFT_MS  # noqa: E402
from bench.history import INDEX_TTL_DAYS, TTL_DAYS, one_turn, seeded_message, time_get  # noqa: E402
from bench.servers import REPO_ROOT, App, FakeModel, Workdir, git_revision, results_file  # noqa: E402
from webapp.base.models import Conversation, new_id  # noqa: E402
from webapp.core.shelves import MAX_PINS  # noqa: E402
from webapp.core.titles import make_preview  # noqa: E402
from webapp.storage.store import Store  # noqa: E402

BUDGET_MS = 30.0


async def seed(store: Store, uid: str, count: int, *, organised: bool) -> dict[str, Any]:
    now = time.time()
    sids = []
    for rank in range(count):
        messages = [seeded_message(i) for i in range(4)]
        conversation = Conversation(id=new_id(), user_id=uid, title=f"Conversation {rank:05d} <about> things",
                                    preview=make_preview(messages[-1].content), role="assistant",
                                    message_count=len(messages), created=now - rank * 60, updated=now - rank * 60)
        await store.import_conversation(conversation, messages, terms=[])
        sids.append(conversation.id)
    folders: list[str] = []
    if organised:
        await store.shelve(uid, sids[50:150], "pinned", repr(now * 1000), max_pins=MAX_PINS)
        for n in range(20):
            fid = new_id()
            await store.write_folder(uid, fid, {"name": f"Folder {n:02d} <&>", "key": f"folder {n:02d} <&>",
                                                "created": now}, new=True, max_folders=50)
            await store.shelve(uid, sids[200 + n * 20: 220 + n * 20], "folder", fid, max_pins=MAX_PINS)
            folders.append(fid)
        await store.shelve(uid, sids[700:800], "archived", repr(now * 1000), max_pins=MAX_PINS)
    return {"sids": sids, "folders": folders}


async def turn_commands(redis: Redis, action: Any) -> dict[str, int]:
    """The Redis commands sent while `action` ran, by name (MONITOR, on a connection of its own), less
    the lease keeper's bookkeeping of running turns (`turns:running`, its sweep), which lands in
    whichever turn its tick falls."""
    commands: list[str] = []
    watcher = Redis(unix_socket_path=redis.connection_pool.connection_kwargs["path"], decode_responses=True)

    async def watch() -> None:
        async with watcher.monitor() as monitor:
            async for info in monitor.listen():
                commands.append(info["command"])

    watching = asyncio.ensure_future(watch())
    await asyncio.sleep(0.2)
    await action()
    await asyncio.sleep(0.5)  # what the app writes just after the end event
    watching.cancel()
    try:
        await watching
    except (asyncio.CancelledError, Exception):  # (the monitor's connection is dropped with it)
        pass
    await watcher.aclose()
    seen: dict[str, int] = {}
    for command in commands:
        if "turns:running" in command or command.upper().startswith(("MONITOR", "PING")):
            continue
        name = command.split(" ", 1)[0].lower()
        seen[name] = seen.get(name, 0) + 1
    return dict(sorted(seen.items()))


async def user(http_base: str) -> tuple[aiohttp.ClientSession, str]:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.post(f"{http_base}/chat/start") as response:
        return http, (await response.json())["user_id"]


async def run(args: argparse.Namespace, app: App) -> dict[str, Any]:
    base = app.url
    redis = Redis(unix_socket_path=str(app.redis_socket), decode_responses=True, max_connections=64)
    store = Store(redis, conversation_ttl=TTL_DAYS * 86400, index_ttl=INDEX_TTL_DAYS * 86400, turn_timeout=600)
    organised_http, organised_uid = await user(base)
    plain_http, plain_uid = await user(base)
    try:
        started = time.perf_counter()
        organised = await seed(store, organised_uid, args.conversations, organised=True)
        plain = await seed(store, plain_uid, args.conversations, organised=False)
        print(f"seeded 2 x {args.conversations} conversations in {time.perf_counter() - started:.1f} s", flush=True)
        sids, folder = organised["sids"], organised["folders"][0]
        timings = [
            await time_get(organised_http, base, "sidebar, organised (first page + groups)", "/sidebar", htmx=True),
            await time_get(plain_http, base, "sidebar, plain (first page)", "/sidebar", htmx=True),
            await time_get(organised_http, base, "archive view", "/sidebar?archived=1", htmx=True),
            await time_get(organised_http, base, "one folder's view", f"/sidebar?folder={folder}", htmx=True),
            await time_get(organised_http, base, "conversation page, organised", f"/c/{sids[0]}"),
            await time_get(plain_http, base, "conversation page, plain", f"/c/{plain['sids'][0]}"),
        ]
        for timing in timings:
            print(f"  {timing.name:<45} p50 {timing.p50_ms:7.2f} ms  p90 {timing.p90_ms:7.2f} ms  "
                  f"{timing.bytes:>8,} B  ({timing.status})", flush=True)
        pinned_and_filed = sids[60]
        await store.shelve(organised_uid, [pinned_and_filed], "folder", folder, max_pins=MAX_PINS)
        turns: dict[str, Any] = {}
        for name, http, uid, sid in (("plain", plain_http, plain_uid, plain["sids"][0]),
                                     ("pinned + filed", organised_http, organised_uid, pinned_and_filed)):
            await one_turn(http, base, uid, sid, "the first exchange (a title, the search index)")
            runs = [await turn_commands(redis, lambda: one_turn(http, base, uid, sid, "how are you?"))  # noqa: B023
                    for _ in range(3)]
            # the fewest of three: a lease renewal, or the search index's flush of the turn before, lands by chance
            fewest = min(runs, key=lambda run: sum(run.values()))
            turns[name] = {"commands": fewest, "runs": runs}
            print(f"  turn in a {name:<16} {sum(fewest.values())} Redis commands {fewest}", flush=True)
        return {"conversations": args.conversations, "pinned": 100, "folders": 20, "filed": 400, "archived": 100,
                "timings": [timing.__dict__ for timing in timings], "turns": turns}
    finally:
        await organised_http.close()
        await plain_http.close()
        await redis.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=2_000)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    output = results_file("sidebar", args.output)
    revision = git_revision(None)
    with Workdir("sidebar", keep=False) as workdir:
        model = FakeModel(BENCH_TTFT_MS, BENCH_TOKEN_DELAY_MS, BENCH_TOKENS, workdir).start()
        try:
            app = App(model.url, workdir, source=REPO_ROOT).start()
            try:
                report = asyncio.run(run(args, app))
            finally:
                app.stop()
        finally:
            model.stop()
    report = {"benchmark": "sidebar", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "revision": revision,
              "machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()}, **report}
    output.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    first = report["timings"][0]
    turns = report["turns"]
    same = turns["plain"]["commands"] == turns["pinned + filed"]["commands"]
    print(f"\n  [{'met' if first['p50_ms'] < BUDGET_MS else 'MISSED'}] the organised sidebar renders in "
          f"{first['p50_ms']} ms (p50) < {BUDGET_MS:.0f} ms")
    print(f"  [{'met' if same else 'differs'}] a turn in a pinned, filed conversation sends the same Redis "
          f"commands as one in a plain conversation")
    print(f"\nresults: {output.relative_to(REPO_ROOT) if output.is_relative_to(REPO_ROOT) else output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
