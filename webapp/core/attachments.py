"""Attachments: what a file is (sniffed from its bytes, never the client's word), what is kept of it, and
what the model is sent.

- Images (PNG, JPEG, WebP, GIF), resized to at most 2048 px; PDF, read as text; text (txt, md, csv, json, source
  code...), by content, whose name may not claim another type. SVG is no image here: it is text, served as a
  download. The decoding runs in worker processes (core/decoding.py), never in the server's.
A document's text beyond ATTACHMENT_TEXT_CHARS is cut; the model is told what was cut, and so is the user.
At most WORKERS files are decoded (and held in memory) at a time per server process (bench/attachments.py).
"""

from __future__ import annotations

import asyncio
import base64
import re
import unicodedata
from typing import Awaitable, Callable

from webapp.base.errors import (
    AttachmentNotFound,
    AttachmentTooLarge,
    EmptyAttachment,
    TooManyAttachments,
    UnreadableAttachment,
    UnsupportedAttachment,
)
from webapp.base.models import Attachment
from webapp.config import Settings
from webapp.core.decoding import WORKERS, Decoder, DecoderCrashed, Prepared, decode, text_encoding
from webapp.core.quota import MB, StorageQuota
from webapp.llm.body import InlineImage
from webapp.storage.store import Store

MAX_NAME = 120
IMAGE_EXTENSIONS = {"png", "jpg", "jpeg", "jfif", "webp", "gif"}
BINARY_EXTENSIONS = IMAGE_EXTENSIONS | {"pdf", "svg", "svgz", "bmp", "tif", "tiff", "heic", "zip", "gz", "exe",
                                        "doc", "docx", "xls", "xlsx", "ppt", "pptx"}
FILE_ID = re.compile(r"f_[0-9a-f]{16}")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")
B64_CHUNK = 3 * 2**18  # bytes base64-decoded per call (a download): each call holds the GIL (~1 ms)


def from_base64(text: str) -> bytes:
    """(In a worker thread.) A stored file's bytes, in slices of whole 4-character groups."""
    step = B64_CHUNK // 3 * 4
    return b"".join(base64.b64decode(text[i:i + step]) for i in range(0, len(text), step))


def clean_name(name: str) -> str:
    """A file name without a path, control characters or bidi tricks, at most MAX_NAME characters."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf"))
    name = _UNSAFE.sub("", name).strip().lstrip(".")
    if len(name) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:MAX_NAME - len(ext) - 1] + dot + ext) if dot and len(ext) <= 10 else name[:MAX_NAME]
    return name or "file"


def extension(name: str) -> str:
    return name.rpartition(".")[2].lower() if "." in name else ""


def sniff(data: bytes) -> str:
    """What the bytes are: image, pdf, text, or "" (none of these)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8\xff") or data[:6] in (b"GIF87a", b"GIF89a") \
            or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return "image"
    if data[:1024].lstrip().startswith(b"%PDF-"):
        return "pdf"
    # text: its first 64 KB (the whole is decoded in a worker, decoding.decode_text)
    return "text" if text_encoding(data[:65536], partial=len(data) > 65536) else ""


async def prepare(name: str, read: Callable[[], Awaitable[bytes]], *, text_chars: int, max_pixels: int,
                  max_bytes: int, gate: asyncio.Semaphore, decoder: Decoder) -> Prepared:
    """A file as it is stored: sniffed, checked against its name, decoded in a worker process. `gate`: how many
    files are read into memory and decoded at a time. The decoding runs in a task of its own that keeps its
    place at the gate until it ends (or its timeout kills it): a caller cancelled meanwhile (its client left)
    cannot free the place while the job still runs, and so cannot pile up jobs and their bytes."""
    name = clean_name(name)
    await gate.acquire()
    try:
        data = await read()
        if not data:
            raise EmptyAttachment(name=name)
        if len(data) > max_bytes:
            raise AttachmentTooLarge(name=name, limit=round(max_bytes / MB, 1))
        kind, ext = sniff(data), extension(name)
        claimed = "image" if ext in IMAGE_EXTENSIONS else "pdf" if ext == "pdf" \
            else "binary" if ext in BINARY_EXTENSIONS else "text"
        if not kind or kind != claimed:
            raise UnsupportedAttachment(name=name)
        job = asyncio.ensure_future(decoder.call(decode, kind, name, data, text_chars, max_pixels))
    except BaseException:
        gate.release()
        raise
    del data
    job.add_done_callback(lambda done: (gate.release(), done.cancelled() or done.exception()))
    try:
        return await asyncio.shield(job)
    except DecoderCrashed:  # (a file that kills or hangs its decoder, even alone)
        raise UnreadableAttachment(name=name) from None


def document_block(attachment: Attachment, text: str) -> str:
    """A document as the model reads it, with what was cut said."""
    notes = []
    if attachment.kept < attachment.chars:
        notes.append(f"only the first {attachment.kept} of {attachment.chars} characters are included")
    if attachment.read < attachment.pages:
        notes.append(f"only pages 1-{attachment.read} of {attachment.pages} were read")
    note = f"\n[{'; '.join(notes)}]" if notes else ""
    return f"\n\n--- file: {attachment.name} ---\n{text}{note}\n--- end of {attachment.name} ---"


def image_part(attachment: Attachment, data_b64: str) -> dict:
    """(The data URL is written into the request's body as the stored base64: llm/body.py.)"""
    return {"type": "image_url", "image_url": {"url": InlineImage(attachment.type, data_b64)}}


def is_vision_model(model: str, vision_models: str) -> bool:
    """Whether `model` takes images: listed in OPENAI_VISION_MODELS (`*`: every model), or the demo model."""
    listed = {name.strip() for name in vision_models.split(",") if name.strip()}
    return model == "demo" or "*" in listed or model in listed


class Uploads:
    """Files a user uploads before sending them with a turn (POST /api/files, or the composer's form): each
    checked (size, type, count, the storage quota), decoded, and kept in the user's uploads for an hour."""

    def __init__(self, store: Store, quota: StorageQuota, settings: Settings) -> None:
        self.store = store
        self.quota = quota
        self.settings = settings
        self.gate = asyncio.Semaphore(WORKERS)
        self.decoder = Decoder()

    def close(self) -> None:
        """(At shutdown.) The decoder's worker processes."""
        self.decoder.close()

    def check_count(self, count: int) -> None:
        if count > self.settings.max_attachments:
            raise TooManyAttachments(limit=self.settings.max_attachments)

    async def upload(self, user_id: str, name: str, size: int, read: Callable[[], Awaitable[bytes]]) -> Attachment:
        """One file (`read` gives its bytes, called only once its turn to be decoded has come, so many waiting
        uploads do not hold theirs in memory). Nothing is stored when it is refused."""
        limit = self.settings.max_attachment_bytes
        if size > limit:
            raise AttachmentTooLarge(name=clean_name(name), limit=round(limit / MB, 1))
        await self.quota.check_room(user_id, adding=size * 4 // 3)
        prepared = await prepare(name, read, text_chars=self.settings.attachment_text_chars,
                                 max_pixels=self.settings.image_max_pixels, max_bytes=limit, gate=self.gate,
                                 decoder=self.decoder)
        await self.store.save_upload(user_id, prepared.attachment, prepared.data_b64, prepared.text)
        await self.store.add_usage(user_id, len(prepared.data_b64) + len(prepared.text))
        return prepared.attachment

    async def uploaded(self, user_id: str, file_id: str) -> Attachment:
        record = await self.store.upload_record(user_id, file_id) if FILE_ID.fullmatch(file_id) else None
        if record is None:
            raise AttachmentNotFound()
        return record

    async def discard(self, user_id: str, file_ids: list[str]) -> None:
        await self.store.drop_uploads(user_id, [f for f in file_ids if FILE_ID.fullmatch(f)])

    async def download(self, user_id: str, session_id: str, file_id: str) -> tuple[Attachment, bytes]:
        """A conversation's file and its bytes (the caller has checked the conversation is the user's, or shared)."""
        found = await self.store.file_for_download(user_id, session_id, file_id) if FILE_ID.fullmatch(file_id) \
            else None
        if found is None:
            raise AttachmentNotFound()
        record, data = found
        return record, await asyncio.to_thread(from_base64, data)
