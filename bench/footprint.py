"""What a first run costs: install size, start-up time, idle memory.

    python -m bench.footprint [--runs 5] [--python PATH] [--keep]

1. **install size**: `pip install -r requirements.txt` into a new virtual environment; the size of
   that environment on disk (as `du` counts it, pip itself included), and its largest packages.
2. **start to ready**: `python -m webapp` as a first-time user runs it (fresh `DATA_DIR`, so the
   embedded redis-server starts too; no model key, so the demo model), timed from the process
   start to the first `200` from `/readyz`. The median of `--runs` starts.
3. **idle memory**: the app process's RSS after it answered `/readyz` and rendered `/` once, then
   sat idle for two seconds (the embedded redis-server, a separate process, is shown beside it).

Start-up and memory use the new environment's Python, so they see exactly what was installed;
`--python` reuses an existing one instead of installing (no size then).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import REPO_ROOT, Workdir, free_port, git_revision, results_file, rss_bytes  # noqa: E402
from webapp.base.processes import stop_process  # noqa: E402

TARGETS = {"install_mb": 150.0, "ready_s": 2.0, "idle_rss_mb": 100.0}
MB = 2**20


def disk_usage(path: Path) -> int:
    """Bytes on disk under `path`, counted like `du` (allocated blocks, each file once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            stat = os.lstat(os.path.join(root, name))
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_blocks * 512
    return total


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python*/site-packages"))


def install(workdir: Path) -> tuple[Path, dict[str, Any]]:
    """A new virtual environment with requirements.txt installed; its size and largest packages."""
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    empty = disk_usage(venv)
    started = time.monotonic()
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(REPO_ROOT / "requirements.txt")],
        check=True,
    )
    seconds = time.monotonic() - started
    packages: dict[str, int] = {}
    for entry in site_packages(venv).iterdir():
        name = entry.name.split("-")[0].removesuffix(".py").lower()  # a package and its .dist-info together
        size = disk_usage(entry) if entry.is_dir() else entry.lstat().st_blocks * 512
        packages[name] = packages.get(name, 0) + size
    largest = sorted(packages.items(), key=lambda item: -item[1])[:8]
    return venv, {
        "install_mb": round(disk_usage(venv) / MB, 1),
        "empty_venv_mb": round(empty / MB, 1),
        "install_seconds": round(seconds, 1),
        "largest": {name: round(size / MB, 1) for name, size in largest},
    }


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_once(python: str, workdir: Path, measure_memory: bool) -> dict[str, Any]:
    """One first-time start: seconds to a 200 from /readyz, and optionally the idle RSS after it."""
    port = free_port()
    data_dir = workdir / f"data-{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "REDIS_"))}
    env.update({"HOST": "127.0.0.1", "PORT": str(port), "DATA_DIR": str(data_dir), "WEB_CONCURRENCY": "1"})
    log = workdir / f"app-{port}.log"
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    process = subprocess.Popen(
        [python, "-m", "webapp"], cwd=REPO_ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    try:
        while not answers(f"{url}/readyz"):
            if process.poll() is not None:
                raise RuntimeError(f"the app exited with {process.returncode}:\n{log.read_text(errors='replace')}")
            if time.monotonic() - started > 60:
                raise RuntimeError(f"/readyz did not answer within 60 s:\n{log.read_text(errors='replace')}")
            time.sleep(0.01)
        result: dict[str, Any] = {"ready_s": round(time.monotonic() - started, 3)}
        if measure_memory:
            answers(f"{url}/")  # one page rendered: templates compiled, lazy imports done
            time.sleep(2)
            redis_pid = int((data_dir / "redis" / "redis.pid").read_text().strip())
            result["idle_rss_mb"] = round(rss_bytes(process.pid) / MB, 1)
            result["redis_rss_mb"] = round(rss_bytes(redis_pid) / MB, 1)
        return result
    finally:
        stop_process(process, timeout=20)


def import_seconds(python: str) -> float:
    """How long importing the app takes on its own (the largest part of a start)."""
    code = "import time; t = time.perf_counter(); import webapp.main; print(time.perf_counter() - t)"
    out = subprocess.run([python, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return round(float(out.strip()), 3)


def verdict(name: str, value: float) -> str:
    return "ok" if value < TARGETS[name] else f"OVER (target < {TARGETS[name]:g})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="starts to time (the median is reported)")
    parser.add_argument("--python", help="an existing environment's python: skip the install (and its size)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (venv, logs, data)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    revision = git_revision()
    results: dict[str, Any] = {"revision": revision, "targets": TARGETS}
    with Workdir("footprint", keep=args.keep) as workdir:
        if args.python:
            python = args.python
        else:
            print("installing requirements.txt into a new virtual environment...", flush=True)
            venv, size = install(workdir)
            python = str(venv / "bin" / "python")
            results.update(size)
        results["import_s"] = import_seconds(python)
        starts = [start_once(python, workdir, measure_memory=(i == args.runs - 1)) for i in range(args.runs)]
        results["ready_s_runs"] = [s["ready_s"] for s in starts]
        results["ready_s"] = round(statistics.median(results["ready_s_runs"]), 3)
        results["idle_rss_mb"] = starts[-1]["idle_rss_mb"]
        results["redis_rss_mb"] = starts[-1]["redis_rss_mb"]

    print(f"\nfootprint at {revision}")
    if "install_mb" in results:
        print(f"  install size       {results['install_mb']:7.1f} MB   {verdict('install_mb', results['install_mb'])}"
              f"   (an empty venv: {results['empty_venv_mb']} MB; install took {results['install_seconds']} s)")
        print("    largest: " + ", ".join(f"{name} {mb}" for name, mb in results["largest"].items()))
    print(f"  start to /readyz   {results['ready_s']:7.2f} s    {verdict('ready_s', results['ready_s'])}"
          f"   (runs: {', '.join(f'{s:.2f}' for s in results['ready_s_runs'])}; import webapp.main alone: "
          f"{results['import_s']:.2f} s)")
    print(f"  idle RSS (app)     {results['idle_rss_mb']:7.1f} MB   {verdict('idle_rss_mb', results['idle_rss_mb'])}"
          f"   (embedded redis-server beside it: {results['redis_rss_mb']} MB)")
    output = results_file("footprint", args.output)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {output.relative_to(REPO_ROOT) if output.is_relative_to(REPO_ROOT) else output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
