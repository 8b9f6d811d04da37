"""CPU per request, one request at a time: what each request of a turn costs the app.

`bench.load` measures the app under many users, where the event loop coalesces work and
what each request costs is hidden in the total. Here one visitor at a time drives the same
two paths as `bench.load` (the web UI as a browser drives it; the seed API), sequentially,
and the app's CPU (/proc/<pid>/stat) is read around each step: a step is one request and
the work it sets off (the reply's generation, its save, the search index, a generated
title), waited for until the app is idle again. The totals over many visitors are divided
by their count, so the clock's 10 ms ticks average out.

    python -m bench.request_cost [--visitors 200] [--rev REV]
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import secrets
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp

from bench.load import CHANNEL_FIELD, COMPOSER_POST, CSRF_META, REQUEST_ID_FIELD, SSE_CONNECT, PageChannel, SSEEvents
from bench.profiling import PySpy
from bench.servers import App, FakeModel, Workdir, cpu_seconds, export_revision, git_revision, results_file

SETTLE_SECONDS = 0.25  # after a reply: its save, the search index write, a generated title
TURNS = 3
IDLE_SECONDS = 5.0


class Meter:
    """Adds the app's CPU over each named step, less what the idle app spends in that time (its
    timers: lease renewals, the follower's wake-ups), measured before."""

    def __init__(self, pid: int, idle_rate: float = 0.0) -> None:
        self.pid = pid
        self.idle_rate = idle_rate
        self.cpu: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)

    async def step(self, name: str, action: Any, settle: float = 0.0) -> Any:
        before, began = cpu_seconds(self.pid), time.perf_counter()
        result = await action
        if settle:
            await asyncio.sleep(settle)
        idle = self.idle_rate * (time.perf_counter() - began)
        self.cpu[name] += cpu_seconds(self.pid) - before - idle
        self.count[name] += 1
        return result

    def per_step_ms(self) -> dict[str, float]:
        return {name: round(1000 * self.cpu[name] / self.count[name], 2) for name in self.cpu}


async def read_sse_to(response: aiohttp.ClientResponse, last: set[str]) -> None:
    reader = SSEEvents()
    async for data in response.content.iter_any():
        for name, payload in reader.feed(data):
            if name in last:
                return
            if name == "message" and b'"type": "end"' in payload or b'"type":"end"' in payload:
                return


async def web_visitor(http: aiohttp.ClientSession, url: str, meter: Meter) -> None:
    http.cookie_jar.clear()

    async def get_page() -> str:
        async with http.get(f"{url}/") as response:
            assert response.status == 200, response.status
            return await response.text()

    page = await meter.step("web: GET / (a new visitor's page)", get_page())
    token = CSRF_META.search(page).group(1)  # type: ignore[union-attr]
    post_path = html.unescape(COMPOSER_POST.search(page).group(1))  # type: ignore[union-attr]
    request_id = REQUEST_ID_FIELD.search(page).group(1)  # type: ignore[union-attr]
    current = f"{url}/"
    channel: PageChannel | None = None  # the conversation page's one stream, from the first send's pane on
    channel_id = ""
    for turn in range(1, TURNS + 1):
        headers = {"HX-Request": "true", "HX-Current-URL": current, "HX-Target": "message-list",
                   "X-CSRF-Token": token}
        form = {"csrf_token": token, "request_id": request_id, "message": f"turn {turn} how do streamed replies work?"}
        if channel_id:
            form["channel"] = channel_id
        label = "first" if turn == 1 else "next"

        async def post() -> tuple[str, str | None]:
            async with http.post(f"{url}{post_path}", data=form, headers=headers) as response:
                assert response.status == 200, (response.status, await response.text())
                return await response.text(), response.headers.get("HX-Push-Url")

        body, pushed = await meter.step(f"web: POST, {label} send", post())
        if pushed:
            current = f"{url}{pushed}"
            post_path = html.unescape(COMPOSER_POST.search(body).group(1))  # type: ignore[union-attr]
            channel_id = CHANNEL_FIELD.search(body).group(1)  # type: ignore[union-attr]

        async def stream() -> None:
            nonlocal channel
            if channel is None:  # the pane: its channel opens and brings this turn from where the pane is
                stream_path = html.unescape(SSE_CONNECT.search(body).group(1))  # type: ignore[union-attr]
                response = await http.get(f"{url}{stream_path}", headers={"Accept": "text/event-stream"})
                assert response.status == 200, response.status
                channel = PageChannel(response)
            while (await channel.next())[0] != "done":
                pass

        await meter.step(f"web: channel to done (+ generation, save), {label} send", stream(), SETTLE_SECONDS)
        request_id = secrets.token_hex(8)
    if channel is not None:
        channel.close()


async def api_visitor(http: aiohttp.ClientSession, url: str, meter: Meter) -> None:
    http.cookie_jar.clear()

    async def start() -> dict[str, str]:
        async with http.post(f"{url}/chat/start") as response:
            assert response.status == 200, response.status
            return await response.json()

    started = await meter.step("API: POST /chat/start", start())
    for turn in range(1, TURNS + 1):
        params = {"user_id": started["user_id"], "session_id": started["session_id"],
                  "message": f"turn {turn} how do streamed replies work?", "role": "assistant"}
        label = "first" if turn == 1 else "next"

        async def stream() -> None:
            async with http.get(f"{url}/chat/stream", params=params) as response:
                assert response.status == 200, response.status
                await read_sse_to(response, set())

        await meter.step(f"API: GET /chat/stream to end (+ generation, save), {label} send", stream(), SETTLE_SECONDS)


async def measure(url: str, pid: int, visitors: int, spy: PySpy | None = None) -> dict[str, Any]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        for _ in range(3):  # warm up: imports on first use, template compilation, connections
            await web_visitor(http, url, Meter(pid))
            await api_visitor(http, url, Meter(pid))
        await asyncio.sleep(1)
        before, began = cpu_seconds(pid), time.perf_counter()
        await asyncio.sleep(IDLE_SECONDS)
        idle_rate = (cpu_seconds(pid) - before) / (time.perf_counter() - began)
        web, api = Meter(pid, idle_rate), Meter(pid, idle_rate)
        if spy is not None:  # (after the warm-up: what every request costs, not what the first ones do)
            spy.start()
            await asyncio.sleep(1)
        for _ in range(visitors):  # alternating, so both see the same machine
            await web_visitor(http, url, web)
            await api_visitor(http, url, api)
    per_web, per_api = web.per_step_ms(), api.per_step_ms()
    web_turn = sum(web.cpu.values()) * 1000 / (visitors * TURNS)
    api_turn = sum(api.cpu.values()) * 1000 / (visitors * TURNS)
    return {"idle_cpu_percent": round(100 * idle_rate, 2), "web_steps_ms": per_web, "api_steps_ms": per_api, "web_turn_ms": round(web_turn, 2),
            "api_turn_ms": round(api_turn, 2), "ratio": round(web_turn / api_turn, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=200)
    parser.add_argument("--rev", default=None, help="run the app as committed at this git revision")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra app setting")
    parser.add_argument("--output", default=None)
    parser.add_argument("--profile", default=None, metavar="FOLDED", help="py-spy the app meanwhile, folded stacks to this file")
    args = parser.parse_args()
    with Workdir("cost") as workdir:
        model = FakeModel(ttft_ms=5, token_delay_ms=1, tokens=50, workdir=workdir).start()
        source = export_revision(args.rev, workdir / "src") if args.rev else Path(__file__).resolve().parent.parent
        app = App(upstream_url=model.url, workdir=workdir,
                  env=dict(item.split("=", 1) for item in args.env), source=source).start()
        spy = PySpy(app.pid, Path(args.profile), rate=500) if args.profile else None
        try:
            result = asyncio.run(measure(app.url, app.pid, args.visitors, spy))
        finally:
            if spy is not None:
                spy.stop()
            app.stop()
            model.stop()
    result.update(revision=git_revision(args.rev), visitors=args.visitors, when=time.strftime("%Y-%m-%d %H:%M:%S"))
    print(f"app code {result['revision']}: app CPU per step, ms (mean of {args.visitors} visitors, one at a time; "
          f"less the idle app's {result['idle_cpu_percent']}% of a core)")
    for name, ms in {**result["web_steps_ms"], **result["api_steps_ms"]}.items():
        print(f"  {ms:7.2f}  {name}")
    print(f"per turn (page or /chat/start shared over {TURNS} turns): web UI {result['web_turn_ms']} ms, "
          f"API {result['api_turn_ms']} ms, ratio {result['ratio']}")
    output = results_file("request-cost", args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
