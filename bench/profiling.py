"""Sampling the app with py-spy while it serves load, and reading the samples.

py-spy runs out of process, so the app is profiled exactly as it runs. The samples
are folded stacks (one line per distinct stack, root first, with a count); idle
samples (the event loop waiting in epoll) are left out by py-spy, so percentages
below are shares of the time the app was busy.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from webapp.base.processes import stop_process

# the event loop's own frames: inclusive time is counted only below the last of them,
# where it says something about what the app does (every stack has what is above)
_LOOP_FRAMES = (
    "Runner.run", "BaseEventLoop.run_until_complete", "BaseEventLoop.run_forever",
    "BaseEventLoop._run_once", "Handle._run",
)


def ensure_py_spy() -> str:
    """The py-spy executable, installed with pip when missing."""
    found = shutil.which("py-spy")
    if found:
        return found
    print("py-spy is missing: pip install py-spy", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=True)
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found


class PySpy:
    """`py-spy record` attached to a running process until stopped."""

    def __init__(self, pid: int, output: Path, rate: int = 100) -> None:
        self.pid = pid
        self.output = output
        self.rate = rate
        self.process: subprocess.Popen[bytes] | None = None
        self.log = output.with_suffix(".log")

    def start(self) -> None:
        executable = ensure_py_spy()
        self.process = subprocess.Popen(
            [
                executable, "record", "--pid", str(self.pid), "--rate", str(self.rate),
                "--format", "raw", "--function", "--full-filenames", "--threads", "-o", str(self.output),
            ],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        """Ctrl-C makes py-spy write what it sampled."""
        stop_process(self.process, signal.SIGINT, timeout=60)


def _split_frame(frame: str) -> tuple[str, str]:
    """'Class.func (/path/file.py:12)' -> ('Class.func', '/path/file.py')."""
    name, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return (name or frame), path


def package_of(path: str, repo_root: Path) -> str:
    """The top-level package a file belongs to: openai, redis, webapp, asyncio, ..."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    root = str(repo_root) + "/"
    if path.startswith(root):
        return path[len(root):].split("/", 1)[0].removesuffix(".py")
    if "/lib/python3" in path:
        rest = path.split("/lib/python3", 1)[1].split("/", 1)
        return rest[1].split("/", 1)[0].removesuffix(".py") if len(rest) > 1 else path
    return path


def _short(frame: str, repo_root: Path) -> str:
    """A frame with its path cut to the package: 'AsyncStream.__aiter__ (openai/_streaming.py)'."""
    name, path = _split_frame(frame)
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif path.startswith(str(repo_root) + "/"):
        path = path[len(str(repo_root)) + 1 :]
    elif "/lib/python3" in path:
        path = path.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return f"{name} ({path})"


# where the time of a turn goes, as the app's code calls it; a sample counts in every
# bucket whose marker is on its stack (buckets overlap: nested ones are indented)
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("TurnWriter._generate (model call + relay, webapp/turn_writer.py)",
     ("TurnWriter._generate (", "TurnManager._generate (")),
    ("  OpenAIProvider.stream (webapp/llm.py)", ("OpenAIProvider.stream (",)),
    ("    openai SDK, request: AsyncCompletions.create", ("AsyncCompletions.create (",)),
    ("      openai SDK, request body transform (async_transform)", ("async_transform (",)),
    ("    openai SDK, per-chunk model building (_process_response_data/construct_type)",
     ("BaseClient._process_response_data (",)),
    ("    openai SDK, SSE decoding (SSEDecoder, iter_bytes)", ("SSEDecoder.", "_SSELineDecoder.", "iter_bytes")),

    ("  TurnWriter._finish (save the reply)", ("TurnWriter._finish (", "TurnManager._finish (")),
    ("HTTP client to the model, anywhere (httpx2 + aiohttp)", ("(httpx2/", "(aiohttp/")),
    ("HTTP request handling (uvicorn -> FastAPI -> route)", ("RequestResponseCycle.run_asgi (",)),
    ("  FastAPI dependency solving (solve_dependencies)", ("solve_dependencies (",)),
    ("    sync dependencies run in the thread pool (run_in_threadpool)", ("run_in_threadpool (",)),
    ("  FastAPI telemetry checks (NativeTelemetry.enabled: os.environ per request)", ("NativeTelemetry.",)),
    ("  SSE out: sse-starlette EventSourceResponse", ("(sse_starlette/",)),
    ("    uvicorn writes (RequestResponseCycle.send)", ("RequestResponseCycle.send (",)),
    ("  routes/stream.py json_events + TurnReader.follow", ("json_events (webapp/", "turn_events (webapp/",
                                                           "TurnReader.follow (", "TurnRun.follow (")),
    ("asyncio.timeout anywhere (a per-token deadline; redis-py wraps every read in one)", ("(asyncio/timeouts.py",)),
    ("Redis client, all (redis-py)", ("(redis/",)),
    ("  opening Redis connections (AbstractConnection.connect)", ("AbstractConnection.connect (",)),
    ("  Store.lock_turn + save_turn_start (was begin_turn)",
     ("Store.lock_turn (", "Store.save_turn_start (", "Store.begin_turn (")),
    ("  Store.append_events (EventWriter batches)", ("Store.append_events (",)),
    ("  Store.finish_turn", ("Store.finish_turn (",)),
    ("  Store.create_conversation (/chat/start)", ("Store.create_conversation (",)),
    ("logging (access log, turn log)", ("(logging/",)),
    ("prometheus metrics", ("(prometheus_client/",)),
]


@dataclass
class ProfileSummary:
    samples: int
    seconds: float
    rate: int
    busy: float  # share of wall time the event loop's thread was running (not waiting in epoll)
    other_threads: int = 0  # samples of other threads (thread pools), not in the shares
    self_top: list[tuple[str, float]] = field(default_factory=list)
    inclusive_top: list[tuple[str, float]] = field(default_factory=list)
    packages: list[tuple[str, float]] = field(default_factory=list)
    other_top: list[tuple[str, float]] = field(default_factory=list)
    buckets: list[tuple[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "samples": self.samples, "seconds": round(self.seconds, 2), "rate": self.rate,
            "busy": round(self.busy, 3), "other_thread_samples": self.other_threads,
            "self_top": [[name, round(share, 4)] for name, share in self.self_top],
            "inclusive_top": [[name, round(share, 4)] for name, share in self.inclusive_top],
            "packages": [[name, round(share, 4)] for name, share in self.packages],
            "other_threads_top": [[name, round(share, 4)] for name, share in self.other_top],
            "buckets": [[name, round(share, 4)] for name, share in self.buckets],
        }

    def render(self, top: int = 20) -> str:
        lines = [
            f"py-spy: {self.samples} samples of the event loop's thread in {self.seconds:.1f} s at {self.rate} Hz"
            f" (busy {self.busy:.0%} of the time; idle waits in epoll are not sampled); shares are of those samples",
            "",
            "where the event loop's time goes (inclusive; indented lines are part of the line above):",
        ]
        lines += [f"  {share:6.1%}  {name}" for name, share in self.buckets]
        lines += ["", "self time by package (the leaf frame's package):"]
        lines += [f"  {share:6.1%}  {name}" for name, share in self.packages[:15]]
        lines += ["", "self time, top functions:"]
        lines += [f"  {share:6.1%}  {name}" for name, share in self.self_top[:top]]
        lines += ["", "inclusive time (function on the stack), top functions below the event loop:"]
        lines += [f"  {share:6.1%}  {name}" for name, share in self.inclusive_top[:top]]
        if self.other_threads:
            lines += ["", f"other threads (thread pools; py-spy counts their waits as busy): {self.other_threads}"
                      " samples, left out above; where they are:"]
            lines += [f"  {share:6.1%}  {name}" for name, share in self.other_top[:5]]
        return "\n".join(lines)


def summarize(folded: Path, *, seconds: float, rate: int, repo_root: Path) -> ProfileSummary:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    others: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[0].startswith("thread ("):
            thread = frames.pop(0).split(": ", 1)[-1]
            if thread != "MainThread":  # the event loop runs in the main thread
                others[_short(frames[-1], repo_root) if frames else thread] += count
                continue
        total += count
        leaf = frames[-1]
        self_time[_short(leaf, repo_root)] += count
        packages[package_of(_split_frame(leaf)[1], repo_root)] += count
        loop_levels = [i for i, frame in enumerate(frames[:-1]) if _split_frame(frame)[0] in _LOOP_FRAMES]
        start = loop_levels[-1] + 1 if loop_levels else 0
        shorts = [_short(frame, repo_root) for frame in frames]
        for label, markers in BUCKETS:
            if any(marker in frame for frame in shorts for marker in markers):
                buckets[label] += count
        seen: set[str] = set()
        for frame in frames[start:]:
            short = _short(frame, repo_root)
            if short not in seen:
                seen.add(short)
                inclusive[short] += count
    if not total:
        return ProfileSummary(samples=0, seconds=seconds, rate=rate, busy=0.0)
    share = lambda counter: [(name, n / total) for name, n in counter.most_common(60)]  # noqa: E731
    return ProfileSummary(
        samples=total, seconds=seconds, rate=rate, busy=total / max(1.0, seconds * rate),
        self_top=share(self_time), inclusive_top=share(inclusive), packages=share(packages),
        other_threads=sum(others.values()),
        other_top=[(name, n / sum(others.values())) for name, n in others.most_common(10)],
        buckets=[(label, buckets[label] / total) for label, _ in BUCKETS],
    )
