"""History: does the app stay quick with a 10,000-message conversation and 10,000 conversations?

One user gets 10,000 conversations (10 messages each) plus three measured ones of
10, 100 and 10,000 messages, written straight into the app's embedded Redis through
the app's own `webapp.storage.store.Store` (so no key name is repeated here). Then, over HTTP
with the user's cookie, one request at a time (so a request's latency on loopback is
its server time plus a fraction of a millisecond), it times the conversation page, the
message API, the seed's /chat/history, the sidebar's first page, search, and one turn
per measured conversation, and counts the Redis commands and bytes of that turn
(CONFIG RESETSTAT before, INFO after, minus the same done around nothing).

    python -m bench.history
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fake_upstream import BENCH_TOKEN_DELAY_MS, BENCH_TOKENS, BENCH_TTFT_MS  # noqa: E402
from bench.load import SSEData, percentile  # noqa: E402
from bench.servers import REPO_ROOT, App, FakeModel, Workdir, export_revision, git_revision, results_file  # noqa: E402
from webapp.base.models import Conversation, Message, new_id, new_message_id, now_iso  # noqa: E402
from webapp.core.titles import make_preview  # noqa: E402
from webapp.storage.store import Store  # noqa: E402

SIZES = (10, 100, 10_000)  # messages in the measured conversations
FILLER_MESSAGES = 10
SEARCH_HIT_TITLE = "kubernetes"  # in every 7th filler title: found in metadata at once
SEARCH_HIT_BODY = "zebracorn"  # in one message of the 1,500th newest conversation only
SEARCH_MISS = "nowhere-to-be-found"  # every scanned conversation's messages are read
TTL_DAYS = 7  # the app's defaults; the seeded data must not expire during the run
INDEX_TTL_DAYS = 30

ANSWER = (
    "Here is how I would approach it:\n\n"
    "1. **Start small**: write the simplest version that works, then measure.\n"
    "2. Keep the state in one place, e.g. `store.py`, so that nothing else touches it.\n"
    "3. Stream the reply as it is produced; the user sees the first words at once.\n\n"
    "```python\nasync def handler(request):\n    async for chunk in model.stream(request):\n"
    "        yield chunk\n```\n\n"
    "If it is still slow, profile before changing anything: the cost is rarely where one "
    "expects it. Tell me more about your setup and I can be more specific."
)


def seeded_message(index: int, extra: str = "") -> Message:
    """The index-th message of a seeded conversation; the same size for every index, so
    that a turn reads back the same bytes from a 100- and a 10,000-message history."""
    if index % 2 == 0:
        content = f"Question {index:06d}: how would you structure a small web service that streams replies?{extra}"
        return Message(id=new_message_id(), role="user", content=content, ts=now_iso())
    return Message(id=new_message_id(), role="assistant", content=f"Answer {index:06d}. {ANSWER}{extra}", ts=now_iso())


def filler_title(rank: int) -> str:
    topic = SEARCH_HIT_TITLE if rank % 7 == 0 else "databases"
    return f"Conversation {rank:05d} about {topic}"


async def seed(store: Store, uid: str, conversations: int) -> dict[str, Any]:
    """The user's conversations, newest first: the three measured ones, then the filler."""
    started = time.perf_counter()
    now = time.time()
    measured: dict[int, str] = {}
    specs: list[tuple[Conversation, list[Message]]] = []
    for rank in range(conversations):
        sid = new_id()
        if rank < len(SIZES):
            size = SIZES[rank]
            measured[size] = sid
            title = f"Measured conversation of {size} messages"
            messages = [seeded_message(i) for i in range(size)]
        else:
            title = filler_title(rank)
            extra = f" {SEARCH_HIT_BODY}" if rank == 1500 else ""
            messages = [seeded_message(i, extra if i == 5 else "") for i in range(FILLER_MESSAGES)]
        updated = now - rank  # one second apart: a stable order, newest first
        conversation = Conversation(
            id=sid, user_id=uid, title=title, preview=make_preview(messages[-1].content), role="assistant",
            message_count=len(messages), created=updated - 60, updated=updated,
        )
        specs.append((conversation, messages))
    batch = 100
    for start in range(0, len(specs), batch):
        await asyncio.gather(*(store.restore_conversation(c, m, *versions_of(c, m) if c.id in measured.values()
                                                          else (None, None))
                               for c, m in specs[start : start + batch]))
    return {"seconds": round(time.perf_counter() - started, 2), "conversations": measured}


def versions_of(conversation: Conversation, messages: list[Message]) -> tuple[dict[str, str], dict[str, str]]:
    """Three versions of a few replies (regenerated when each was the last): the first, one in the
    middle and the newest, as the app stores them (versions.py), so pages and turns pay for them."""
    labels: dict[str, str] = {}
    forks: dict[str, str] = {}
    for index in sorted({1, (len(messages) // 2) | 1, len(messages) - 1}):
        if index >= len(messages) or messages[index].role != "assistant":
            continue
        older = [{"messages": [seeded_message(index, f" (version {n})").to_json().decode()], "forks": {},
                  "versions": {}} for n in (1, 2)]
        forks[str(index)] = orjson.dumps({"active": 2, "tails": [*older, None]}).decode()
        labels[str(index)] = "3/3"
    return labels, forks


# ---------------------------------------------------------------- timing requests


@dataclass
class Timing:
    name: str
    path: str
    status: int
    bytes: int
    p50_ms: float
    p90_ms: float
    min_ms: float
    runs: int
    note: str = ""


async def time_get(
    http: aiohttp.ClientSession, base: str, name: str, path: str, *, htmx: bool = False,
    runs: int = 30, budget_s: float = 8.0, note: str = "",
) -> Timing:
    """Sequential GETs on a kept-alive connection, after two unmeasured ones."""
    headers = {"HX-Request": "true"} if htmx else {}
    samples: list[float] = []
    status = size = 0
    deadline = time.monotonic() + budget_s
    for attempt in range(runs + 2):
        started = time.perf_counter()
        async with http.get(base + path, headers=headers, allow_redirects=False) as response:
            body = await response.read()
        elapsed = time.perf_counter() - started
        status, size = response.status, len(body)
        if attempt >= 2:
            samples.append(elapsed)
            if time.monotonic() > deadline and len(samples) >= 3:
                break
    return Timing(
        name=name, path=path, status=status, bytes=size, runs=len(samples),
        p50_ms=round(percentile(samples, 0.5) * 1000, 2), p90_ms=round(percentile(samples, 0.9) * 1000, 2),
        min_ms=round(min(samples) * 1000, 2), note=note,
    )


# ---------------------------------------------------------------- one turn and its Redis cost


async def redis_cost(redis: Redis, action: Any) -> dict[str, Any]:
    """Commands and bytes Redis handled while `action` ran (CONFIG RESETSTAT ... INFO)."""
    await redis.config_resetstat()
    result = await action()
    await asyncio.sleep(0.3)  # anything the app writes just after the end event
    info = await redis.info("all")  # redis-py parses it: cmdstat_* are dicts with "calls"
    commands: dict[str, int] = {}
    for key, value in info.items():
        if key.startswith("cmdstat_"):
            name = key.removeprefix("cmdstat_")
            calls = int(value["calls"])
            if name not in ("config", "info") and calls:
                commands[name] = calls
    return {
        "result": result,
        "commands": dict(sorted(commands.items())),
        "net_in": int(info.get("total_net_input_bytes", 0)),
        "net_out": int(info.get("total_net_output_bytes", 0)),
    }


async def one_turn(http: aiohttp.ClientSession, base: str, uid: str, sid: str, message: str) -> dict[str, Any]:
    params = {"user_id": uid, "session_id": sid, "message": message, "role": "assistant"}
    started = time.perf_counter()
    ttft = total = None
    text: list[str] = []
    ended = False
    async with http.get(f"{base}/chat/stream", params=params) as response:
        reader = SSEData()
        async for data in response.content.iter_any():
            for payload in reader.feed(data):
                event = orjson.loads(payload)
                if event.get("type") == "chunk" and event.get("content"):
                    ttft = ttft or time.perf_counter() - started
                    text.append(event["content"])
                elif event.get("type") == "end":
                    ended = True
                    total = time.perf_counter() - started
    return {
        "status": response.status, "ended": ended, "chars": len("".join(text)),
        "ttft_ms": round(ttft * 1000, 1) if ttft else None, "total_ms": round(total * 1000, 1) if total else None,
    }


# ---------------------------------------------------------------- the run


async def run(args: argparse.Namespace, app: App) -> dict[str, Any]:
    base = app.url
    redis = Redis(unix_socket_path=str(app.redis_socket), decode_responses=True, max_connections=256)
    store = Store(redis, conversation_ttl=TTL_DAYS * 86400, index_ttl=INDEX_TTL_DAYS * 86400, turn_timeout=600)
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        async with http.post(f"{base}/chat/start") as response:
            uid = (await response.json())["user_id"]
        seeded = await seed(store, uid, args.conversations)
        print(f"seeded {args.conversations} conversations in {seeded['seconds']} s", flush=True)
        sids = seeded["conversations"]
        big = sids[SIZES[-1]]

        page_probe = await http.get(f"{base}/c/{big}", allow_redirects=False)
        await page_probe.read()
        has_pages = page_probe.status == 200
        sidebar_probe = await http.get(f"{base}/sidebar", headers={"HX-Request": "true"}, allow_redirects=False)
        await sidebar_probe.read()
        has_sidebar = sidebar_probe.status == 200

        timings: list[Timing] = []
        for size in SIZES:
            sid = sids[size]
            if has_pages:
                timings.append(await time_get(http, base, f"conversation page, {size} msgs", f"/c/{sid}",
                                              note="whole page: last messages + sidebar"))
                timings.append(await time_get(http, base, f"conversation pane (HTMX), {size} msgs", f"/c/{sid}",
                                              htmx=True))
            timings.append(await time_get(http, base, f"messages API, {size} msgs", f"/api/sessions/{sid}/messages"))
            timings.append(await time_get(http, base, f"/chat/history, {size} msgs",
                                          f"/chat/history?user_id={uid}&session_id={sid}",
                                          runs=10, note="the seed API returns every message"))
        conversations = args.conversations
        timings.append(await time_get(http, base, f"sidebar API, first page of {conversations}", "/api/sessions?limit=20"))
        if has_sidebar:
            timings.append(await time_get(http, base, f"sidebar partial (HTMX), first page of {conversations}",
                                          "/sidebar", htmx=True))
        searches = (
            (SEARCH_HIT_TITLE, "title match: found in metadata"),
            (SEARCH_HIT_BODY, "one body match: messages of ~1,500 conversations read"),
            (SEARCH_MISS, "no match: metadata + messages of every scanned conversation read"),
        )
        for query, note in searches:
            timings.append(await time_get(http, base, f"search API '{query}'", f"/api/sessions?q={query}",
                                          runs=10, note=note))
        if has_sidebar:
            timings.append(await time_get(http, base, f"search partial (HTMX) '{SEARCH_MISS}'",
                                          f"/sidebar?q={SEARCH_MISS}", htmx=True, runs=10))

        async def nothing() -> None:
            await asyncio.sleep(1.2)

        baseline = await redis_cost(redis, nothing)
        turns: dict[str, Any] = {}
        for size in SIZES:
            sid = sids[size]
            await one_turn(http, base, uid, sid, f"Warm-up turn on the {size:05d}-message conversation")  # the model connection, code paths
            cost = await redis_cost(redis, lambda sid=sid, size=size: one_turn(
                http, base, uid, sid, f"Measured turn on the {size:05d}-message conversation"))
            cost["net_in"] -= baseline["net_in"]
            cost["net_out"] -= baseline["net_out"]
            turns[str(size)] = cost
        return {
            "seed": seeded, "pages_route": has_pages, "sidebar_partial": has_sidebar,
            "pages_probe": {"/c/{id}": page_probe.status, "/sidebar (HTMX)": sidebar_probe.status},
            "timings": [t.__dict__ for t in timings], "turns": turns,
            "baseline": {k: baseline[k] for k in ("commands", "net_in", "net_out")},
        }
    finally:
        await http.close()
        await redis.aclose()


def render(report: dict[str, Any]) -> str:
    lines = []
    if not report["pages_route"]:
        probe = report["pages_probe"]
        lines.append(
            f"GET /c/{{id}} answered {probe['/c/{id}']} and GET /sidebar (HTMX) {probe['/sidebar (HTMX)']}: the page"
            " is timed through the messages API and /chat/history instead"
        )
    lines += [
        "| request | status | bytes | p50 ms | p90 ms | min ms | runs | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for t in report["timings"]:
        lines.append(
            f"| {t['name']} | {t['status']} | {t['bytes']:,} | {t['p50_ms']:.1f} | {t['p90_ms']:.1f}"
            f" | {t['min_ms']:.1f} | {t['runs']} | {t['note']} |"
        )
    turns = report["turns"]
    sizes = list(turns)
    lines += ["", "| one turn | " + " | ".join(f"{s} msgs" for s in sizes) + " |", "|---|" + "---:|" * len(sizes)]
    row = lambda label, get: lines.append(f"| {label} | " + " | ".join(str(get(turns[s])) for s in sizes) + " |")  # noqa: E731
    row("TTFT ms", lambda c: c["result"]["ttft_ms"])
    row("total ms", lambda c: c["result"]["total_ms"])
    row("reply complete", lambda c: "yes" if c["result"]["ended"] else "NO")
    row("Redis commands", lambda c: sum(c["commands"].values()))
    names = sorted({name for c in turns.values() for name in c["commands"]})
    for name in names:
        row(f"&nbsp;&nbsp;{name.upper()}", lambda c, name=name: c["commands"].get(name, 0))
    row("Redis bytes in (app -> Redis)", lambda c: f"{c['net_in']:,}")
    row("Redis bytes out (Redis -> app)", lambda c: f"{c['net_out']:,}")
    return "\n".join(lines)


def verdicts(report: dict[str, Any]) -> list[tuple[str, bool]]:
    found = []
    big = str(SIZES[-1])
    for t in report["timings"]:
        if t["name"].startswith(("conversation page, 10000", "conversation pane (HTMX), 10000")) or (
            not report["pages_route"] and t["name"].startswith("messages API, 10000")
        ):
            found.append((f"{t['name']}: p50 {t['p50_ms']:.1f} ms <= 30 ms", t["p50_ms"] <= 30))
    turns = report["turns"]
    mid = str(SIZES[1])
    same_commands = turns[mid]["commands"] == turns[big]["commands"]
    found.append((f"one turn's Redis commands at {mid} and {big} messages are the same"
                  f" ({sum(turns[mid]['commands'].values())} vs {sum(turns[big]['commands'].values())})", same_commands))
    for key, label in (("net_in", "bytes in"), ("net_out", "bytes out")):
        a, b = turns[mid][key], turns[big][key]
        close = abs(a - b) <= max(200, 0.02 * max(a, b))
        found.append((f"one turn's Redis {label} at {mid} and {big} messages within 2% ({a:,} vs {b:,})", close))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    parser.add_argument("--rev", help="run the app as committed at this git revision (default: the work tree)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    output = results_file("history", args.output)
    revision = git_revision(args.rev)  # once: HEAD may move while the benchmark runs
    with Workdir("history", keep=args.keep) as workdir:
        model = FakeModel(BENCH_TTFT_MS, BENCH_TOKEN_DELAY_MS, BENCH_TOKENS, workdir).start()
        try:
            source = export_revision(revision, workdir / "src") if args.rev else REPO_ROOT
            app = App(model.url, workdir, source=source).start()
            try:
                try:
                    from uvloop import run as run_loop
                except ImportError:
                    run_loop = asyncio.run
                report = run_loop(run(args, app))
            finally:
                app.stop()
        finally:
            model.stop()
    report = {
        "benchmark": "history", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "revision": revision,
        "machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
        **report,
    }
    output.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(render(report))
    print()
    for text, met in verdicts(report):
        print(f"  [{'met' if met else 'MISSED'}] {text}")
    print(f"\nresults: {output.relative_to(REPO_ROOT) if output.is_relative_to(REPO_ROOT) else output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
