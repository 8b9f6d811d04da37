"""HTML pages and their HTMX partials.

Every route renders from the same templates: the whole page for a normal request,
just the fragment for an HTMX request; `htmx.View` decides which. Forms post plainly
and get a 303 back, so the app also works with JavaScript off. Errors of these routes
are HTML too: the routes are tagged PAGE_TAG, which the one error handler reads.
A route reads its input, calls one thing in the core (conversations.py, the turn
writer) and renders; the rules live there.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Form, Path, Query, Request, Response

from webapp.base.errors import ChatError
from webapp.base.i18n import LANG_COOKIE, t
from webapp.base.ids import ID_PATTERN, ID_QUERY, UUID_PATTERN, check_id
from webapp.base.models import Conversation
from webapp.core.accounts import Accounts
from webapp.core.conversations import DRAFT_ID, SEARCH_LIMIT, ConversationList, Conversations, ConversationView
from webapp.core.pagination import MAX_INDEX
from webapp.core.roles import BUILTIN_ROLES
from webapp.core.turns.channels import CHANNEL_ID_MAX, channel_id_or_none, new_channel_id
from webapp.web.deps import (
    AccountsDep,
    ConversationsDep,
    CreatingUser,
    CurrentUser,
    OwnedConversation,
    WriterDep,
    client_ip,
    creating_user,
    current_user,
    is_newcomer,
    owned_conversation_of,
    services,
)
from webapp.web.error_handlers import PAGE_TAG
from webapp.web.forms import form_fields, text_field
from webapp.web.htmx import View, ViewDep, local_path, see_other
from webapp.web.routes.files import upload_form_files
from webapp.web.routing import PageRouter, query_text

MESSAGE_PAGE = 30
REFRESH_SECONDS = 2  # a page without JavaScript reloads itself this often while a reply is written
LANG_COOKIE_MAX_AGE = 400 * 86400

router = PageRouter(include_in_schema=False, tags=[PAGE_TAG])
# (the composer's two posts, which every web UI turn makes, and the page every visit opens are plain
# routes, routes/plain.py: home, send_first_message, send_message)

FormText = Annotated[str, Form()]
REQUEST_ID_MAX = 100
ATTACHMENTS_MAX = 20 * 19  # (ids of at most 20 files, comma-separated)
SEARCH_MAX = 200
RequestIdField = Annotated[str, Form(max_length=REQUEST_ID_MAX)]
SearchField = Annotated[str, Form(max_length=SEARCH_MAX)]
MessageIndex = Annotated[int, Path(ge=1, le=MAX_INDEX)]
Query200 = Annotated[str, Query(max_length=200)]
DeletedId = Annotated[str | None, Query(pattern=ID_QUERY)]
DELETED_ID_MAX = 100  # (home reads `deleted` by hand: ids.ID_PATTERN, the compiled twin of ID_QUERY)
Before = Annotated[int | None, Query(ge=0, le=MAX_INDEX)]
BatchIds = Annotated[str, Query(max_length=8000, pattern=f"^({UUID_PATTERN})(,{UUID_PATTERN})*$")]


def typed(text: str) -> str:
    """Text from a textarea as the user typed it: browsers send its newlines as CRLF."""
    return text.replace("\r\n", "\n")


async def sent_form(request: Request) -> tuple[str, str, str, str]:
    """The composer's fields: (message, request_id, q, channel). The two routes every web UI turn posts to read
    them, and their user and services, by hand: FastAPI's solving of `Form()` fields and dependencies
    was ~8% of the loop under load (issue 19). The CSRF check still runs first (routing.PlainRoute),
    on the same parsed form."""
    fields = await form_fields(request)
    return (text_field(fields, "message"), text_field(fields, "request_id", REQUEST_ID_MAX),
            text_field(fields, "q", SEARCH_MAX), channel_id_or_none(text_field(fields, "channel", CHANNEL_ID_MAX)))


async def sent_files(request: Request, user: str) -> tuple[list[str], list[str]]:
    """The files the composer sends: (all their ids, those uploaded by this request). With JavaScript they were
    uploaded already (POST /api/files) and come as ids (`attachments`, comma-separated); a form without it
    is multipart (its file picker), and they are uploaded now. A form without files reads one field more."""
    fields = await form_fields(request)
    ids = [i for i in text_field(fields, "attachments", ATTACHMENTS_MAX).split(",") if i]
    uploaded: list[str] = []
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        uploaded = [a.id for a in await upload_form_files(request, services(request).uploads, user)]
    return ids + uploaded, uploaded


def page_ending_at(conversation: Conversation, index: int) -> int | None:
    """The `before` of the page whose last message is at `index` (None: the newest page)."""
    return index + 1 if index + 1 < conversation.message_count else None


# what templates get ------------------------------------------------------------------

def pane_values(pane: ConversationView, *, max_chars: int, demo: bool) -> dict[str, Any]:
    """Everything the conversation pane (header, messages, composer) shows, as template values."""
    return {
        "conv": pane.conversation, "role": pane.role, "roles": list(BUILTIN_ROLES.values()),
        "messages": pane.messages, "first_index": pane.first_index, "streaming": pane.streaming,
        "no_reply_text": pane.no_reply_text, "retry_text": pane.retry_text, "retry_for": pane.retry_for,
        "is_empty": pane.is_empty, "versions": pane.versions, "max_chars": max_chars,
        "last_index": pane.first_index + len(pane.messages) - 1 if pane.latest else -1, "demo": demo, "draft": "", "form_error": "",
        "active_id": pane.conversation.id, "current_path": f"/c/{pane.conversation.id}",
        "role_missing": pane.role_missing,
        # the page's one event stream (channels.py); a draft has none until its first send makes it a conversation
        "channel_id": new_channel_id() if pane.conversation.id != DRAFT_ID else "",
    }


def list_values(found: ConversationList) -> dict[str, Any]:
    """The sidebar's list: its items, and (`listed`) its groups or the view it is (archive, a folder)."""
    return {"sessions": found.items, "next_cursor": found.next_cursor, "query": found.query, "cursor": found.cursor,
            "listed": found}


async def browse_sidebar(conversations: Conversations, user: str, *, query: str = "", cursor: str | None = None,
                         archived: bool = False, folder: str = "") -> ConversationList:
    """What the sidebar lists: its groups and the rest, the archive, or a folder; search results."""
    return await conversations.browse(user, query=query, cursor=cursor, limit=SEARCH_LIMIT, archived=archived,
                                      folder=folder, grouped=not (archived or folder))


async def conversation_pane(view: View, conversations: Conversations, conversation: Conversation,
                            before: int | None = None) -> dict[str, Any]:
    return await pane_with_choices(view, conversations,
                                   await conversations.view(conversation, limit=MESSAGE_PAGE, before=before))


async def pane_with_choices(view: View, conversations: Conversations, pane: ConversationView) -> dict[str, Any]:
    settings = view.request.app.state.settings
    values = pane_values(pane, max_chars=settings.max_message_chars, demo=settings.demo_mode)
    values["max_attachments"] = settings.max_attachments
    return {**values, **await choices(conversations, pane.conversation.user_id)}


async def choices(conversations: Conversations, user: str, *, newcomer: bool = False) -> dict[str, Any]:
    """The roles (built-in and the user's own) and models the selectors offer (a newcomer has no roles yet)."""
    roles = list(BUILTIN_ROLES.values()) if newcomer else await conversations.roles.all(user)
    return {"roles": roles, "models": await conversations.models()}


async def render_conversation(
    view: View, conversations: Conversations, conversation: Conversation, user: str, *,
    before: int | None = None, query: str = "", cursor: str | None = None, editing_id: str = "",
    draft: str = "", form_error: str = "", deleted: str | None = None, status: int = 200,
    headers: dict[str, str] | None = None, editing_index: int | None = None, edit_text: str = "",
    edit_error: str = "", moving_id: str = "", archived: bool = False, folder: str = "", batch: str = "",
) -> Response:
    """The conversation pane for HTMX, the whole page (with the sidebar) otherwise."""
    values = await conversation_pane(view, conversations, conversation, before)
    values.update(draft=draft, form_error=form_error, edit_text=edit_text, edit_error=edit_error,
                  searching=bool(query.strip()))
    if editing_index is not None:
        values["editing_index"] = editing_index
    return await render_pane(view, conversations, values, user, query=query, cursor=cursor, editing_id=editing_id,
                             deleted=deleted, status=status, headers=headers, moving_id=moving_id,
                             archived=archived, folder=folder, batch=batch)


async def render_draft(view: View, conversations: Conversations, user: str, *, draft: str = "",
                       form_error: str = "", deleted: str | None = None, status: int = 200,
                       nothing_yet: bool = False) -> Response:
    """The home page before a first conversation: an empty chat, stored nowhere (see Conversations.draft).
    `nothing_yet`: the caller is known to have no conversations (the sidebar is not looked up)."""
    settings = view.request.app.state.settings
    values = pane_values(conversations.draft(user), max_chars=settings.max_message_chars, demo=settings.demo_mode)
    values["max_attachments"] = settings.max_attachments
    values.update(draft=draft, form_error=form_error, active_id=None, current_path="/",
                  **await choices(conversations, user, newcomer=nothing_yet))
    return await render_pane(view, conversations, values, user, deleted=deleted, status=status,
                             listed=ConversationList(items=[]) if nothing_yet else None)


async def render_pane(
    view: View, conversations: Conversations, values: dict[str, Any], user: str, *, query: str = "",
    cursor: str | None = None, editing_id: str = "", deleted: str | None = None, status: int = 200,
    headers: dict[str, str] | None = None, listed: ConversationList | None = None, moving_id: str = "",
    archived: bool = False, folder: str = "", batch: str = "",
) -> Response:
    async def whole_page() -> dict[str, Any]:
        found = listed if listed is not None else await browse_sidebar(
            conversations, user, query=query, cursor=cursor, archived=archived, folder=folder)
        folders_all = found.folders if found.grouped else await conversations.shelves.folders(user) \
            if listed is None else []
        return {**list_values(found), "editing_id": editing_id, "deleted_id": deleted, "moving_id": moving_id,
                "folders_all": folders_all, "batch_ids": batch.split(",") if batch else [],
                "refresh_seconds": REFRESH_SECONDS if values["streaming"] else 0}

    return await view.fragment_or_page("partials/conversation.html", "chat.html", values,
                                       page_values=whole_page, status=status, headers=headers)


def opened(conversation: Conversation, *, with_list: bool = False) -> dict[str, str]:
    """HTMX headers of a response that replaces the draft's pane with the conversation it became
    (`with_list`: the response brings the sidebar's list itself, so the page need not ask for it)."""
    headers = {"HX-Retarget": "#main", "HX-Reswap": "outerHTML", "HX-Push-Url": f"/c/{conversation.id}"}
    return headers if with_list else {**headers, "HX-Trigger": "sessions-changed"}


# pages ------------------------------------------------------------------------------

async def home(request: Request) -> Response:
    """The most recent conversation; before there is one, an empty chat that writes nothing until the first send.
    (Every visit's first request, a plain route: its user, services and query are read by hand, routing.py.)"""
    view, user, conversations = View(request), await current_user(request), services(request).conversations
    deleted = query_text(request, "deleted", max_length=DELETED_ID_MAX, pattern=ID_PATTERN) or None
    newcomer = is_newcomer(request)  # (a first visit: no lookups, there is nothing yet)
    conversation = None if newcomer else await conversations.latest(user)
    if conversation is None:
        return await render_draft(view, conversations, user, deleted=deleted, nothing_yet=newcomer)
    return see_other(f"/c/{conversation.id}" + (f"?deleted={deleted}" if deleted else ""))


# the draft's forms: declared before /c/{session_id}/..., which would take "new" for an id
async def send_first_message(request: Request) -> Response:
    """The draft's first send creates the conversation; HTMX gets its pane (reply streaming) in the draft's
    place, and the sidebar's list (or search results, `q`) out of band: one request, not a refresh after it.
    (A route of every turn: see `sent_form`.)"""
    view, user, conversations = View(request), await creating_user(request), services(request).conversations
    message, request_id, q, _ = await sent_form(request)
    text, uploaded = typed(message), []
    try:
        attachments, uploaded = await sent_files(request, user)
        first = await conversations.start_first(user, text, view.lang, client_ip(view.request),
                                                request_id=request_id or None, attachments=attachments)
    except ChatError as exc:
        await services(request).uploads.discard(user, uploaded)
        return await view.form_error(exc, lambda error_text, status: render_draft(
            view, conversations, user, draft=text, form_error=error_text, status=status))
    run = first.started
    path = f"/c/{run.conversation.id}"
    if run.duplicate:  # (a resent form's files: the first one's were sent)
        await services(request).uploads.discard(user, uploaded)
        return view.no_content_or_redirect(path)

    async def values() -> dict[str, Any]:
        pane, found = await asyncio.gather(
            pane_with_choices(view, conversations, first.pane) if first.pane is not None
            else conversation_pane(view, conversations, run.conversation),
            conversations.listed_after_first(first, q))
        return {**pane, **list_values(found), "partial": True}

    return await view.fragment_or_redirect("partials/conversation_opened.html", path, values,
                                           headers=opened(run.conversation, with_list=True))


@router.post(f"/c/{DRAFT_ID}/role")
async def choose_first_role(view: ViewDep, user: CreatingUser, conversations: ConversationsDep,
                            role: FormText = "") -> Response:
    """A role chosen on the draft: the conversation is made now, with that role."""
    conversation = await conversations.first_with_role(user, role)

    async def values() -> dict[str, Any]:
        return {**await conversation_pane(view, conversations, conversation), "partial": True}

    return await view.fragment_or_redirect("partials/conversation.html", f"/c/{conversation.id}", values,
                                           headers=opened(conversation))


@router.get("/c/{session_id}")
async def conversation_page(
    view: ViewDep, conversation: OwnedConversation, user: CurrentUser, conversations: ConversationsDep,
    before: Before = None, q: Query200 = "", cursor: str | None = None, deleted: DeletedId = None,
    archived: bool = False, folder: Annotated[str, Query(max_length=36)] = "", batch: BatchIds = "",
) -> Response:
    """`deleted` (set after a delete without JavaScript) shows the Undo toast that HTMX would have; `batch`
    (after a batch's delete) the one Undo of the batch. `archived`, `folder`: what the sidebar lists."""
    return await render_conversation(view, conversations, conversation, user, before=before, query=q,
                                     cursor=cursor, deleted=deleted, archived=archived, folder=folder, batch=batch)


@router.post("/c")
async def new_conversation(view: ViewDep, user: CreatingUser, conversations: ConversationsDep) -> Response:
    conversation = await conversations.fresh(user)

    async def values() -> dict[str, Any]:
        return {**await conversation_pane(view, conversations, conversation), "partial": True}

    headers = {"HX-Push-Url": f"/c/{conversation.id}", "HX-Trigger-After-Settle": "sessions-changed"}
    return await view.fragment_or_redirect("partials/conversation.html", f"/c/{conversation.id}", values,
                                           headers=headers)


@router.get("/sidebar")
async def sidebar(view: ViewDep, user: CurrentUser, conversations: ConversationsDep, q: Query200 = "",
                  cursor: str | None = None, archived: bool = False,
                  folder: Annotated[str, Query(max_length=36)] = "") -> Response:
    """The session list (first page, with its groups, or search results), or the next page of it after
    `cursor`; `archived`: the archive's, `folder`: a folder's."""
    more = bool(cursor and not q.strip())

    async def values() -> dict[str, Any]:
        found = await browse_sidebar(conversations, user, query=q, cursor=cursor, archived=archived, folder=folder)
        folders_all = found.folders if found.grouped else await conversations.shelves.folders(user)
        return {**list_values(found), "active_id": view.active_id, "current_path": view.current_path,
                "folders_all": folders_all}

    name = "partials/session_items.html" if more else "partials/session_list.html"
    return await view.fragment_or_redirect(name, "/", values)


@router.post("/lang")
async def switch_language(view: ViewDep, lang: FormText = "", next: FormText = "/") -> Response:
    """Remember the language switch in a cookie; `next` may only be one of our pages."""
    response = see_other(local_path(next))
    if lang in ("zh", "en"):
        response.set_cookie(LANG_COOKIE, lang, max_age=LANG_COOKIE_MAX_AGE, httponly=True, samesite="lax",
                            secure=view.request.url.scheme == "https")
    return response


# a conversation's messages ----------------------------------------------------------

@router.get("/c/{session_id}/messages")
async def older_messages(view: ViewDep, conversation: OwnedConversation, conversations: ConversationsDep,
                         before: Annotated[int, Query(ge=0, le=MAX_INDEX)]) -> Response:
    """The page of messages before list index `before` (scrolling up)."""

    async def values() -> dict[str, Any]:
        messages, first_index, _ = await conversations.message_page(conversation, limit=MESSAGE_PAGE, before=before)
        return {"conv": conversation, "messages": messages, "first_index": first_index,
                "versions": await conversations.versions_of(conversation)}

    return await view.fragment_or_redirect("partials/message_page.html", f"/c/{conversation.id}?before={before}",
                                           values)


async def send_message(request: Request) -> Response:
    """Start a turn. When the page's channel (`channel`, channels.py) is open on this worker, it has
    been handed the turn and brings the bubbles: this answers with the sidebar's item only. Otherwise
    the user's bubble plus a reply bubble with a stream of its own (or, without JS, a redirect).

    The sidebar's item for the conversation moves to the top out of band, in this response and
    again (with the reply's preview) in the stream's done event: no refresh of the whole list.
    While the sidebar shows search results (`q`, the search box the composer includes), the
    list is refreshed as before, since the conversation may not belong in it. Ownership is
    checked by the turn writer in the round trip that takes the conversation's lock (as the
    seed API's stream does): no separate lookup of the conversation first. (A route of every
    turn: see `sent_form`.)
    """
    view, user, session_id = View(request), await current_user(request), request.path_params["session_id"]
    conversations, writer = services(request).conversations, services(request).turn_writer
    message, request_id, q, channel = await sent_form(request)
    text, uploaded = typed(message), []
    try:
        attachments, uploaded = await sent_files(request, user)
        run = await writer.start_turn(check_id(session_id), user, text, None, view.lang, client_ip(view.request),
                                      request_id=request_id or None, attachments=attachments)
    except ChatError as exc:
        await services(request).uploads.discard(user, uploaded)
        async def page(error_text: str, status: int) -> Response:
            conversation = await owned_conversation_of(request, session_id, user)
            return await render_conversation(view, conversations, conversation, user, draft=text,
                                             form_error=error_text, status=status)
        return await view.form_error(exc, page)
    if run.duplicate:  # the same form again (a double click, a resent form): nothing new to show
        await services(request).uploads.discard(user, uploaded)
        return view.no_content_or_redirect(f"/c/{run.conversation.id}")
    searching = bool(q.strip())
    headers = {"HX-Trigger": "sessions-changed"} if searching else None
    channels = services(request).channels
    if view.fragment and channels.is_open(channel, user, run.conversation.id):
        # the page's channel is open here and has been handed the turn: it brings the bubbles
        # (X-Turn-Id: app.js reconnects a channel that does not bring the turn, e.g. a connection that died)
        return view.render("partials/turn_posted.html", conv=run.conversation, sidebar=not searching,
                           headers={**(headers or {}), "X-Turn-Id": run.id})
    channels.answered_without(channel, run.id)  # (if the page's channel opens here next, it skips the turn)
    # the first message of the conversation: its suggestions go
    was_empty = run.user_message is not None and run.conversation.message_count == 2
    return await view.fragment_or_redirect(
        "partials/turn_started.html", f"/c/{run.conversation.id}",
        {"conv": run.conversation, "user_message": run.user_message, "was_empty": was_empty,
         "streaming": {"turn_id": run.id, "after": 0, "text": ""}, "searching": searching, "sidebar": not searching},
        headers=headers,
    )


async def pane_after(view: View, conversations: Conversations, conversation: Conversation,
                     headers: dict[str, str] | None = None) -> Response:
    """After a change to the messages: the pane again (HTMX), or back to the page (no JavaScript)."""
    async def values() -> dict[str, Any]:
        fresh = await owned_conversation_of(view.request, conversation.id, conversation.user_id)
        return {**await conversation_pane(view, conversations, fresh), "partial": True}

    return await view.fragment_or_redirect("partials/conversation.html", f"/c/{conversation.id}", values,
                                           headers=headers)


@router.post("/c/{session_id}/regenerate")
async def regenerate(view: ViewDep, conversation: OwnedConversation, user: CurrentUser,
                     conversations: ConversationsDep, writer: WriterDep,
                     request_id: RequestIdField = "") -> Response:
    """A new reply to the last message (the earlier one stays as a version); also Retry after an error."""
    try:
        await writer.regenerate(conversation.id, user, view.lang, client_ip(view.request),
                                request_id=request_id or None)
    except ChatError as exc:
        return await view.form_error(exc, lambda error_text, status: render_conversation(
            view, conversations, conversation, user, form_error=error_text, status=status))
    return await pane_after(view, conversations, conversation, {"HX-Trigger": "sessions-changed"})


@router.get("/c/{session_id}/messages/{index}/edit")
async def edit_message_form(view: ViewDep, conversation: OwnedConversation, user: CurrentUser,
                            conversations: ConversationsDep, index: MessageIndex) -> Response:
    """A user message as a form to edit and resend (without JS: the page with that form in place)."""
    message = await conversations.user_message_at(conversation, index)
    settings = view.request.app.state.settings
    return await view.fragment_or(
        "partials/message_edit.html",
        {"conv": conversation, "m": message, "idx": index, "max_chars": settings.max_message_chars},
        lambda: render_conversation(view, conversations, conversation, user, editing_index=index,
                                    before=page_ending_at(conversation, index)),
    )


@router.post("/c/{session_id}/messages/{index}/edit")
async def edit_message(view: ViewDep, conversation: OwnedConversation, user: CurrentUser,
                       conversations: ConversationsDep, writer: WriterDep, index: MessageIndex,
                       message: FormText = "", message_id: FormText = "",
                       request_id: RequestIdField = "", files_listed: FormText = "",
                       keep: Annotated[list[str], Form(max_length=20)] = []) -> Response:  # noqa: B006 (FastAPI copies it)
    """Save the edited text as a new version of the message and send it; what followed stays a version. Its
    files go with it, those unticked (`keep`) left out, files picked in the form added."""
    text, uploaded = typed(message), []
    try:
        attachments = keep if files_listed else None
        if view.request.headers.get("content-type", "").startswith("multipart/form-data"):
            uploaded = [a.id for a in await upload_form_files(view.request, services(view.request).uploads, user)]
            if uploaded:
                attachments = (attachments if attachments is not None else await kept_files(conversations, conversation,
                                                                                          index)) + uploaded
        await writer.edit(conversation.id, user, message_id, text, view.lang, client_ip(view.request),
                          request_id=request_id or None, attachments=attachments)
    except ChatError as exc:
        await services(view.request).uploads.discard(user, uploaded)
        return await view.form_error(exc, lambda error_text, status: render_conversation(
            view, conversations, conversation, user, editing_index=index, edit_text=text, edit_error=error_text,
            status=status, before=page_ending_at(conversation, index)))
    return await pane_after(view, conversations, conversation, {"HX-Trigger": "sessions-changed"})


async def kept_files(conversations: Conversations, conversation: Conversation, index: int) -> list[str]:
    """The files of the message being edited (a form that listed none, adding some)."""
    message = await conversations.user_message_at(conversation, index)
    return [a.id for a in message.attachments]


@router.post("/c/{session_id}/messages/{index}/version")
async def choose_version(view: ViewDep, conversation: OwnedConversation, conversations: ConversationsDep,
                         index: MessageIndex, to: Annotated[int, Form(ge=1, le=10000)]) -> Response:
    """Show another version of the message at `index`; later turns see that branch."""
    conversation = await conversations.switch_version(conversation, index, to)
    return await pane_after(view, conversations, conversation)


@router.post("/c/{session_id}/stop")
async def stop_reply(view: ViewDep, conversation: OwnedConversation, writer: WriterDep) -> Response:
    """Stop the reply being written; what it has so far is kept."""
    await writer.stop_reply(conversation)
    return view.no_content_or_redirect(f"/c/{conversation.id}")


@router.post("/c/{session_id}/role")
async def switch_role(view: ViewDep, conversation: OwnedConversation, conversations: ConversationsDep,
                      role: FormText = "") -> Response:
    conversation = await conversations.update(conversation, role_id=role)
    pane = {"conv": conversation, "role": await conversations.roles.get(conversation.user_id, conversation.role),
            **await choices(conversations, conversation.user_id)}
    return await view.fragment_or_redirect("partials/role_selector.html", f"/c/{conversation.id}", pane)


# the sidebar's items: rename, delete, undo --------------------------------------------

@router.get("/c/{session_id}/item")
async def session_item(view: ViewDep, conversation: OwnedConversation) -> Response:
    return view.render("partials/session_item.html", c=conversation, active_id=view.active_id)


@router.get("/c/{session_id}/move")
async def move_form(view: ViewDep, conversation: OwnedConversation, user: CurrentUser,
                    conversations: ConversationsDep) -> Response:
    """The item as a form to move it into a folder (without JS: the page with that form in its sidebar)."""
    folders = await conversations.shelves.folders(user)
    return await view.fragment_or(
        "partials/session_item_move.html", {"c": conversation, "active_id": view.active_id, "folders_all": folders},
        lambda: render_conversation(view, conversations, conversation, user, moving_id=conversation.id),
    )


@router.get("/c/{session_id}/title/edit")
async def edit_title(view: ViewDep, conversation: OwnedConversation, user: CurrentUser,
                     conversations: ConversationsDep) -> Response:
    """The item as an inline rename form (without JS: the page with that form in its sidebar)."""
    return await view.fragment_or(
        "partials/session_item_edit.html", {"c": conversation, "active_id": view.active_id},
        lambda: render_conversation(view, conversations, conversation, user, editing_id=conversation.id),
    )


@router.post("/c/{session_id}/title")
async def rename(view: ViewDep, conversation: OwnedConversation, conversations: ConversationsDep,
                 title: FormText = "") -> Response:
    conversation = await conversations.update(conversation, title=title)
    return await view.fragment_or_redirect(
        "partials/renamed.html", f"/c/{conversation.id}",
        {"c": conversation, "conv": conversation, "active_id": view.active_id},
    )


@router.post("/c/{session_id}/delete")
async def delete(view: ViewDep, conversation: OwnedConversation, user: CurrentUser,
                 conversations: ConversationsDep) -> Response:
    """Delete, keeping a copy for the undo toast; leaving the open conversation opens the next one."""
    await conversations.delete_undoably(conversation)
    title = conversation.title or t("ui.untitled", view.lang)
    headers: dict[str, str] = {}

    async def values() -> dict[str, Any]:
        shown: dict[str, Any] = {"text": t("ui.deleted", view.lang, title=title),
                                 "undo_url": f"/c/{conversation.id}/restore"}
        if view.active_id == conversation.id:  # the open one: open the next, out of band
            following = await conversations.after_deleting(user)
            shown.update(await conversation_pane(view, conversations, following), following=following)
            headers.update({"HX-Push-Url": f"/c/{following.id}", "HX-Trigger-After-Settle": "sessions-changed"})
        return shown

    back = view.referer(avoid=conversation.id)
    return await view.fragment_or_redirect("partials/deleted.html", f"{back}?deleted={conversation.id}", values,
                                           headers=headers)


@router.post("/c/{session_id}/restore")
async def undo_delete(view: ViewDep, session_id: str, user: CurrentUser, conversations: ConversationsDep) -> Response:
    conversation = await conversations.undo_delete(user, session_id)
    text = t("ui.restored", view.lang, title=conversation.title or t("ui.untitled", view.lang))
    return await view.fragment_or_redirect("partials/toast.html", f"/c/{conversation.id}", {"text": text},
                                           headers={"HX-Trigger": "sessions-changed"})


# settings: personal API tokens ------------------------------------------------------

async def settings_page(view: View, user: str, accounts: Accounts, new_token: str = "",
                        status: int = 200, imported: int | None = None) -> Response:
    state = view.request.app.state
    mode = state.settings.auth
    username = await accounts.username_of(user) if mode != "anonymous" else ""
    quota = state.quota
    storage = ({"used": round(await quota.usage(user) / 1e6, 1), "quota": round(quota.quota_bytes / 1e6, 1)}
               if quota.quota_bytes and not is_newcomer(view.request) else None)
    is_admin = mode != "anonymous" and await state.admin.is_admin(user)
    return view.render("settings.html", status=status, tokens=await accounts.tokens(user), new_token=new_token,
                       username=username, accounts=mode == "accounts", imported=imported, storage=storage,
                       is_admin=is_admin)


@router.get("/settings")
async def settings(view: ViewDep, user: CurrentUser, accounts: AccountsDep,
                   imported: Annotated[int | None, Query(ge=0, le=100_000)] = None) -> Response:
    """`imported`: the count an import just wrote (the upload form's 303 lands here)."""
    return await settings_page(view, user, accounts, imported=imported)


@router.post("/settings/tokens")
async def create_token(view: ViewDep, user: CreatingUser, accounts: AccountsDep,
                       name: FormText = "API token") -> Response:
    """The new token is on this page only (the server keeps its hash); reloading does not show it again."""
    _, token = await accounts.create_token(user, name or "API token")
    return await settings_page(view, user, accounts, new_token=token, status=201)


@router.post("/settings/tokens/{token_id}/revoke")
async def revoke_token(token_id: str, user: CurrentUser, accounts: AccountsDep) -> Response:
    await accounts.revoke_token(user, token_id)
    return see_other("/settings")
