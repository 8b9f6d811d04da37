"""The file decoder's worker processes (real processes): a worker that dies or hangs is replaced, the job
that did it refused, and a job that shared the pool with it still answered; the workers run below the
server's CPU priority; a refusal crosses from the worker with its class and parameters."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import pid_alive, wait_until
from webapp.base.errors import UnreadableAttachment
from webapp.core.decoding import NICENESS, Decoder, DecoderCrashed, decode


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_job_runs_in_a_worker_process_below_the_servers_priority():
    async def scenario():
        decoder = Decoder(workers=1)
        try:
            pid = await decoder.call(os.getpid)
            niceness = await decoder.call(os.nice, 0)
        finally:
            decoder.close()
        return pid, niceness

    pid, niceness = run(scenario())
    assert pid != os.getpid()
    assert niceness == min(19, os.nice(0) + NICENESS)


def test_a_refusal_crosses_from_the_worker_with_its_class_and_name():
    async def scenario():
        decoder = Decoder(workers=1)
        try:
            return await decoder.call(decode, "pdf", "broken.pdf", b"%PDF-1.4 not really", 1000, 10**6)
        finally:
            decoder.close()

    with pytest.raises(UnreadableAttachment) as refused:
        run(scenario())
    assert refused.value.params == {"name": "broken.pdf"}


def test_a_job_that_kills_its_worker_is_refused_and_the_next_job_runs():
    async def scenario():
        decoder = Decoder(workers=1)
        try:
            with pytest.raises(DecoderCrashed):
                await decoder.call(os._exit, 3)
            return await decoder.call(pow, 2, 10)
        finally:
            decoder.close()

    assert run(scenario()) == 1024


def test_a_job_sharing_the_pool_with_a_crash_still_gets_its_answer():
    async def scenario():
        decoder = Decoder(workers=2)
        try:
            await decoder.call(pow, 1, 1)  # (both workers up)
            innocent = asyncio.ensure_future(decoder.call(time.sleep, 0.5))
            await asyncio.sleep(0.1)
            hostile = asyncio.ensure_future(decoder.call(os._exit, 1))
            return await asyncio.gather(innocent, hostile, return_exceptions=True)
        finally:
            decoder.close()

    innocent, hostile = run(scenario())
    assert innocent is None  # time.sleep's answer, after a second try alone
    assert isinstance(hostile, DecoderCrashed)


def test_a_job_over_the_timeout_is_stopped_and_the_decoder_goes_on():
    async def scenario():
        decoder = Decoder(workers=1, timeout=0.5)
        try:
            await decoder.call(pow, 1, 1)
            pid = await decoder.call(os.getpid)
            started = time.monotonic()
            with pytest.raises(DecoderCrashed):
                await decoder.call(time.sleep, 30)
            stopped_in = time.monotonic() - started
            await asyncio.sleep(0.2)
            return pid, stopped_in, await decoder.call(pow, 3, 3)
        finally:
            decoder.close()

    pid, stopped_in, answer = run(scenario())
    assert stopped_in < 5 and answer == 27
    wait_until(lambda: not pid_alive(pid))  # the hung worker was killed, not left to run


SERVER = """
import asyncio, os, sys, time
from webapp.core.decoding import Decoder

async def main():
    decoder = Decoder(workers=1)
    print(await decoder.call(os.getpid), flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_a_killed_servers_worker_goes_with_it():
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(server.stdout.readline())
        server.send_signal(signal.SIGKILL)
        server.wait()
        wait_until(lambda: not pid_alive(worker))  # (SIGTERM from the kernel when the server died)
    finally:
        server.kill()


def test_a_pool_is_recycled_after_its_jobs_even_when_they_overlap(monkeypatch):
    import webapp.core.decoding as decoding

    monkeypatch.setattr(decoding, "TASKS_PER_WORKER", 3)

    async def scenario():
        decoder = Decoder(workers=1)
        try:
            pids = []
            for _ in range(3):  # overlapping jobs (Python 3.11's max_tasks_per_child can then lose its worker)
                pids += await asyncio.gather(*(decoder.call(os.getpid) for _ in range(3)))
            return pids, len(decoder.pools)
        finally:
            decoder.close()

    pids, pools = run(scenario())
    assert len(set(pids)) == 3 and pools <= 1  # a fresh worker for each round of three


def test_closing_stops_a_busy_worker():
    async def scenario():
        decoder = Decoder(workers=1)
        pid = await decoder.call(os.getpid)
        busy = asyncio.ensure_future(decoder.call(time.sleep, 30))
        await asyncio.sleep(0.3)
        decoder.close()
        outcome = await asyncio.gather(busy, return_exceptions=True)
        return pid, outcome

    pid, outcome = run(scenario())
    wait_until(lambda: not pid_alive(pid))
    assert isinstance(outcome[0], Exception)


def test_a_cancelled_upload_keeps_its_place_until_its_decoding_ends():
    from tests.files import noisy_jpeg
    from webapp.core.attachments import prepare

    photo = noisy_jpeg(2400, 1800)

    async def read() -> bytes:
        return photo

    async def scenario():
        decoder, gate = Decoder(workers=1), asyncio.Semaphore(1)
        try:
            upload = asyncio.ensure_future(prepare("p.jpg", read, text_chars=1000, max_pixels=50_000_000,
                                                   max_bytes=10**8, gate=gate, decoder=decoder))
            await asyncio.sleep(0.05)  # (the job has started: the first call starts the worker, ~0.1 s and more)
            upload.cancel()
            await asyncio.gather(upload, return_exceptions=True)
            held_after_cancel = gate.locked()
            for _ in range(300):
                if not gate.locked():
                    break
                await asyncio.sleep(0.05)
            return held_after_cancel, gate.locked()
        finally:
            decoder.close()

    held_after_cancel, held_at_end = run(scenario())
    assert held_after_cancel and not held_at_end
