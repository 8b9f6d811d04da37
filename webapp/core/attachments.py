"""Attachments: what a file is (sniffed from its bytes, never the client's word), what is kept of it, and
what the model is sent.

- Images (PNG, JPEG, WebP, GIF) are decoded and resized to at most IMAGE_MAX_SIDE px on the long side in a
  worker thread (a 12 MP photo is not sent whole, and the event loop never decodes); what is kept is the
  resized image (JPEG, or PNG where it has transparency). A JPEG over twice the maximum is decoded at a
  reduced scale (`draft`: 1/2, 1/4 or 1/8, keeping at least 3/4 of the maximum), so a large photo never
  sits in memory at full size: a 12 MP photo comes out at 2000 px, not 2048. SVG is no image here: it is text, served as a download.
- PDF: its text (pypdf), page by page, until the character budget is reached; encrypted or corrupt: refused.
- Text (txt, md, csv, json, source code...): UTF-8 that is no image or PDF, by content; its name may not
  claim another type.
A document's text beyond ATTACHMENT_TEXT_CHARS is cut; the model is told what was cut, and so is the user.
At most PROCESSING files are decoded at a time per worker (memory: see bench/attachments.py).
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import io
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass
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
from webapp.core.quota import MB, StorageQuota
from webapp.storage.store import Store

IMAGE_MAX_SIDE = 2048
OTHER_MAX_PIXELS = 25_000_000  # a PNG, WebP or GIF larger than this is refused (decoded whole: ~100 MB at most)
PDF_MAX_PAGES = 200  # pages of a PDF read at most
PDF_SECONDS = 15.0  # a PDF's text is read this long at most (then: what was read, the rest said to be cut)
PROCESSING = 2  # files decoded at once (per worker): bounds the memory of many uploads
MAX_NAME = 120
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
IMAGE_EXTENSIONS = {"png", "jpg", "jpeg", "jfif", "webp", "gif"}
BINARY_EXTENSIONS = IMAGE_EXTENSIONS | {"pdf", "svg", "svgz", "bmp", "tif", "tiff", "heic", "zip", "gz", "exe",
                                        "doc", "docx", "xls", "xlsx", "ppt", "pptx"}
FILE_ID = re.compile(r"f_[0-9a-f]{16}")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


@dataclass
class Prepared:
    """A file ready to store: its record, its bytes in base64, a document's text for the model."""

    attachment: Attachment
    data_b64: str
    text: str


B64_CHUNK = 3 * 2**18  # bytes base64-encoded per call: each call holds the GIL, the event loop waits (~1 ms)


def to_base64(data: bytes) -> str:
    """(In a worker thread.) Base64 in slices, so the event loop's thread gets the GIL between them."""
    return "".join(base64.b64encode(data[i:i + B64_CHUNK]).decode() for i in range(0, len(data), B64_CHUNK))


def from_base64(text: str) -> bytes:
    """(In a worker thread.) The reverse, in slices of whole 4-character groups."""
    step = B64_CHUNK // 3 * 4
    return b"".join(base64.b64decode(text[i:i + step]) for i in range(0, len(text), step))


def new_file_id() -> str:
    return "f_" + secrets.token_hex(8)


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
    # text: its first 64 KB (the whole is decoded in the worker thread, decode_text)
    return "text" if _text_encoding(data[:65536], partial=len(data) > 65536) else ""


def _text_encoding(data: bytes, *, partial: bool = False) -> str:
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
    """The text of a text file (the encoding _text_encoding finds), without a BOM."""
    encoding = _text_encoding(data)
    if not encoding:
        raise UnicodeDecodeError("utf-8", data[:1], 0, 1, "no text encoding")
    return data.decode(encoding).removeprefix("\ufeff")


async def prepare(name: str, read: Callable[[], Awaitable[bytes]], *, text_chars: int, max_pixels: int,
                  max_bytes: int, gate: asyncio.Semaphore) -> Prepared:
    """A file as it is stored: sniffed, checked against its name, decoded in a worker thread (`gate`: how many
    at a time)."""
    name = clean_name(name)
    async with gate:
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
        if kind == "image":
            return await asyncio.to_thread(_prepare_image, name, data, max_pixels)
        if kind == "pdf":
            return await asyncio.to_thread(_prepare_pdf, name, data, text_chars)
        return await asyncio.to_thread(_prepare_text, name, data, text_chars)


def _prepare_image(name: str, data: bytes, max_pixels: int) -> Prepared:
    from PIL import Image, ImageOps  # (imported in the worker thread: not on every start)

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
    return {"type": "image_url", "image_url": {"url": f"data:{attachment.type};base64,{data_b64}"}}


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
        self.gate = asyncio.Semaphore(PROCESSING)

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
                                 max_pixels=self.settings.image_max_pixels, max_bytes=limit, gate=self.gate)
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
