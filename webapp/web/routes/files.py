"""Attachments over HTTP: uploading files (`POST /api/files`, multipart), and serving a conversation's files
to its owner (`/c/{id}/files/{file}`) and through its read-only link (`/s/{token}/files/{file}`).

A file is served with the type sniffed from its content, `X-Content-Type-Options: nosniff`, a sandboxing
Content-Security-Policy and an RFC 6266 `Content-Disposition` (`filename*`, UTF-8): images (re-encoded as
JPEG or PNG when uploaded) inline, everything else as a download, so no HTML or SVG is ever rendered.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path, Request, Response
from starlette.datastructures import UploadFile

from webapp.base.errors import UnsupportedAttachment
from webapp.base.models import Attachment
from webapp.core.attachments import Uploads, clean_name
from webapp.web.deps import CurrentUser, OwnedConversation, UploadsDep, get_shares, services
from webapp.web.error_handlers import PAGE_TAG
from webapp.web.routing import PageRouter
from webapp.web.routes.sharing import NOINDEX
from webapp.web.schemas import AttachmentOut

api_router = APIRouter(tags=["files"])
page_router = PageRouter(include_in_schema=False, tags=[PAGE_TAG])
FILE_FIELD = "files"  # the multipart field (repeated) of the API and of the composer's form
FileId = Annotated[str, Path(max_length=40)]


async def upload_form_files(request: Request, uploads: Uploads, user: str) -> list[Attachment]:
    """The files of a multipart form (the `files` fields; a picker left empty sends one without a name),
    each stored as an upload; all or none: one refused discards those stored before it."""
    form = await request.form()  # (parsed once: Starlette keeps it; the CSRF check may have parsed it)
    files = [f for f in form.getlist(FILE_FIELD) if isinstance(f, UploadFile) and (f.filename or f.size)]
    uploads.check_count(len(files))
    stored: list[Attachment] = []
    try:
        for file in files:
            stored.append(await uploads.upload(user, file.filename or "", file.size or 0, file.read))
            await file.close()
    except BaseException:
        await uploads.discard(user, [a.id for a in stored])
        raise
    return stored


UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [FILE_FIELD],
    "properties": {FILE_FIELD: {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}


@api_router.post("/api/files", response_model=list[AttachmentOut], status_code=201, openapi_extra=UPLOAD_BODY)
async def upload_files(request: Request, user: CurrentUser, uploads: UploadsDep) -> list[AttachmentOut]:
    """Upload files (multipart/form-data, field `files`, repeated) to send with a turn: their ids go in the
    turn's `attachments`. Kept for an hour unless sent. Images (PNG, JPEG, WebP, GIF) are resized to at most
    2048 px; PDF and text files are read as text. 413 over MAX_ATTACHMENT_BYTES (or the storage quota), 415
    for another type or a name that does not match the content, 422 for a damaged or encrypted file."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedAttachment(name="")
    return [AttachmentOut.of(a) for a in await upload_form_files(request, uploads, user)]


@api_router.delete("/api/files/{file_id}", status_code=204)
async def discard_file(file_id: FileId, user: CurrentUser, uploads: UploadsDep) -> Response:
    """Forget a file uploaded and not sent (the composer's remove button)."""
    await uploads.uploaded(user, file_id)
    await uploads.discard(user, [file_id])
    return Response(status_code=204)


@page_router.get("/c/{session_id}/files/{file_id}", name="conversation_file")
async def conversation_file(conversation: OwnedConversation, file_id: FileId, uploads: UploadsDep) -> Response:
    record, data = await uploads.download(conversation.user_id, conversation.id, file_id)
    return file_response(record, data)


@page_router.get("/s/{token}/files/{file_id}", name="shared_file")
async def shared_file(token: Annotated[str, Path(max_length=100)], file_id: FileId, request: Request) -> Response:
    """A file of a shared conversation, through its link (another conversation's file: 404)."""
    shared = await (await get_shares(request)).open(token)
    conversation = shared.conversation
    record, data = await services(request).uploads.download(conversation.user_id, conversation.id, file_id)
    response = file_response(record, data)
    response.headers.update(NOINDEX)
    return response


def file_response(record: Attachment, data: bytes) -> Response:
    """(`X-Content-Type-Options: nosniff` is on every response: security.SECURITY_HEADERS.)"""
    inline = record.kind == "image" and record.type in ("image/jpeg", "image/png")
    return Response(data, media_type=record.type, headers={
        "Content-Disposition": content_disposition(record.name, inline=inline),
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, max-age=86400",
    })


def content_disposition(name: str, *, inline: bool) -> str:
    """RFC 6266: an ASCII fallback `filename` and the UTF-8 `filename*`."""
    name = clean_name(name)
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%' else "_" for c in name)
    return f"{'inline' if inline else 'attachment'}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
