"""Stopping what runs beside the app: a child process politely, then firmly (the embedded Redis,
tests, benchmarks); a background task of the app, waiting until it has stopped. A child that dies with
its parent, and a lock one process at a time holds (one app per data directory)."""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Callable


def stop_process(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Ask a child process to stop with `sig`; kill it if it has not after `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task (a follower, the lease keeper, the search indexer) and wait for it."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def dies_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has the child sent SIGTERM when the process that starts it dies, however it
    dies (SIGKILL, the OOM killer), so an embedded server never outlives its app. Linux only (elsewhere
    None: a server left behind is stopped by the app's next start). The signal comes when the *thread*
    that started the child ends: start it from a thread that lives as long as the app."""
    if not sys.platform.startswith("linux"):
        return None
    return partial(_die_with, _prctl(), os.getpid())  # (prctl looked up here: the child only calls it)


def die_with(parent: int) -> None:
    """The same, called in a child already running Python (a `spawn`ed worker: core/decoding.py), `parent`
    being the pid its parent read before starting it. Linux only."""
    if sys.platform.startswith("linux"):
        _die_with(_prctl(), parent)


def _prctl() -> Callable[..., int]:
    return ctypes.CDLL(None, use_errno=True).prctl


def _die_with(prctl: Callable[..., int], parent: int) -> None:
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above: nobody would send it
        os._exit(1)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


class DirectoryLock:
    """An exclusive lock on `path` (flock) held while the process lives: the kernel lets it go when the
    process ends, however it ends. The file holds the holder's pid, for the message of the one refused."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> int | None:
        """Take the lock: None when taken, else the pid that holds it (0 when unknown). Refused, it
        changes nothing: the file exists already and is only read."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = int(os.read(fd, 32).decode(errors="replace").strip() or 0)
            except ValueError:
                holder = 0
            os.close(fd)
            return holder
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # (the file stays: removing it would race with a start taking it)
            self.fd = None
