"""Pins, the archive, folders and batches (issue 37): the JSON API (/api/folders, /api/sessions/bulk;
PATCH /api/sessions/{id} takes pinned, archived, folder_id in api.py) and the sidebar's forms.

The forms post plainly and get a 303 back to the page they came from, so all of it works with
JavaScript off; HTMX gets the sidebar's list again (its groups and its items) in one fragment.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Form, Response

from webapp.base.errors import FolderNameTaken, InvalidInput, TooManyInBatch, UndoExpired
from webapp.base.ids import UUID_PATTERN, check_id
from webapp.base.i18n import t
from webapp.core.listing import SEARCH_LIMIT
from webapp.core.shelves import ARCHIVED, FOLDER, MAX_BATCH, PINNED
from webapp.web.deps import ConversationsDep, CurrentUser, OwnedConversation, PortabilityDep
from webapp.web.error_handlers import PAGE_TAG
from webapp.web.htmx import View, ViewDep
from webapp.web.routing import PageRouter
from webapp.web.schemas import BulkIn, BulkOut, FolderIn, FolderOut

api_router = APIRouter(tags=["folders"])
page_router = PageRouter(include_in_schema=False, tags=[PAGE_TAG])

FormText = Annotated[str, Form(max_length=200)]
FormIds = Annotated[list[str], Form(max_length=MAX_BATCH)]
DOING: dict[str, tuple[str, bool]] = {"pin": (PINNED, True), "unpin": (PINNED, False), "archive": (ARCHIVED, True),
                                      "unarchive": (ARCHIVED, False)}


# the JSON API ------------------------------------------------------------------------

@api_router.get("/api/folders", response_model=list[FolderOut])
async def list_folders(user: CurrentUser, conversations: ConversationsDep) -> list[FolderOut]:
    """The caller's folders, by name."""
    return [FolderOut(id=f.id, name=f.name) for f in await conversations.shelves.folders(user)]


@api_router.post("/api/folders", response_model=FolderOut, status_code=201)
async def create_folder(body: FolderIn, user: CurrentUser, conversations: ConversationsDep) -> FolderOut:
    """A new folder (at most 50; a name of 1 to 40 characters no other folder of the caller's has)."""
    folder = await conversations.shelves.create_folder(user, body.name)
    return FolderOut(id=folder.id, name=folder.name)


@api_router.patch("/api/folders/{folder_id}", response_model=FolderOut)
async def rename_folder(folder_id: str, body: FolderIn, user: CurrentUser,
                        conversations: ConversationsDep) -> FolderOut:
    """Rename a folder (the same rules as a new one's name)."""
    folder = await conversations.shelves.rename_folder(user, folder_id, body.name)
    return FolderOut(id=folder.id, name=folder.name)


@api_router.delete("/api/folders/{folder_id}", status_code=204)
async def delete_folder(folder_id: str, user: CurrentUser, conversations: ConversationsDep) -> Response:
    """Delete a folder; its conversations stay, in no folder."""
    await conversations.shelves.delete_folder(user, folder_id)
    return Response(status_code=204)


@api_router.post("/api/sessions/bulk", response_model=BulkOut, tags=["sessions"])
async def bulk(body: BulkIn, user: CurrentUser, conversations: ConversationsDep,
               portability: PortabilityDep) -> BulkOut:
    """One action on up to 200 of the caller's conversations (others' and missing ids are skipped):
    `delete` (each kept 10 minutes: `restore` with the ids it answered puts the whole batch back),
    `archive`, `unarchive`, `pin`, `unpin`, `move` (to `folder_id`; none: out of any folder), `export`
    (the file /api/export writes, with those conversations only)."""
    check_batch(body.ids)
    if body.action == "export":
        data = await portability.everything(user, body.ids)
        return BulkOut(done=len(data["conversations"]), ids=[], export=data)
    ids = await act_on_batch(conversations, user, body.action, body.ids, body.folder_id or "")
    return BulkOut(done=len(ids), ids=ids)


def check_batch(ids: list[str]) -> None:
    """At most MAX_BATCH ids, each of a conversation id's shape (InvalidId otherwise): nothing done else."""
    if len(ids) > MAX_BATCH:
        raise TooManyInBatch(limit=MAX_BATCH)
    for sid in ids:
        check_id(sid)


async def act_on_batch(conversations: Any, user: str, action: str, ids: list[str], folder_id: str) -> list[str]:
    """What a batch did: the ids it changed (for delete: the ones its undo puts back)."""
    check_batch(ids)
    shelves = conversations.shelves
    if action == "delete":
        return await conversations.delete_batch(user, ids)
    if action == "restore":
        return [c.id for c in await conversations.undo_batch(user, ids)]
    what, on = {"archive": (ARCHIVED, True), "unarchive": (ARCHIVED, False), "pin": (PINNED, True),
                "unpin": (PINNED, False), "move": (FOLDER, folder_id)}[action]
    return await shelves.keep(user, ids, what, on)


# the sidebar's forms -----------------------------------------------------------------

VIEW_QUERY = re.compile(rf"(?:^|&)(archived=1|folder={UUID_PATTERN})(?:&|$)")


def back_to(view: View) -> str:
    """Where a form without JavaScript goes back to: the page it came from, in the sidebar's view it
    showed (the archive, a folder)."""
    referer = view.request.headers.get("referer", "")
    shown = VIEW_QUERY.search(urlsplit(referer).query) if referer else None
    return view.referer() + (f"?{shown.group(1)}" if shown else "")


async def sidebar_list(view: View, conversations: Any, user: str, headers: dict[str, str] | None = None,
                       toast: dict[str, Any] | None = None, back: str = "") -> Response:
    """HTMX: the sidebar's list again (its groups too), with a toast; otherwise back to the page."""
    async def values() -> dict[str, Any]:
        archived = "archived=1" in view.request.headers.get("hx-current-url", "")
        found = await conversations.browse(user, limit=SEARCH_LIMIT, grouped=not archived, archived=archived)
        return {"sessions": found.items, "next_cursor": found.next_cursor, "query": "", "cursor": None,
                "listed": found, "active_id": view.active_id, "current_path": view.current_path,
                "toast": toast, "folders_all": await conversations.shelves.folders(user)}

    return await view.fragment_or_redirect("partials/session_list.html", back or back_to(view), values,
                                           headers=headers)


@page_router.post("/c/{session_id}/keep")
async def keep(view: ViewDep, conversation: OwnedConversation, user: CurrentUser, conversations: ConversationsDep,
               do: FormText = "", what: FormText = "", value: FormText = "") -> Response:
    """The item's menu: `do` pin, unpin, archive or unarchive; or move into a folder (`what` folder,
    `value` its id; empty: out of any)."""
    on: bool | str
    if do in DOING:
        kept, on = DOING[do]
    elif what == "folder":
        kept, on = FOLDER, value
    else:
        raise InvalidInput()
    await conversations.shelves.keep(user, [conversation.id], kept, on)
    return await sidebar_list(view, conversations, user)


@page_router.post("/folders")
async def create_folder_form(view: ViewDep, user: CurrentUser, conversations: ConversationsDep,
                             name: FormText = "") -> Response:
    """A new folder; one of that name already (a double click, a form sent again) is no error here."""
    try:
        await conversations.shelves.create_folder(user, name)
    except FolderNameTaken:
        pass
    return await sidebar_list(view, conversations, user)


@page_router.post("/folders/{folder_id}/rename")
async def rename_folder_form(view: ViewDep, folder_id: str, user: CurrentUser, conversations: ConversationsDep,
                             name: FormText = "") -> Response:
    await conversations.shelves.rename_folder(user, folder_id, name)
    return await sidebar_list(view, conversations, user)


@page_router.post("/folders/{folder_id}/delete")
async def delete_folder_form(view: ViewDep, folder_id: str, user: CurrentUser,
                             conversations: ConversationsDep) -> Response:
    await conversations.shelves.delete_folder(user, folder_id)
    return await sidebar_list(view, conversations, user)


@page_router.post("/bulk")
async def bulk_form(view: ViewDep, user: CurrentUser, conversations: ConversationsDep,
                    action: FormText = "", ids: FormIds = [], folder_id: FormText = "") -> Response:  # noqa: B006
    """The sidebar's selection: delete (one Undo for the batch), archive, move, pin."""
    if action not in ("delete", "archive", "unarchive", "pin", "unpin", "move", "restore"):
        raise InvalidInput()
    done = await act_on_batch(conversations, user, action, ids, folder_id)
    toast: dict[str, Any] | None = None
    if action == "delete":
        toast = {"text": t("ui.bulk_deleted", view.lang, n=len(done)), "undo_ids": done}
    elif action == "archive":
        toast = {"text": t("ui.bulk_archived", view.lang, n=len(done)), "undo_ids": done, "undo_action": "unarchive"}
    elif action == "restore" and not done:
        raise UndoExpired()
    else:
        toast = {"text": t("ui.bulk_done", view.lang, n=len(done))}
    back = back_to(view)
    if not view.fragment and action == "delete" and done:
        if any(sid in back for sid in done):  # the page it came from is gone: the newest one left
            latest = await conversations.latest(user)
            back = f"/c/{latest.id}" if latest else "/"
        if back != "/":
            back += ("&" if "?" in back else "?") + "batch=" + ",".join(done)
    return await sidebar_list(view, conversations, user, toast=toast, back=back)


@page_router.post("/bulk/export")
async def bulk_export(user: CurrentUser, portability: PortabilityDep, ids: FormIds = []) -> Response:  # noqa: B006
    """The selection as an export file (a download: the page stays)."""
    check_batch(ids)
    data = await portability.everything(user, ids)
    return Response(orjson.dumps(data), media_type="application/json", headers={
        "Content-Disposition": 'attachment; filename="chat-export-selection.json"',
        "Cache-Control": "private, no-store"})
