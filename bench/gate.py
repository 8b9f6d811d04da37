"""The gate for any change to a turn's path: the work tree against a reference revision and the relay.

One sitting: the fake model, the relay that stores nothing (bench/relay.py), the durable floor
(bench/durable_floor.py: the seed API keeping every conversation in Redis, and nothing else), the app
as committed at the reference (default HEAD, so a change before its commit) and the app of the work
tree, each with its own embedded Redis. For each N, every repeat runs direct, relay, the durable
floor, then each path (the seed API, the JSON API, the web UI) on the reference and on the work tree,
one after the other, so a busy moment of the machine falls on both alike. Then it prints the medians,
each path's ratio to the relay and to the durable floor (what the app's features cost beyond keeping
the conversations at all), and pass/fail:

- issue 32: the work tree's seed and JSON APIs over the relay (+3% / +5% / +10% / +10% at
  50 / 200 / 500 / 1000 users; TTFT p99 within the relay's + 50 ms at 50 and 200);
- issue 19: its web UI path within 10% / 10% / 20% of its API path;
- no slower than the reference: each path's median wall within 3% of the reference's (what a change
  may cost without saying so), and app CPU per turn within 10%;
- 0 failed, lost or wrong replies, every reply once in the history.

    python -m bench.gate                       # 50,200,500 users, 3 repeats, against HEAD
    python -m bench.gate --ref origin/main --users 200,500 --repeat 5

Exit status 1 when a check fails: run it before resolving any change that touches the turn path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fake_upstream import BENCH_TOKEN_DELAY_MS, BENCH_TOKENS, BENCH_TTFT_MS  # noqa: E402
from bench.load import (  # noqa: E402
    FLOOR_ENV,
    LABELS,
    PATHS,
    RELAY_ENV,
    RELAY_SLACK,
    RELAY_TTFT_SLACK_MS,
    UI_RATIO_SLACK,
    LocalWorkers,
    RedisCounter,
    _runner,
    measured_phase,
    phase_summary,
)
from bench.servers import (  # noqa: E402
    App, DurableFloor, FakeModel, Relay, Watcher, Workdir, export_revision, git_revision, results_file, wait_for_quiet,
)

SLOWER_SLACK = 1.03  # the work tree's median wall over the reference's
CPU_SLACK = 1.10  # the work tree's app CPU per turn over the reference's


SERVERS = ("direct", "relay", "durable")  # the phases that are not the app's: measured once per repeat
SERVER_PIDS = {"relay": "relay", "durable": "floor"}  # whose CPU a phase's is


async def sitting(args: argparse.Namespace, model: FakeModel, relay: Relay, floor: DurableFloor,
                  apps: dict[str, App]) -> list[dict[str, Any]]:
    paths = [PATHS[p.strip()] for p in args.paths.split(",") if p.strip()]
    pids = {"app_ref": apps["ref"].pid, "app_work": apps["work"].pid, "relay": relay.pid, "floor": floor.pid,
            "floor_redis": floor.redis_pid, "upstream": model.pid,
            "redis": [apps["ref"].redis_pid, apps["work"].redis_pid], "loadgen": os.getpid()}
    watcher = Watcher(pids).start()
    counters = {side: RedisCounter([app], None) for side, app in apps.items()}
    steps = []
    try:
        workers = {side: LocalWorkers(app.url, model.url, args.tokens) for side, app in apps.items()}
        for side in workers:  # warm-up: lazily imported paths, first connections
            await workers[side].setup(2, "warm" + secrets.token_hex(2))
            for kind in (*SERVERS, *paths):
                await workers[side].phase(kind)
            await workers[side].close()
        for users in [int(n) for n in args.users.split(",") if n.strip()]:
            tag = secrets.token_hex(3)
            for side in workers:
                await workers[side].setup(users, tag + side[0])
            runs: dict[str, list[dict[str, Any]]] = {}
            order = [(kind, "ref") for kind in SERVERS] + [(kind, side) for kind in paths for side in ("ref", "work")]
            for _ in range(args.repeat):
                for kind, side in order:
                    await asyncio.sleep(args.pause)
                    await asyncio.to_thread(wait_for_quiet, args.quiet_wait)
                    result, usage = await measured_phase(workers[side], kind, watcher, counters[side])
                    summary = phase_summary(result, usage)
                    server = usage[SERVER_PIDS.get(kind, "relay") if kind in SERVERS else f"app_{side}"]
                    summary["cpu_ms_per_turn"] = round(1000 * server.cpu_s / max(1, summary["turns"]), 2)
                    summary["syscalls_per_turn"] = round(server.syscalls / max(1, summary["turns"]), 1)
                    runs.setdefault(kind if kind in SERVERS else f"{kind}/{side}", []).append(summary)
            histories = {side: await workers[side].history() for side in workers}
            for side in workers:
                await workers[side].close()
            step = {"users": users, "runs": runs, "history": histories}
            steps.append(step)
            print(render_step(step, paths), flush=True)
    finally:
        watcher.stop()
    return steps


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def p99(runs: list[dict[str, Any]]) -> float:
    return statistics.median(run["ttft_ms"]["p99"] or 0 for run in runs)


def render_step(step: dict[str, Any], paths: list[str]) -> str:
    runs = step["runs"]
    relay, floor = median(runs["relay"], "wall_s"), median(runs["durable"], "wall_s")
    d = runs["durable"]
    lines = [f"N={step['users']}: median walls (s) direct {median(runs['direct'], 'wall_s'):.2f},"
             f" relay {relay:.2f} ({median(runs['relay'], 'cpu_ms_per_turn'):.2f} ms CPU,"
             f" {median(runs['relay'], 'syscalls_per_turn'):.0f} system calls per turn)",
             f"  durable floor  wall {floor:.2f} s, over relay {floor / relay:.3f}, TTFT p99 {p99(d):.0f} ms,"
             f" CPU {median(d, 'cpu_ms_per_turn'):.2f} ms/turn, /chat/start p50 {_start_p50(d)} ms,"
             f" bad {sum(x['failed'] + x['lost'] + x['wrong'] for x in d)}"]
    for kind in paths:
        for side in ("ref", "work"):
            r = runs[f"{kind}/{side}"]
            lines.append(
                f"  {LABELS[kind]:8} {side:4}  wall {median(r, 'wall_s'):.2f} s, over relay {median(r, 'wall_s') / relay:.3f}"
                f" (over the durable floor {median(r, 'wall_s') / floor:.3f}),"
                f" TTFT p99 {p99(r):.0f} ms (relay {p99(runs['relay']):.0f}), app CPU {median(r, 'cpu_ms_per_turn'):.2f} ms/turn,"
                f" {median(r, 'syscalls_per_turn'):.0f} system calls/turn,"
                f" Redis {r[-1].get('redis_commands_per_turn', '?')} commands / {r[-1].get('redis_round_trips_per_turn', '?')}"
                f" round trips per turn, bad {sum(x['failed'] + x['lost'] + x['wrong'] for x in r)}")
    return "\n".join(lines)


def _start_p50(runs: list[dict[str, Any]]) -> str:
    starts = [run["chat_start_ms"]["p50"] for run in runs if run.get("chat_start_ms")]
    return f"{statistics.median(starts):.0f}" if starts else "-"


def checks(steps: list[dict[str, Any]], paths: list[str]) -> list[tuple[str, bool]]:
    found: list[tuple[str, bool]] = []
    for step in steps:
        users, runs = step["users"], step["runs"]
        relay = median(runs["relay"], "wall_s")
        for kind in paths:
            work, ref = runs[f"{kind}/work"], runs[f"{kind}/ref"]
            wall = median(work, "wall_s")
            if kind in ("app", "json") and users in RELAY_SLACK:
                found.append((f"{users} users: {LABELS[kind]} over the relay {wall / relay:.3f} <= {RELAY_SLACK[users]}",
                              wall / relay <= RELAY_SLACK[users]))
                if users in RELAY_TTFT_SLACK_MS:
                    slack = RELAY_TTFT_SLACK_MS[users]
                    found.append((f"{users} users: {LABELS[kind]} TTFT p99 {p99(work):.0f} ms <= relay"
                                  f" {p99(runs['relay']):.0f} + {slack} ms", p99(work) <= p99(runs["relay"]) + slack))
            if kind == "ui" and "app" in paths and users in UI_RATIO_SLACK:
                api = median(runs["app/work"], "wall_s")
                found.append((f"{users} users: web UI wall {wall:.2f} s <= API {api:.2f} s x {UI_RATIO_SLACK[users]}",
                              wall <= api * UI_RATIO_SLACK[users]))
            found.append((f"{users} users: {LABELS[kind]} wall {wall:.2f} s <= reference {median(ref, 'wall_s'):.2f} s"
                          f" x {SLOWER_SLACK}", wall <= median(ref, "wall_s") * SLOWER_SLACK))
            cpu, ref_cpu = median(work, "cpu_ms_per_turn"), median(ref, "cpu_ms_per_turn")
            found.append((f"{users} users: {LABELS[kind]} app CPU {cpu:.2f} ms/turn <= reference {ref_cpu:.2f} x {CPU_SLACK}",
                          cpu <= ref_cpu * CPU_SLACK))
        bad = sum(run[key] for name, rs in runs.items() if "/work" in name or name in SERVERS
                  for run in rs for key in ("failed", "lost", "wrong"))
        history = step["history"]["work"]
        bad += history["missing"] + history["duplicated"] + len(history["problems"])
        found.append((f"{users} users: {bad} failed, lost, wrong or not-once-in-history replies (work tree)", bad == 0))
        floor = step["history"]["ref"]["floor"]  # (the floor's runs are on the reference's load worker)
        kept = floor["missing"] + floor["duplicated"] + len(floor["problems"])
        found.append((f"{users} users: the durable floor's replies not once in its history: {kept}", kept == 0))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default="HEAD", help="the reference revision (default HEAD)")
    parser.add_argument("--users", default="50,200,500")
    parser.add_argument("--paths", default="api,json,ui")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pause", type=float, default=1.0)
    parser.add_argument("--quiet-wait", type=float, default=15.0)
    parser.add_argument("--tokens", type=int, default=BENCH_TOKENS)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--work-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the work tree's app only (what a setting costs: --ref HEAD --work-env X=0)")
    args = parser.parse_args()
    ref = git_revision(args.ref)
    work = git_revision(None)
    output = results_file("gate", args.output)
    paths = [PATHS[p.strip()] for p in args.paths.split(",") if p.strip()]
    with Workdir("gate") as workdir:
        model = FakeModel(BENCH_TTFT_MS, BENCH_TOKEN_DELAY_MS, args.tokens, workdir).start()
        relay = Relay(model.url, workdir).start()
        os.environ[RELAY_ENV] = relay.url
        floor = DurableFloor(model.url, workdir).start()
        os.environ[FLOOR_ENV] = floor.url
        apps: dict[str, App] = {}
        try:
            for side, source in (("ref", export_revision(ref, workdir / "src")), ("work", None)):
                (workdir / side).mkdir()
                env = {"SECRET_KEY": "gate-" + secrets.token_hex(16)}
                if side == "work":
                    env.update(item.split("=", 1) for item in args.work_env)
                apps[side] = App(model.url, workdir / side, env=env,
                                 **({"source": source} if source else {})).start()
            print(f"gate: work tree {work} against {ref}; relay {relay.url}; fake model {model.url}; work dir {workdir}",
                  flush=True)
            steps = _runner()(sitting(args, model, relay, floor, apps))
        finally:
            for app in apps.values():
                app.stop()
            floor.stop()
            relay.stop()
            model.stop()
    found = checks(steps, paths)
    output.write_text(json.dumps({"benchmark": "gate", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "work": work,
                                  "ref": ref, "steps": steps, "checks": [{"check": c, "passed": ok} for c, ok in found]},
                                 indent=2))
    print()
    for text, ok in found:
        print(f"  [{'pass' if ok else 'FAIL'}] {text}")
    print(f"\n{'PASS' if all(ok for _, ok in found) else 'FAIL'}: {sum(ok for _, ok in found)} of {len(found)} checks;"
          f" results {output}")
    return 0 if all(ok for _, ok in found) else 1


if __name__ == "__main__":
    raise SystemExit(main())
