"""Load: N simulated users through the real app, and the same users straight to the model.

For each N of the sweep, every user (its own aiohttp session and cookie jar) runs 3
turns twice: first straight to the fake model (POST /v1/chat/completions, streamed,
the context kept by the client), then through the app's seed API (POST /chat/start,
GET /chat/stream read to the end). Every reply is checked against what the fake model
must have said for the context the turn should have had (turn k: ctx=2k, the welcome
message counts), and afterwards every reply must be in /chat/history exactly once.
The ratio of the two wall times is what the app costs over a bare connection.

    python -m bench.load                      # sweep 1,10,50,200,500,1000
    python -m bench.load --users 50,200 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import secrets
import sys
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fake_upstream import BENCH_TOKEN_DELAY_MS, BENCH_TOKENS, BENCH_TTFT_MS  # noqa: E402
from bench.profiling import PySpy, summarize  # noqa: E402
from bench.servers import (  # noqa: E402
    REPO_ROOT, App, FakeModel, Usage, Watcher, Workdir, export_revision, git_revision, wait_for_quiet,
)
from tests.fake_upstream import expected_reply  # noqa: E402
from webapp.i18n import t  # noqa: E402
from webapp.roles import get_role  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SWEEP = "1,10,50,200,500,1000"
TURNS = 3
ROLE = get_role("assistant")
WELCOME = t("welcome", "zh")
MODEL = "gpt-4o-mini"  # what the app sends by default; the direct users send the same

# ---------------------------------------------------------------- one user


class SSEData:
    """The data fields of a byte stream of server-sent events (lines end in \\n or \\r\\n)."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self.buffer + data
        if buffer.endswith(b"\r"):  # maybe half of a \r\n
            self.buffer = buffer
            return []
        *events, self.buffer = buffer.replace(b"\r\n", b"\n").split(b"\n\n")
        found = []
        for event in events:
            lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
            if lines:
                found.append(b"\n".join(lines))
        return found


@dataclass
class TurnResult:
    """One turn as the user saw it. `outcome`: ok, failed (error, HTTP status, timeout),
    lost (the stream ended without its end event) or wrong (the reply is not the one
    the model gave for the right context)."""

    user: int
    turn: int
    outcome: str
    ttft: float | None = None
    total: float | None = None
    detail: str = ""


class User:
    """A simulated user: its own HTTP client and cookie jar, 3 turns per phase."""

    def __init__(self, index: int, tag: str, app_url: str, upstream_url: str, tokens: int) -> None:
        self.index = index
        self.tag = tag
        self.app_url = app_url
        self.upstream_url = upstream_url
        self.tokens = tokens
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # cookies from 127.0.0.1
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60),
        )
        self.user_id = ""
        self.session_id = ""
        self.start_latency: float | None = None
        self.sent: list[str] = []
        self.replies: list[str] = []
        self.conversations: list[tuple[str, list[str], list[str]]] = []  # (session, sent, replies) per app run
        self.runs = 0
        self.finished_at = 0.0

    def message(self, phase: str, turn: int) -> str:
        # the fake model echoes the first 30 characters: unique per user, run, turn and phase
        return f"{self.tag}{phase[0]}{self.runs % 10}-u{self.index:04d}-t{turn} how do streamed replies work?"

    def expected(self, turn: int, message: str) -> str:
        return expected_reply(2 * turn, ROLE.system_prompt, message, self.tokens)

    async def close(self) -> None:
        await self.http.close()

    # -- straight to the model

    async def run_direct(self) -> list[TurnResult]:
        self.runs += 1
        history: list[dict[str, str]] = [
            {"role": "system", "content": ROLE.system_prompt},
            {"role": "assistant", "content": WELCOME},
        ]
        results = []
        for turn in range(1, TURNS + 1):
            message = self.message("direct", turn)
            history.append({"role": "user", "content": message})
            result, reply = await self._direct_turn(turn, history, self.expected(turn, message))
            results.append(result)
            if result.outcome != "ok":
                results += self._skipped(turn)
                break
            history.append({"role": "assistant", "content": reply})
        self.finished_at = time.monotonic()
        return results

    async def _direct_turn(
        self, turn: int, messages: list[dict[str, str]], expected: str
    ) -> tuple[TurnResult, str]:
        body = orjson.dumps({"model": MODEL, "messages": messages, "stream": True})
        headers = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
        parts: list[str] = []
        ttft = None
        total = None
        done = False
        started = time.perf_counter()
        try:
            async with self.http.post(
                f"{self.upstream_url}/v1/chat/completions", data=body, headers=headers
            ) as response:
                if response.status != 200:
                    return TurnResult(self.index, turn, "failed", detail=f"HTTP {response.status}"), ""
                reader = SSEData()
                async for data in response.content.iter_any():
                    for payload in reader.feed(data):
                        if payload == b"[DONE]":
                            done = True
                            total = time.perf_counter() - started
                            continue
                        chunk = orjson.loads(payload)
                        choices = chunk.get("choices") or [{}]
                        text = (choices[0].get("delta") or {}).get("content")
                        if text:
                            if ttft is None:
                                ttft = time.perf_counter() - started
                            parts.append(text)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            return TurnResult(self.index, turn, "failed", detail=type(exc).__name__), ""
        return self._judge(turn, "".join(parts), expected, done, ttft, total, "")

    # -- through the app

    async def run_app(self) -> list[TurnResult]:
        self.runs += 1
        self.session_id, self.sent, self.replies = "", [], []
        started = time.perf_counter()
        try:
            async with self.http.post(f"{self.app_url}/chat/start") as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                data = await response.json()
            self.user_id, self.session_id = data["user_id"], data["session_id"]
            self.conversations.append((self.session_id, self.sent, self.replies))
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError) as exc:
            self.finished_at = time.monotonic()
            detail = f"/chat/start: {exc}" if isinstance(exc, ValueError) else f"/chat/start: {type(exc).__name__}"
            return [TurnResult(self.index, turn, "failed", detail=detail) for turn in range(1, TURNS + 1)]
        self.start_latency = time.perf_counter() - started
        results = []
        for turn in range(1, TURNS + 1):
            message = self.message("app", turn)
            self.sent.append(message)
            result, reply = await self._app_turn(turn, message)
            results.append(result)
            if result.outcome in ("ok", "wrong"):
                self.replies.append(reply)
            if result.outcome != "ok":
                results += self._skipped(turn)
                break
        self.finished_at = time.monotonic()
        return results

    async def _app_turn(self, turn: int, message: str) -> tuple[TurnResult, str]:
        params = {"user_id": self.user_id, "session_id": self.session_id, "message": message, "role": ROLE.id}
        parts: list[str] = []
        ttft = None
        total = None
        done = False
        error = ""
        started = time.perf_counter()
        try:
            async with self.http.get(f"{self.app_url}/chat/stream", params=params) as response:
                if response.status != 200:
                    body = (await response.text())[:200]
                    return TurnResult(self.index, turn, "failed", detail=f"HTTP {response.status} {body}"), ""
                reader = SSEData()
                async for data in response.content.iter_any():
                    for payload in reader.feed(data):
                        event = orjson.loads(payload)
                        kind = event.get("type")
                        if kind == "chunk":
                            if ttft is None and event.get("content"):
                                ttft = time.perf_counter() - started
                            parts.append(event.get("content", ""))
                        elif kind == "end":
                            done = True
                            total = time.perf_counter() - started
                        elif kind == "error":
                            error = f"error event: {event.get('content', '')}"
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            return TurnResult(self.index, turn, "failed", detail=type(exc).__name__), ""
        return self._judge(turn, "".join(parts), self.expected(turn, message), done, ttft, total, error)

    async def check_history(self) -> tuple[int, int, str]:
        """Over all its app runs: (replies missing from /chat/history, replies in it more than once,
        a problem or '')."""
        missing = duplicated = 0
        problem = ""
        for session_id, sent, replies in self.conversations:
            params = {"user_id": self.user_id, "session_id": session_id}
            try:
                async with self.http.get(f"{self.app_url}/chat/history", params=params) as response:
                    if response.status != 200:
                        missing += len(replies)
                        problem = problem or f"HTTP {response.status}"
                        continue
                    data = await response.json()
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                missing += len(replies)
                problem = problem or type(exc).__name__
                continue
            messages = data.get("messages", [])
            assistant = [m["content"] for m in messages if m["role"] == "assistant"]
            users = [m["content"] for m in messages if m["role"] == "user"]
            missing += sum(1 for reply in replies if assistant.count(reply) == 0)
            duplicated += sum(1 for reply in replies if assistant.count(reply) > 1)
            if users != sent:
                problem = problem or "user messages differ"
            elif messages and messages[0]["content"] != WELCOME:
                problem = problem or "no welcome message first"
        return missing, duplicated, problem

    # -- judging

    def _judge(
        self, turn: int, reply: str, expected: str, done: bool, ttft: float | None, total: float | None, error: str
    ) -> tuple[TurnResult, str]:
        if error:
            return TurnResult(self.index, turn, "failed", ttft, total, error[:200]), reply
        if not done:
            return TurnResult(self.index, turn, "lost", ttft, None, f"no end after {len(reply)} chars"), reply
        if reply != expected:
            detail = f"got {reply[:60]!r}, expected {expected[:60]!r}"
            return TurnResult(self.index, turn, "wrong", ttft, total, detail), reply
        return TurnResult(self.index, turn, "ok", ttft, total), reply

    def _skipped(self, after: int) -> list[TurnResult]:
        return [TurnResult(self.index, k, "failed", detail=f"not run: turn {after} failed") for k in range(after + 1, TURNS + 1)]


# ---------------------------------------------------------------- workers


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoadWorker:
    """Runs a share of the users on one event loop (in this process or a child process)."""

    def __init__(self, app_url: str, upstream_url: str, tokens: int) -> None:
        self.app_url = app_url
        self.upstream_url = upstream_url
        self.tokens = tokens
        self.users: list[User] = []

    async def setup(self, indices: list[int], tag: str) -> None:
        self.users = [User(i, tag, self.app_url, self.upstream_url, self.tokens) for i in indices]

    async def phase(self, kind: str, start_at: float) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        cpu = _cpu_self()
        runs = [user.run_direct() if kind == "direct" else user.run_app() for user in self.users]
        turns = [result for results in await asyncio.gather(*runs) for result in results]
        return {
            "turns": [asdict(result) for result in turns],
            "last_end": max((user.finished_at for user in self.users), default=start_at),
            "start_latencies": [u.start_latency for u in self.users if u.start_latency is not None],
            "cpu_s": _cpu_self() - cpu,
        }

    async def history(self) -> dict[str, Any]:
        gate = asyncio.Semaphore(100)

        async def check(user: User) -> tuple[int, int, str]:
            async with gate:
                return await user.check_history()

        checks = await asyncio.gather(*(check(user) for user in self.users))
        return {
            "missing": sum(c[0] for c in checks),
            "duplicated": sum(c[1] for c in checks),
            "problems": [c[2] for c in checks if c[2]],
        }

    async def close(self) -> None:
        await asyncio.gather(*(user.close() for user in self.users))
        self.users = []


def _event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def _child(conn: Connection, app_url: str, upstream_url: str, tokens: int) -> None:
    """A load-generator process: runs the commands the parent sends, one at a time."""
    loop = _event_loop()
    worker = LoadWorker(app_url, upstream_url, tokens)
    while True:
        command, args = conn.recv()
        if command == "quit":
            break
        conn.send(loop.run_until_complete(getattr(worker, command)(*args)))
    loop.run_until_complete(worker.close())
    loop.close()


class Workers(Protocol):
    async def setup(self, users: int, tag: str) -> None: ...
    async def phase(self, kind: str) -> dict[str, Any]: ...
    async def history(self) -> dict[str, Any]: ...
    async def close(self) -> None: ...
    def shutdown(self) -> None: ...


def _merge(parts: list[dict[str, Any]], start_at: float) -> dict[str, Any]:
    return {
        "turns": [turn for part in parts for turn in part["turns"]],
        "wall": max(part["last_end"] for part in parts) - start_at,
        "start_latencies": [x for part in parts for x in part["start_latencies"]],
        "cpu_s": sum(part["cpu_s"] for part in parts),
    }


class LocalWorkers:
    """All users on the parent's own event loop."""

    def __init__(self, app_url: str, upstream_url: str, tokens: int) -> None:
        self.worker = LoadWorker(app_url, upstream_url, tokens)

    async def setup(self, users: int, tag: str) -> None:
        await self.worker.setup(list(range(users)), tag)

    async def phase(self, kind: str) -> dict[str, Any]:
        start_at = time.monotonic() + 0.05
        return _merge([await self.worker.phase(kind, start_at)], start_at)

    async def history(self) -> dict[str, Any]:
        return await self.worker.history()

    async def close(self) -> None:
        await self.worker.close()

    def shutdown(self) -> None:
        pass


class ProcessWorkers:
    """Users split over several processes that start each phase at the same instant."""

    def __init__(self, count: int, app_url: str, upstream_url: str, tokens: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.processes = []
        for _ in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=_child, args=(child, app_url, upstream_url, tokens), daemon=True)
            process.start()
            self.conns.append(parent)
            self.processes.append(process)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid]

    async def _all(self, command: str, args_of: Any) -> list[Any]:
        loop = asyncio.get_running_loop()
        for index, conn in enumerate(self.conns):
            conn.send((command, args_of(index)))
        return list(await asyncio.gather(*(loop.run_in_executor(None, conn.recv) for conn in self.conns)))

    async def setup(self, users: int, tag: str) -> None:
        count = len(self.conns)
        await self._all("setup", lambda i: (list(range(i, users, count)), tag))

    async def phase(self, kind: str) -> dict[str, Any]:
        start_at = time.monotonic() + 0.2
        return _merge(await self._all("phase", lambda i: (kind, start_at)), start_at)

    async def history(self) -> dict[str, Any]:
        parts = await self._all("history", lambda i: ())
        return {
            "missing": sum(p["missing"] for p in parts),
            "duplicated": sum(p["duplicated"] for p in parts),
            "problems": [x for p in parts for x in p["problems"]],
        }

    async def close(self) -> None:
        await self._all("close", lambda i: ())

    def shutdown(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("quit", ()))
            except OSError:
                pass
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


# ---------------------------------------------------------------- numbers


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def phase_summary(result: dict[str, Any], usage: dict[str, Usage]) -> dict[str, Any]:
    turns = result["turns"]
    outcomes = {kind: sum(1 for t in turns if t["outcome"] == kind) for kind in ("ok", "failed", "lost", "wrong")}
    ttfts = [t["ttft"] for t in turns if t["outcome"] == "ok" and t["ttft"] is not None]
    totals = [t["total"] for t in turns if t["outcome"] == "ok" and t["total"] is not None]
    summary: dict[str, Any] = {
        "wall_s": round(result["wall"], 3),
        "turns": len(turns),
        **outcomes,
        "ttft_ms": {f"p{q}": _ms(percentile(ttfts, q / 100)) for q in (50, 95, 99)},
        # turn 1 of every user starts in the same instant (with /chat/start); later turns spread out
        "ttft_p99_ms_by_turn": {
            str(k): _ms(percentile([t["ttft"] for t in turns if t["turn"] == k and t["outcome"] == "ok"
                                    and t["ttft"] is not None], 0.99))
            for k in range(1, TURNS + 1)
        },
        "total_ms": {f"p{q}": _ms(percentile(totals, q / 100)) for q in (50, 99)},
        "loadgen_cpu_s": round(result["cpu_s"], 2),
        "usage": {name: asdict(u) for name, u in usage.items()},
        "problems": sorted({f"{t['outcome']}: {t['detail']}" for t in turns if t["outcome"] != "ok"})[:10],
    }
    if result["start_latencies"]:
        summary["chat_start_ms"] = {
            f"p{q}": _ms(percentile(result["start_latencies"], q / 100)) for q in (50, 99)
        }
    return summary


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def step_block(step: dict[str, Any]) -> str:
    """The table of one N, printed as soon as it is measured."""
    d, a = step["direct"], step["app"]
    walls = step.get("walls_s", {})
    lines = [
        f"N={step['users']} users x {TURNS} turns: app/direct wall ratio {step['ratio']:.2f}"
        f" (fastest of {len(walls.get('app', [1]))} runs each; walls direct {walls.get('direct')}, app {walls.get('app')};"
        f" bad turns in all runs {step.get('bad_turns_all_runs')})",
        f"  {'':7} {'wall s':>7} {'TTFT p50':>9} {'p95':>6} {'p99':>6} {'total p50':>10} {'p99':>6}"
        f" {'ok':>5} {'failed':>6} {'lost':>5} {'wrong':>5}",
    ]
    for name, p in (("direct", d), ("app", a)):
        lines.append(
            f"  {name:7} {p['wall_s']:7.2f} {_fmt(p['ttft_ms']['p50']):>9} {_fmt(p['ttft_ms']['p95']):>6}"
            f" {_fmt(p['ttft_ms']['p99']):>6} {_fmt(p['total_ms']['p50']):>10} {_fmt(p['total_ms']['p99']):>6}"
            f" {p['ok']:>5} {p['failed']:>6} {p['lost']:>5} {p['wrong']:>5}"
        )
    by_turn = lambda p: "/".join(_fmt(p["ttft_p99_ms_by_turn"][str(k)]) for k in range(1, TURNS + 1))  # noqa: E731
    lines.append(f"  TTFT p99 by turn 1/2/3: direct {by_turn(d)} ms, app {by_turn(a)} ms")
    usage = a["usage"]
    history = step["history"]
    lines.append(
        f"  history: {history['missing']} missing, {history['duplicated']} duplicated,"
        f" {len(history['problems'])} other problems"
        + (f"; /chat/start p50 {a['chat_start_ms']['p50']} ms p99 {a['chat_start_ms']['p99']} ms" if "chat_start_ms" in a else "")
    )
    lines.append(
        f"  app: RSS peak {usage['app']['rss_peak_mb']} MB, CPU {usage['app']['cpu_s']} s"
        f" ({a['app_cpu_ms_per_turn']} ms/turn)"
        f" | redis: RSS peak {usage['redis']['rss_peak_mb']} MB, CPU {usage['redis']['cpu_s']} s"
        f" | fake model CPU direct {d['usage']['upstream']['cpu_s']} s, app {usage['upstream']['cpu_s']} s"
        f" | load generator CPU direct {d['loadgen_cpu_s']} s, app {a['loadgen_cpu_s']} s"
    )
    lines.append(
        f"  other work on the machine meanwhile: {d['usage']['others']['cpu_s']} CPU s during direct"
        f" ({d['usage']['others']['cpu_s'] / d['wall_s']:.0%} of a core),"
        f" {usage['others']['cpu_s']} CPU s during app ({usage['others']['cpu_s'] / a['wall_s']:.0%} of a core)"
    )
    for problem in (d["problems"] + a["problems"] + history["problems"])[:5]:
        lines.append(f"  ! {problem}")
    return "\n".join(lines)


def summary_table(steps: list[dict[str, Any]]) -> str:
    """One row per N, in Markdown, for the README."""
    head = (
        "| users | direct s | app s | ratio | TTFT p50/p95/p99 direct ms | TTFT p50/p95/p99 app ms "
        "| total p50/p99 direct ms | total p50/p99 app ms | /chat/start p50/p99 ms | failed | lost | wrong "
        "| not in history once | app RSS peak MB | app CPU s | app CPU ms/turn | Redis RSS MB | Redis CPU s "
        "| other work, % of a core direct/app |"
    )
    rows = [head, "|" + "---:|" * 19]
    for s in steps:
        d, a, h = s["direct"], s["app"], s["history"]
        tri = lambda p: "/".join(_fmt(p["ttft_ms"][k]) for k in ("p50", "p95", "p99"))  # noqa: E731
        duo = lambda p: "/".join(_fmt(p["total_ms"][k]) for k in ("p50", "p99"))  # noqa: E731
        bad = lambda key: d[key] + a[key]  # noqa: E731
        start = "/".join(_fmt(a.get("chat_start_ms", {}).get(k)) for k in ("p50", "p99"))
        others = "/".join(f"{p['usage']['others']['cpu_s'] / p['wall_s']:.0%}" for p in (d, a))
        rows.append(
            f"| {s['users']} | {d['wall_s']:.2f} | {a['wall_s']:.2f} | **{s['ratio']:.2f}** | {tri(d)} | {tri(a)} "
            f"| {duo(d)} | {duo(a)} | {start} | {bad('failed')} | {bad('lost')} | {bad('wrong')} "
            f"| {h['missing'] + h['duplicated'] + len(h['problems'])} "
            f"| {a['usage']['app']['rss_peak_mb']} | {a['usage']['app']['cpu_s']} | {a['app_cpu_ms_per_turn']} "
            f"| {a['usage']['redis']['rss_peak_mb']} | {a['usage']['redis']['cpu_s']} | {others} |"
        )
    return "\n".join(rows)


TARGET_RATIOS = {50: 1.05, 200: 1.20, 500: 1.70}


def targets(steps: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """Issue 10's targets, for the N that were run."""
    found: list[tuple[str, bool]] = []
    by_users = {s["users"]: s for s in steps}
    for users, limit in TARGET_RATIOS.items():
        if users in by_users:
            ratio = by_users[users]["ratio"]
            found.append((f"{users} users: wall ratio {ratio:.2f} <= {limit:.2f}", ratio <= limit))
    if 50 in by_users:
        d, a = by_users[50]["direct"]["ttft_ms"]["p99"], by_users[50]["app"]["ttft_ms"]["p99"]
        if d is not None and a is not None:
            found.append((f"50 users: TTFT p99 app {a:.0f} ms <= direct {d:.0f} + 50 ms", a <= d + 50))
    for s in steps:
        d, a, h = s["direct"], s["app"], s["history"]
        bad = sum(s.get("bad_turns_all_runs", {}).values()) or sum(p[k] for p in (d, a) for k in ("failed", "lost", "wrong"))
        bad += h["missing"] + h["duplicated"] + len(h["problems"])
        found.append((f"{s['users']} users: {bad} failed, lost, wrong or not-once-in-history replies", bad == 0))
    if 500 in by_users:
        rss = by_users[500]["app"]["usage"]["app"]["rss_peak_mb"]
        found.append((f"500 users: app RSS peak {rss} MB <= 200 MB", rss <= 200))
    return found


# ---------------------------------------------------------------- the run


async def run(args: argparse.Namespace, app: App, model: FakeModel, workdir: Path) -> dict[str, Any]:
    sweep = [int(n) for n in args.users.split(",") if n.strip()]
    if args.procs > 1:
        workers: Workers = ProcessWorkers(args.procs, app.url, model.url, args.tokens)
        loadgen_pids = workers.pids
    else:
        workers = LocalWorkers(app.url, model.url, args.tokens)
        loadgen_pids = [os.getpid()]
    watched = {"app": app.pid, "redis": app.redis_pid, "upstream": model.pid}
    watched.update({f"loadgen{i}": pid for i, pid in enumerate(loadgen_pids)})
    watcher = Watcher(watched).start()
    steps: list[dict[str, Any]] = []
    profile: dict[str, Any] | None = None
    try:
        # warm-up: the app's lazily imported code paths and the model's first connection
        await workers.setup(2, "warm" + secrets.token_hex(2))
        await workers.phase("direct")
        await workers.phase("app")
        await workers.close()

        for users in sweep:
            tag = secrets.token_hex(3)
            await workers.setup(users, tag)
            results = {}
            usages = {}
            waited: dict[str, list[float]] = {"direct": [], "app": []}
            runs: dict[str, list[tuple[dict[str, Any], dict[str, Usage]]]] = {"direct": [], "app": []}
            for _ in range(args.repeat):
                for kind in ("direct", "app"):
                    await asyncio.sleep(args.pause)
                    waited[kind].append(round(await asyncio.to_thread(wait_for_quiet, args.quiet_wait), 1))
                    watcher.begin()
                    result = await workers.phase(kind)
                    runs[kind].append((result, watcher.end()))
            # other work on a shared machine only ever adds time: keep each phase's fastest run
            for kind in ("direct", "app"):
                results[kind], usages[kind] = min(runs[kind], key=lambda run: run[0]["wall"])
            history = await workers.history()
            await workers.close()
            step = {
                "users": users,
                "direct": phase_summary(results["direct"], usages["direct"]),
                "app": phase_summary(results["app"], usages["app"]),
                "history": history,
                "waited_for_quiet_s": waited,
                "walls_s": {kind: [round(r["wall"], 3) for r, _ in runs[kind]] for kind in runs},
                "bad_turns_all_runs": {
                    kind: sum(1 for r, _ in runs[kind] for t in r["turns"] if t["outcome"] != "ok") for kind in runs
                },
            }
            step["ratio"] = round(step["app"]["wall_s"] / step["direct"]["wall_s"], 3)
            step["app"]["app_cpu_ms_per_turn"] = round(
                1000 * step["app"]["usage"]["app"]["cpu_s"] / max(1, step["app"]["turns"]), 1
            )
            steps.append(step)
            print(step_block(step), flush=True)
            print(flush=True)

            if args.profile and users == args.profile_users:
                profile = await profile_pass(args, app, workers, users, workdir)
        if args.profile and profile is None:
            profile = await profile_pass(args, app, workers, args.profile_users, workdir)
    finally:
        watcher.stop()
        workers.shutdown()
    return {"steps": steps, "profile": profile, "loadgen_pids": loadgen_pids}


async def profile_pass(args: argparse.Namespace, app: App, workers: Workers, users: int, workdir: Path) -> dict[str, Any]:
    """The app phase of this N once more, under py-spy; its numbers are not in the table."""
    await workers.setup(users, "prof" + secrets.token_hex(2))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folded = RESULTS / f"profile-{users}-{stamp}.folded"
    spy = PySpy(app.pid, folded, rate=args.profile_rate)
    sampling_started = time.monotonic()
    spy.start()
    await asyncio.sleep(1.0)  # py-spy attaches
    result = await workers.phase("app")
    spy.stop()
    seconds = time.monotonic() - sampling_started
    await workers.close()
    bad = sum(1 for t in result["turns"] if t["outcome"] != "ok")
    if not folded.exists():
        print(f"py-spy wrote nothing; see {spy.log}", flush=True)
        return {"users": users, "error": spy.log.read_text(errors="replace")[-2000:]}
    summary = summarize(folded, seconds=seconds, rate=args.profile_rate, repo_root=app.source)
    print(f"profile of the app at {users} users (a repeat of the app phase, wall {result['wall']:.2f} s,"
          f" {bad} bad turns), folded stacks in {folded.relative_to(REPO_ROOT)}:", flush=True)
    print(summary.render(top=args.profile_top), flush=True)
    print(flush=True)
    return {"users": users, "wall_s": round(result["wall"], 3), "bad_turns": bad,
            "folded": str(folded.relative_to(REPO_ROOT)), **summary.as_dict()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default=DEFAULT_SWEEP, help=f"comma-separated sweep (default {DEFAULT_SWEEP})")
    parser.add_argument("--ttft-ms", type=float, default=BENCH_TTFT_MS)
    parser.add_argument("--token-delay-ms", type=float, default=BENCH_TOKEN_DELAY_MS)
    parser.add_argument("--tokens", type=int, default=BENCH_TOKENS)
    parser.add_argument("--procs", type=int, default=1, help="load-generator processes (default 1)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of quiet before each phase")
    parser.add_argument(
        "--repeat", type=int, default=2,
        help="runs of each phase per N (alternating); the table shows each phase's fastest run",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=15.0,
        help="wait up to this many seconds before each phase for other work on the machine to stop",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the app during a repeat of one step")
    parser.add_argument("--profile-users", type=int, default=200)
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--profile-top", type=int, default=20)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra app setting")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    parser.add_argument("--rev", help="run the app as committed at this git revision (default: the work tree)")
    parser.add_argument("--output", type=Path, help="JSON path (default bench/results/load-<timestamp>.json)")
    args = parser.parse_args()

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output = args.output or RESULTS / f"load-{stamp}.json"
    extra_env = dict(item.split("=", 1) for item in args.env)
    revision = git_revision(args.rev)  # once: HEAD may move while the benchmark runs
    with Workdir("load", keep=args.keep) as workdir:
        model = FakeModel(args.ttft_ms, args.token_delay_ms, args.tokens, workdir).start()
        try:
            source = export_revision(revision, workdir / "src") if args.rev else REPO_ROOT
            app = App(model.url, workdir, env=extra_env, source=source).start()
        except Exception:
            model.stop()
            raise
        print(
            f"app {app.url} (pid {app.pid}, redis pid {app.redis_pid}), fake model {model.url} (pid {model.pid}):"
            f" ttft {args.ttft_ms:g} ms, {args.token_delay_ms:g} ms/token, {args.tokens} tokens;"
            f" {args.procs} load-generator process(es); app code {revision}; work dir {workdir}",
            flush=True,
        )
        print(flush=True)
        try:
            loop_run = _runner()
            outcome = loop_run(run(args, app, model, workdir))
        finally:
            app.stop()
            model.stop()
        app_errors = [line for line in app.log_tail(2000).splitlines() if " ERROR " in line or "Traceback" in line]

    steps = outcome["steps"]
    report = {
        "benchmark": "load",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "revision": revision,
        "machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
        "config": {
            "users": args.users, "turns": TURNS, "ttft_ms": args.ttft_ms, "token_delay_ms": args.token_delay_ms,
            "tokens": args.tokens, "loadgen_procs": args.procs, "app_env": extra_env,
        },
        "steps": steps,
        "targets": [{"target": text, "met": met} for text, met in targets(steps)],
        "profile": outcome["profile"],
        "app_log_errors": app_errors[:20],
    }
    output.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(summary_table(steps))
    print()
    for text, met in targets(steps):
        print(f"  [{'met' if met else 'MISSED'}] {text}")
    if app_errors:
        print(f"\napp log has {len(app_errors)} error lines, e.g. {app_errors[0][:200]}")
    print(f"\nresults: {output.relative_to(REPO_ROOT) if output.is_relative_to(REPO_ROOT) else output}")
    return 0


def _runner() -> Any:
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run


if __name__ == "__main__":
    sys.exit(main())
