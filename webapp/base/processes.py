"""Stopping what runs beside the app: a child process politely, then firmly (the embedded Redis,
tests, benchmarks); a background task of the app, waiting until it has stopped."""

from __future__ import annotations

import asyncio
import signal
import subprocess


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
