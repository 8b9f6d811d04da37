"""Model client: the CPU one streamed turn costs in the client to the model, per client design.

The load profile shows the app's turn dominated by its client to the model, so this
measures that client alone, in this process, against the fake model in its own
process: N concurrent streams, 3 rounds, and the process CPU time they cost. The
`app` variant is the app's own `webapp.llm.providers.OpenAIProvider` (one aiohttp session,
SSE lines parsed with orjson); the others are what it was or could be. The app no
longer depends on the openai SDK: the `sdk-*` variants run when it is installed
(`pip install openai`) and are skipped, with a note, when it is not.

    python -m bench.model_client                 # 200 concurrent streams
    python -m bench.model_client --streams 500
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fake_upstream import BENCH_TOKEN_DELAY_MS, BENCH_TOKENS, BENCH_TTFT_MS  # noqa: E402
from bench.load import SSEData, percentile  # noqa: E402
from bench.servers import REPO_ROOT, FakeModel, Workdir, git_revision, results_file  # noqa: E402
from tests.fake_upstream import expected_reply  # noqa: E402
from webapp.config import Settings  # noqa: E402
from webapp.llm.providers import OpenAIProvider  # noqa: E402

SYSTEM = "You are a benchmark."
Stream = Callable[[list[dict[str, str]]], AsyncIterator[str]]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class AppProvider:
    """webapp.llm.providers.OpenAIProvider exactly as the app builds it."""

    name = "app: webapp.llm.providers.OpenAIProvider as in the work tree"

    def __init__(self, base_url: str) -> None:
        settings = Settings(openai_api_key="bench", openai_base_url=f"{base_url}/v1", _env_file=None)
        self.provider = OpenAIProvider(settings)

    def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        return self.provider.stream(messages, role_name="assistant", lang="en")

    async def aclose(self) -> None:
        await self.provider.aclose()


class SdkAiohttp:
    """The openai SDK over its aiohttp transport, with a per-token deadline: the app's provider
    as first written (commit 7d71334), kept here so later app changes can be compared with it."""

    name = "openai SDK, aiohttp transport, asyncio.timeout per token (app at 7d71334)"

    def __init__(self, base_url: str) -> None:
        import httpx2
        from openai import AsyncOpenAI, DefaultAioHttpClient

        timeout = httpx2.Timeout(60.0, connect=10.0)
        self.client = AsyncOpenAI(
            api_key="bench", base_url=f"{base_url}/v1", max_retries=1, timeout=timeout,
            http_client=DefaultAioHttpClient(
                timeout=timeout, limits=httpx2.Limits(max_connections=5000, max_keepalive_connections=1000)
            ),
        )

    async def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        async with asyncio.timeout(60.0) as deadline:
            response = await self.client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=True  # type: ignore[arg-type]
            )
            async for chunk in response:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
                deadline.reschedule(asyncio.get_running_loop().time() + 60.0)

    async def aclose(self) -> None:
        await self.client.close()


class SdkDefault:
    """AsyncOpenAI with its default transport."""

    name = "openai SDK, default transport"

    def __init__(self, base_url: str) -> None:
        from openai import AsyncOpenAI

        self.client = AsyncOpenAI(api_key="bench", base_url=f"{base_url}/v1", max_retries=0)

    async def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        response = await self.client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True  # type: ignore[arg-type]
        )
        async for chunk in response:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    async def aclose(self) -> None:
        await self.client.close()


class RawAiohttp:
    """One aiohttp session, SSE split by hand, each frame parsed with orjson into plain dicts."""

    name = "raw aiohttp + orjson (no SDK)"

    def __init__(self, base_url: str) -> None:
        self.url = f"{base_url}/v1/chat/completions"
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
            headers={"Authorization": "Bearer bench", "Content-Type": "application/json"},
        )

    async def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        body = orjson.dumps({"model": "gpt-4o-mini", "messages": messages, "stream": True})
        async with self.http.post(self.url, data=body) as response:
            response.raise_for_status()
            reader = SSEData()
            async for data in response.content.iter_any():
                for payload in reader.feed(data):
                    if payload == b"[DONE]":
                        return
                    choices = orjson.loads(payload).get("choices")
                    if choices:
                        text = (choices[0].get("delta") or {}).get("content")
                        if text:
                            yield text

    async def aclose(self) -> None:
        await self.http.close()


VARIANTS: dict[str, Callable[[str], Any]] = {
    "app": AppProvider, "sdk-aiohttp": SdkAiohttp, "sdk-default": SdkDefault, "raw-aiohttp": RawAiohttp,
}


async def measure(client: Any, streams: int, rounds: int, tokens: int) -> dict[str, Any]:
    bad = 0
    ttfts: list[float] = []

    async def one(index: int, round_: int) -> None:
        nonlocal bad
        last = f"s{index:04d}-r{round_} please reply"
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": last}]
        started = time.perf_counter()
        parts = []
        try:
            async for text in client.stream(messages):
                if not parts:
                    ttfts.append(time.perf_counter() - started)
                parts.append(text)
        except Exception:
            bad += 1
            return
        if "".join(parts) != expected_reply(1, SYSTEM, last, tokens):
            bad += 1

    await one(0, -1)  # warm-up: imports, first connection
    cpu, wall = _cpu(), time.perf_counter()
    for round_ in range(rounds):
        await asyncio.gather(*(one(i, round_) for i in range(streams)))
    cpu, wall = _cpu() - cpu, time.perf_counter() - wall
    turns = streams * rounds
    return {
        "turns": turns, "bad": bad, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "cpu_ms_per_turn": round(1000 * cpu / turns, 2),
        "cpu_us_per_chunk": round(1e6 * cpu / (turns * tokens), 1),
        "ttft_p99_ms": round(1000 * (percentile(ttfts, 0.99) or 0), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200, help="concurrent streams")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"some of {','.join(VARIANTS)}")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    output = results_file("model-client", args.output)
    try:
        from uvloop import run as run_loop
    except ImportError:
        run_loop = asyncio.run
    rows: dict[str, Any] = {}
    variants = args.variants.split(",")
    if importlib.util.find_spec("openai") is None:
        skipped = [key for key in variants if key.startswith("sdk-")]
        if skipped:
            print(f"skipping {', '.join(skipped)}: the openai SDK is not installed (pip install openai)", flush=True)
        variants = [key for key in variants if key not in skipped]
    with Workdir("client") as workdir:
        model = FakeModel(BENCH_TTFT_MS, BENCH_TOKEN_DELAY_MS, BENCH_TOKENS, workdir).start()
        try:
            for key in variants:

                async def run_variant(key: str = key) -> dict[str, Any]:
                    client = VARIANTS[key](model.url)
                    try:
                        return {"name": client.name, **await measure(client, args.streams, args.rounds, BENCH_TOKENS)}
                    finally:
                        await client.aclose()

                rows[key] = run_loop(run_variant())
                print(f"{key}: {rows[key]}", flush=True)
        finally:
            model.stop()
    print()
    print(f"{args.streams} concurrent streams x {args.rounds} rounds, {BENCH_TOKENS} tokens each; CPU of this process only")
    print("| client to the model | CPU ms/turn | CPU µs/chunk | CPU s | wall s | TTFT p99 ms | bad |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows.values():
        print(f"| {row['name']} | {row['cpu_ms_per_turn']} | {row['cpu_us_per_chunk']} | {row['cpu_s']}"
              f" | {row['wall_s']} | {row['ttft_p99_ms']} | {row['bad']} |")
    report = {
        "benchmark": "model_client", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "revision": git_revision(),
        "machine": {"cpus": os.cpu_count()}, "streams": args.streams, "rounds": args.rounds,
        "tokens": BENCH_TOKENS, "variants": rows,
    }
    output.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nresults: {output.relative_to(REPO_ROOT) if output.is_relative_to(REPO_ROOT) else output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
