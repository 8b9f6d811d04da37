"""Export and import: downloads of a conversation (Markdown, JSON) and of all of a user's data,
and the import of such a file (JSON API, and the settings page's upload form)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, File, Request, Response, UploadFile
from pydantic import ValidationError

from webapp.base.errors import InvalidImport, RequestTooLarge
from webapp.core.export_format import ExportFile
from webapp.web.deps import CreatingUser, CurrentUser, LangDep, OwnedConversation, PortabilityDep
from webapp.web.error_handlers import PAGE_TAG
from webapp.web.htmx import see_other
from webapp.web.routing import PageRouter
from webapp.web.schemas import ImportOut

api_router = APIRouter(tags=["export"])
page_router = PageRouter(include_in_schema=False, tags=[PAGE_TAG])
IMPORT_PATHS = ("/api/import", "/settings/import")


def download(body: bytes | str, filename: str, media_type: str) -> Response:
    return Response(body, media_type=media_type, headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "private, no-store"})


@api_router.get("/api/sessions/{session_id}/export.md")
async def export_markdown(conversation: OwnedConversation, portability: PortabilityDep, lang: LangDep) -> Response:
    """The conversation as Markdown, to read or keep."""
    text = await portability.markdown(conversation, lang)
    return download(text, f"chat-{conversation.id}.md", "text/markdown; charset=utf-8")


@api_router.get("/api/sessions/{session_id}/export.json")
async def export_json(conversation: OwnedConversation, portability: PortabilityDep) -> Response:
    data = await portability.conversation(conversation)
    return download(orjson.dumps(data, option=orjson.OPT_INDENT_2), f"chat-{conversation.id}.json",
                    "application/json")


@api_router.get("/api/export")
async def export_everything(user: CurrentUser, portability: PortabilityDep) -> Response:
    """All of the caller's conversations and roles as one JSON file, which /api/import reads back."""
    data = await portability.everything(user)
    return download(orjson.dumps(data), "chat-export.json", "application/json")


def parse_export(raw: bytes) -> ExportFile:
    try:
        return ExportFile.model_validate_json(raw)
    except ValidationError:
        raise InvalidImport() from None


@api_router.post("/api/import", response_model=ImportOut, status_code=201)
async def import_everything(request: Request, user: CreatingUser, portability: PortabilityDep) -> ImportOut:
    """A file of /api/export, as new conversations and roles of the caller (new ids; nothing else touched).
    The body is limited to MAX_IMPORT_BYTES; the file is refused whole when it is invalid or would pass
    a limit (conversations, roles, messages, MAX_IMPORT_MESSAGE_CHARS, IMPORTS_PER_HOUR and
    IMPORT_BYTES_PER_HOUR)."""
    raw = await request.body()
    ids, roles = await portability.import_(user, parse_export(raw), size=len(raw))
    return ImportOut(conversations=len(ids), roles=roles, ids=ids)


@page_router.post("/settings/import")
async def import_page(request: Request, user: CreatingUser, portability: PortabilityDep,
                      file: Annotated[UploadFile, File()]) -> Response:
    limit = request.app.state.settings.max_import_bytes
    raw = await file.read(limit + 1)
    if len(raw) > limit:
        raise RequestTooLarge()
    ids, roles = await portability.import_(user, parse_export(raw), size=len(raw))
    return see_other(f"/settings?imported={len(ids)}")
