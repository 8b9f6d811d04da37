"""Decoding a file, in a worker process of its own at a lower CPU priority: an image decoded, resized and
re-encoded, a PDF's text read (pypdf is pure Python), a text file decoded, and the result base64-encoded for
the store. None of it runs in the server's process, so none of it takes the event loop's GIL, and the
scheduler gives the loop's core first: among 200 chatting users, uploads add no long step to the loop
(bench/attachments.py). A worker that crashes or hangs on a hostile file is replaced; the file is refused.

- Images (PNG, JPEG, WebP, GIF) are decoded and resized to at most IMAGE_MAX_SIDE px on the long side; what is
  kept is the resized image (JPEG, or PNG where it has transparency). A JPEG over twice the maximum is decoded
  at a reduced scale (`draft`: 1/2, 1/4 or 1/8, keeping at least 3/4 of the maximum), so a large photo never
  sits in memory at full size: a 12 MP photo comes out at 2000 px, not 2048.
- PDF: its text (pypdf), page by page, until the character budget, PDF_MAX_PAGES or PDF_SECONDS is reached;
  encrypted or corrupt: refused.
- Text: UTF-8, UTF-16 with its BOM, or GB18030 (GBK) that reads as Chinese; kept as UTF-8.

This module imports little (the workers start with it alone): no Redis, no FastAPI.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import io
import logging
import multiprocessing
import os
import secrets
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable

from webapp.base.errors import EmptyAttachment, UnreadableAttachment, UnsupportedAttachment
from webapp.base.models import Attachment
from webapp.base.processes import die_with

log = logging.getLogger(__name__)

IMAGE_MAX_SIDE = 2048
OTHER_MAX_PIXELS = 25_000_000  # a PNG, WebP or GIF larger than this is refused (decoded whole: ~100 MB at most)
PDF_MAX_PAGES = 200  # pages of a PDF read at most
PDF_SECONDS = 15.0  # a PDF's text is read this long at most (then: what was read, the rest said to be cut)
DECODE_SECONDS = 60.0  # a worker still busy with one file after this long is stopped, and the file refused
WORKERS = 1  # worker processes (files decoded at once, per server process: the loop keeps a core to itself)
NICENESS = 10  # the workers' CPU priority below the server's: chat first, uploads with what is left
TASKS_PER_WORKER = 200  # then an idle pool is replaced (what a decoder's heap grew to is given back)
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


@dataclass
class Prepared:
    """A file ready to store: its record, its bytes in base64, a document's text for the model."""

    attachment: Attachment
    data_b64: str
    text: str


def new_file_id() -> str:
    return "f_" + secrets.token_hex(8)


def text_encoding(data: bytes, *, partial: bool = False) -> str:
    """The encoding text is in: UTF-16 with its BOM (Windows Notepad), UTF-8, else GB18030 (GBK, GB2312: a
    Chinese user's older files) when that reads as mostly Chinese text; "" when it is no text."""
    for bom, encoding in ((b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if data.startswith(bom):
            return encoding if _decodes(data[2:], encoding, partial) else ""
    if b"\x00" in data[:8192]:
        return ""
    if _decodes(data, "utf-8", partial):
        return "utf-8"
    if _decodes(data, "gb18030", partial):
        text = codecs.getincrementaldecoder("gb18030")().decode(data, final=False)
        chinese = sum(1 for char in text if "\u4e00" <= char <= "\u9fff" or "\u3000" <= char <= "\u303f")
        if chinese and chinese >= (len(text) - sum(1 for char in text if char.isascii())) * 0.8:
            return "gb18030"
    return ""


def _decodes(data: bytes, encoding: str, partial: bool) -> bool:
    try:
        codecs.getincrementaldecoder(encoding)().decode(data, final=not partial)
    except UnicodeDecodeError:
        return False
    return True


def decode_text(data: bytes) -> str:
    """The text of a text file (the encoding text_encoding finds), without a BOM."""
    encoding = text_encoding(data)
    if not encoding:
        raise UnicodeDecodeError("utf-8", data[:1], 0, 1, "no text encoding")
    return data.decode(encoding).removeprefix("\ufeff")


def _prepare_image(name: str, data: bytes, max_pixels: int) -> Prepared:
    from PIL import Image, ImageOps  # (imported in the worker process, once)

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in IMAGE_TYPES:
                raise UnsupportedAttachment(name=name)
            # (only a JPEG decodes at a reduced scale: another format's pixels are all decoded, 4 bytes each)
            limit = max_pixels if image.format == "JPEG" else min(max_pixels, OTHER_MAX_PIXELS)
            if image.width * image.height > limit:
                raise UnreadableAttachment(name=name)
            longest = max(image.size)
            if longest > IMAGE_MAX_SIDE:  # JPEG: decode at 1/2, 1/4, 1/8 scale where that keeps 3/4 of the maximum
                keep = IMAGE_MAX_SIDE * 3 / 4 / longest
                image.draft("RGB", (max(1, int(image.width * keep)), max(1, int(image.height * keep))))
            ImageOps.exif_transpose(image, in_place=True)
            alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
            mode = "RGBA" if alpha else "RGB"
            frame = image if image.mode == mode else image.convert(mode)
            frame.thumbnail((IMAGE_MAX_SIDE, IMAGE_MAX_SIDE), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            if alpha:
                frame.save(out, "PNG", optimize=False)
            else:
                frame.save(out, "JPEG", quality=85)
            width, height = frame.size
    except (UnsupportedAttachment, UnreadableAttachment):
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError):
        raise UnreadableAttachment(name=name) from None
    stored = out.getvalue()
    stem = name.rpartition(".")[0] or name
    return Prepared(
        Attachment(id=new_file_id(), name=f"{stem}.{'png' if alpha else 'jpg'}", kind="image",
                   type="image/png" if alpha else "image/jpeg", size=len(stored), width=width, height=height),
        to_base64(stored), "")


def _prepare_pdf(name: str, data: bytes, text_chars: int) -> Prepared:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableAttachment(name=name)
        pages = len(reader.pages)
        parts: list[str] = []
        read = used = 0
        deadline = time.monotonic() + PDF_SECONDS
        for page in reader.pages:
            # (a small PDF may hold thousands of pages sharing one costly content stream: the pages read and
            # the time they take are bounded, and what was not read is said, as a cut is)
            if used > text_chars or read >= PDF_MAX_PAGES or time.monotonic() > deadline:
                break
            text = page.extract_text() or ""
            parts.append(text)
            used += len(text) + 2
            read += 1
    except UnreadableAttachment:
        raise
    except (PyPdfError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError,
            NotImplementedError):
        raise UnreadableAttachment(name=name) from None
    text = _clean_text("\n\n".join(parts))
    kept = text[:text_chars]
    return Prepared(
        Attachment(id=new_file_id(), name=name, kind="pdf", type="application/pdf", size=len(data),
                   chars=len(text), kept=len(kept), pages=pages, read=read),
        to_base64(data), kept)


def _prepare_text(name: str, data: bytes, text_chars: int) -> Prepared:
    try:
        text = _clean_text(decode_text(data))
    except UnicodeDecodeError:
        raise UnsupportedAttachment(name=name) from None
    if not text.strip():
        raise EmptyAttachment(name=name)
    kept = text[:text_chars]
    stored = data if data.isascii() else text.encode("utf-8")  # (kept as UTF-8, as it is served)
    return Prepared(
        Attachment(id=new_file_id(), name=name, kind="text", type="text/plain; charset=utf-8", size=len(stored),
                   chars=len(text), kept=len(kept)),
        to_base64(stored), kept)


def _clean_text(text: str) -> str:
    """Text without NULs and lone surrogates (which no store keeps)."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


class DecoderCrashed(Exception):
    """A worker process died on a job, even alone, or took over the decoder's timeout."""


class Decoder:
    """The worker processes (started with the first file, `spawn`ed: a clean interpreter, no copy of the
    server's threads or sockets). `call` runs a function there. A job whose worker died (a pool dies whole) is
    tried once more alone, in a process of its own: a file that crashes its decoder then takes down only its
    own, and a job that shared the pool with it gets its answer. A job over `timeout` seconds is killed. After
    TASKS_PER_WORKER jobs an idle pool is let go and the next job starts a fresh one (what a decoder's heap
    grew to is given back; Python 3.11's own `max_tasks_per_child` can leave a pool with no worker)."""

    def __init__(self, workers: int = WORKERS, timeout: float = DECODE_SECONDS) -> None:
        self.workers = workers
        self.timeout = timeout
        self.pool: ProcessPoolExecutor | None = None
        self.jobs = 0  # jobs given to the current pool
        self.running = 0  # jobs in it now
        self.pools: set[ProcessPoolExecutor] = set()  # every pool alive, one-off ones too (close stops them all)
        self.closed = False

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        if self.closed:
            raise DecoderCrashed()
        if self.pool is None:
            self.pool, self.jobs = self._new_pool(self.workers), 0
        pool = self.pool
        self.jobs += 1
        self.running += 1
        try:
            return await self._run(pool, function, args)
        except BrokenProcessPool:
            if self.closed:  # (stopped at shutdown: nothing is tried again)
                raise DecoderCrashed() from None
            log.warning("a file decoder died: its jobs are tried again, each alone")
            self._drop(pool)
        finally:
            self.running -= 1
            if self.pool is pool and self.jobs >= TASKS_PER_WORKER and not self.running:
                self._drop(pool)
        alone = self._new_pool(1)
        try:
            return await self._run(alone, function, args)
        except BrokenProcessPool:
            raise DecoderCrashed() from None
        finally:
            self._drop(alone)

    async def _run(self, pool: ProcessPoolExecutor, function: Callable[..., Any], args: tuple) -> Any:
        try:
            # (submitted from a thread: a submit may start a worker process, tens of ms the loop would wait)
            future = await asyncio.to_thread(pool.submit, function, *args)
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
        except TimeoutError:
            log.warning("a file decoder took over %.0f s: stopped", self.timeout)
            self._drop(pool, kill=True)  # (the other jobs in it are then tried again alone)
            raise DecoderCrashed() from None

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_started, initargs=(os.getpid(),))
        self.pools.add(pool)
        return pool

    def _drop(self, pool: ProcessPoolExecutor, *, kill: bool = False) -> None:
        if self.pool is pool:
            self.pool = None
        self.pools.discard(pool)
        if kill:  # (the pool's own table of its processes: no public way to stop a busy worker before 3.14)
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """(At shutdown.) Every worker stopped, a busy one too: nothing waits for a decode at exit."""
        self.closed = True
        for pool in list(self.pools):
            self._drop(pool, kill=True)


def _worker_started(server: int) -> None:
    """(In each worker.) Below the server in CPU priority; Ctrl+C is the server's to handle; and sent SIGTERM
    when the server dies, however it dies (`server`: its pid, read before the spawn; a SIGKILLed server's
    workers would otherwise wait on their queue for ever: each holds both ends of its pipes). The signal
    follows the thread that started the worker: a submit's, asyncio's default executor, which lives as long
    as the server's loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "nice"):
        os.nice(NICENESS)
    die_with(server)


def decode(kind: str, name: str, data: bytes, text_chars: int, max_pixels: int) -> Prepared:
    """(In a worker.) A file as it is stored; `kind` is what it was sniffed as."""
    if kind == "image":
        return _prepare_image(name, data, max_pixels)
    if kind == "pdf":
        return _prepare_pdf(name, data, text_chars)
    return _prepare_text(name, data, text_chars)


def to_base64(data: bytes) -> str:
    return base64.b64encode(data).decode()
