"""The processes under test: the fake model and the app, started as a user starts them, and watched through /proc.

Both run in their own processes so that the load generator, the app and the model
each show up separately in CPU time and memory. The app is `python -m webapp` with a
fresh DATA_DIR, so it starts its own embedded redis-server, exactly as in the README.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TypeVar
from pathlib import Path

from webapp.base.processes import stop_process

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "bench" / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def results_file(name: str, given: Path | None = None) -> Path:
    """Where a benchmark writes its JSON: `given` (its --output), else bench/results/<name>-<date-time>.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    return Path(given) if given else RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def git_revision(rev: str | None = None) -> str:
    """The code the numbers belong to: a commit, or HEAD plus `+dirty-<hash of the webapp/ diff>`
    when the app runs from a work tree with uncommitted changes (so two runs can be told apart)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout

    try:
        if rev:
            return git("rev-parse", "--short", rev).strip()
        head = git("rev-parse", "--short", "HEAD").strip()
        diff = git("diff", "HEAD", "--", "webapp", "templates", "static")
        if not diff:
            return head
        return f"{head}+dirty-{hashlib.sha1(diff.encode()).hexdigest()[:8]}"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def export_revision(rev: str, into: Path) -> Path:
    """The app's files as committed at `rev` (git archive), to run that revision and not the work tree."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=REPO_ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


# ---------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def syscalls(pid: int) -> int:
    """Read and write system calls of a process so far (/proc/<pid>/io: syscr + syscw). Each socket
    send or receive is one; where system calls are dear (a sandboxed kernel), they are much of a
    turn's CPU, and the count does not move with the machine's other work as CPU time does."""
    try:
        fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        return int(fields["syscr"]) + int(fields["syscw"])
    except (OSError, KeyError, ValueError):
        return 0


def machine_busy_seconds() -> float:
    """CPU time all cores spent not idle since boot (from /proc/stat), in seconds."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def wait_for_quiet(max_wait: float, threshold: float = 0.3, window: float = 1.0) -> float:
    """Wait until the machine's CPU use (all processes; ours are idle here) stays below
    `threshold` cores for `window` seconds, or `max_wait` passes. Returns seconds waited."""
    started = time.monotonic()
    while True:
        before = machine_busy_seconds()
        time.sleep(window)
        if (machine_busy_seconds() - before) / window < threshold:
            return time.monotonic() - started
        if time.monotonic() - started > max_wait:
            return time.monotonic() - started


@dataclass
class Usage:
    """What one process used during a window: CPU seconds and peak RSS sampled from /proc."""

    cpu_s: float
    rss_peak_mb: float
    rss_end_mb: float
    syscalls: int = 0  # read and write system calls (syscalls())


class Watcher:
    """Samples the RSS of named processes every few ms in a thread; reports per window.

    A thread, not a task: it keeps sampling while the load generator's event loop is busy.
    """

    def __init__(self, pids: dict[str, int | list[int]], interval: float = 0.05) -> None:
        # a name may stand for several processes (two app hosts, three cluster nodes): summed
        self.pids = {name: pid if isinstance(pid, list) else [pid] for name, pid in pids.items()}
        self.interval = interval
        self._peaks = {name: 0 for name in self.pids}
        self._cpu_start = {name: 0.0 for name in self.pids}
        self._calls_start = {name: 0 for name in self.pids}
        self._machine_start = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-watcher", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    @staticmethod
    def _rss(pids: list[int]) -> int:
        return sum(rss_bytes(pid) for pid in pids)

    @staticmethod
    def _cpu(pids: list[int]) -> float:
        return sum(cpu_seconds(pid) for pid in pids)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                for name, pids in self.pids.items():
                    self._peaks[name] = max(self._peaks[name], self._rss(pids))

    def begin(self) -> None:
        """Start a measuring window: peaks reset to the current RSS, CPU counted from now."""
        with self._lock:
            self._machine_start = machine_busy_seconds()
            for name, pids in self.pids.items():
                self._peaks[name] = self._rss(pids)
                self._cpu_start[name] = self._cpu(pids)
                self._calls_start[name] = sum(syscalls(pid) for pid in pids)

    def end(self) -> dict[str, Usage]:
        """Usage per named process (or group), plus `others`: CPU the rest of the machine used meanwhile
        (other people's work on a shared machine; it moves the numbers)."""
        with self._lock:
            usage = {}
            for name, pids in self.pids.items():
                now = self._rss(pids)
                peak = max(self._peaks[name], now)
                usage[name] = Usage(
                    cpu_s=round(self._cpu(pids) - self._cpu_start[name], 2),
                    rss_peak_mb=round(peak / 2**20, 1),
                    rss_end_mb=round(now / 2**20, 1),
                    syscalls=sum(syscalls(pid) for pid in pids) - self._calls_start[name],
                )
            ours = sum(u.cpu_s for u in usage.values())
            others = max(0.0, machine_busy_seconds() - self._machine_start - ours)
            usage["others"] = Usage(cpu_s=round(others, 2), rss_peak_mb=0.0, rss_end_mb=0.0)
            return usage


# ---------------------------------------------------------------- processes


def _wait_http(url: str, timeout: float, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except OSError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {process.returncode}; log:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout} s; log:\n{_tail(log)}")
        time.sleep(0.05)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"




class Served:
    """A server of the benchmark's own (the fake model, the relay) in its own process, on a free port."""

    port: int
    process: subprocess.Popen[bytes] | None
    workdir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def launch(self, module: str, args: list[str], health: str) -> None:
        log = self.workdir / f"{module.rpartition('.')[2]}.log"
        self.process = subprocess.Popen([sys.executable, "-m", module, "--port", str(self.port), *args],
                                        cwd=REPO_ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        _wait_http(f"{self.url}{health}", 20, self.process, log)

    def stop(self) -> None:
        stop_process(self.process, timeout=20)


@dataclass
class FakeModel(Served):
    """bench/fake_upstream.py in its own process."""

    ttft_ms: float
    token_delay_ms: float
    tokens: int
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> FakeModel:
        self.launch("bench.fake_upstream", ["--ttft-ms", str(self.ttft_ms), "--token-delay-ms", str(self.token_delay_ms),
                                            "--tokens", str(self.tokens)], "/_requests")
        return self


@dataclass
class Relay(Served):
    """bench/relay.py in its own process: the server that stores nothing, in front of the same model."""

    upstream_url: str
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Relay:
        self.launch("bench.relay", ["--upstream", f"{self.upstream_url}/v1"], "/healthz")
        return self


@dataclass
class DurableFloor(Served):
    """bench/durable_floor.py in its own process, with its own redis-server: the least a server that keeps
    every conversation in Redis does per turn, in front of the same model."""

    upstream_url: str
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.workdir / "floor"

    @property
    def redis_socket(self) -> Path:
        return self.data_dir / "redis" / "redis.sock"  # (webapp.__main__.EmbeddedRedis's layout)

    @property
    def redis_pid(self) -> int:
        return int((self.data_dir / "redis" / "redis.pid").read_text().strip())

    def start(self) -> DurableFloor:
        self.launch("bench.durable_floor", ["--upstream", f"{self.upstream_url}/v1", "--data-dir", str(self.data_dir)],
                    "/healthz")
        return self


@dataclass
class App:
    """`python -m webapp` with a fresh DATA_DIR (so an embedded redis-server), one worker."""

    upstream_url: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    source: Path = REPO_ROOT  # where `python -m webapp` runs: the work tree, or an exported revision
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    redis_pid: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def redis_socket(self) -> Path:
        return self.data_dir / "redis" / "redis.sock"

    @property
    def log_path(self) -> Path:
        return self.workdir / "app.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> App:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "REDIS_"))}
        env.update(
            {
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "DATA_DIR": str(self.data_dir),
                "WEB_CONCURRENCY": "1",
                "RATE_LIMIT_PER_MINUTE": "0",
                "TURNS_PER_IP_PER_MINUTE": "0",
                "NEW_IDENTITIES_PER_IP_PER_HOUR": "0",
                "OPENAI_API_KEY": "bench",
                "OPENAI_BASE_URL": f"{self.upstream_url}/v1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.env)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "webapp"], cwd=self.source, env=env,
            stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT,
        )
        _wait_http(f"{self.url}/healthz", 30, self.process, self.log_path)
        if self.env.get("REDIS_URL"):  # a Redis of its own making (a cluster, another host's): no pid file
            return self
        pidfile = self.data_dir / "redis" / "redis.pid"
        deadline = time.monotonic() + 10
        while not self.redis_pid:
            try:
                self.redis_pid = int(pidfile.read_text().strip() or 0)
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError("the embedded redis-server wrote no pid file") from None
                time.sleep(0.05)
        return self

    def stop(self) -> None:
        # SIGTERM: the app saves running replies and stops its embedded Redis itself
        stop_process(self.process, timeout=20)
        if self.redis_pid and Path(f"/proc/{self.redis_pid}").exists():
            try:
                os.kill(self.redis_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)


class Workdir:
    """A fresh temporary directory per run (short: the Redis unix socket path is limited)."""

    def __init__(self, label: str, keep: bool = False) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=f"bench-{label}-"))
        self.keep = keep

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)


def on_embedded_redis(name: str, measure: Callable[[str], Awaitable[T]]) -> T:
    """`measure(redis_url)` run against a fresh embedded redis-server in a work dir of its own, stopped after."""
    import asyncio

    from webapp.__main__ import EmbeddedRedis

    with Workdir(name) as workdir:
        server = EmbeddedRedis(workdir / "data")
        server.start()
        try:
            return asyncio.run(measure(server.url))
        finally:
            server.stop()
