"""HTML pages and their HTMX partials.

Every route renders from the same templates: the whole page for a normal request,
just the fragment for an HTMX request (`HX-Request`). Forms post plainly and get a
303 back, so the app also works with JavaScript off; HTMX only makes it smoother.
Errors of these routes are HTML too (see `HTMLRoute`), never the API's JSON.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any, Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from redis.exceptions import RedisError

from ..chat import TurnManager
from ..deps import CurrentUser, LangDep, OwnedConversation, StoreDep, TurnsDep, check_id, lang_of
from ..errors import ChatError, EmptyTitle
from ..i18n import LANG_COOKIE, Lang, t
from ..render import templates, ui_context
from ..roles import BUILTIN_ROLES, DEFAULT_ROLE, Role, get_role
from ..store import Conversation, Store, clean_title
from .api import format_cursor, parse_cursor

log = logging.getLogger("webapp.pages")

MESSAGE_PAGE = 30
SESSION_PAGE = 30
UNDO_SECONDS = 600
REFRESH_SECONDS = 2
LANG_COOKIE_MAX_AGE = 400 * 86400
CONVERSATION_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CONVERSATION_PATH = re.compile(rf"/c/({CONVERSATION_ID})")
LOCAL_PAGE = re.compile(r"/(?:c/[0-9a-f-]{36})?")


class UndoExpired(ChatError):
    status = 410
    key = "ui.restore_expired"


# request helpers ----------------------------------------------------------------

def is_htmx(request: Request) -> bool:
    """An HTMX request wants a fragment; a history restore wants the whole page."""
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-history-restore-request") != "true"


def current_path(request: Request) -> str:
    """The page the user is on: an HTMX request names it in HX-Current-URL."""
    if is_htmx(request) and request.headers.get("hx-current-url"):
        return urlsplit(request.headers["hx-current-url"]).path or "/"
    return request.url.path


def active_id(request: Request) -> str | None:
    match = CONVERSATION_PATH.match(current_path(request))
    return match.group(1) if match else None


def see_other(path: str) -> Response:
    return RedirectResponse(path, status_code=303)


def local_referer(request: Request, avoid: str = "") -> str:
    """Where a form without JavaScript came from, if it is one of our pages (and not `avoid`)."""
    path = urlsplit(request.headers.get("referer", "")).path
    if LOCAL_PAGE.fullmatch(path) and (not avoid or avoid not in path):
        return path
    return "/"


def render(request: Request, name: str, lang: Lang, *, status: int = 200, headers: dict[str, str] | None = None,
           **values: Any) -> Response:
    response = templates.TemplateResponse(request, name, ui_context(lang, **values), status_code=status,
                                          headers=headers)
    response.headers["Vary"] = "HX-Request"
    response.headers["Cache-Control"] = "private, no-cache"
    return response


def wants_html(request: Request) -> bool:
    """A browser navigating (not an API client): errors come back as a page, not JSON."""
    path = request.url.path
    if path.startswith(("/api/", "/chat/", "/static/")):
        return False
    return is_htmx(request) or "text/html" in request.headers.get("accept", "")


def error_response(request: Request, key: str, status: int, params: dict[str, object] | None = None) -> Response:
    """A toast for HTMX (retargeted into #toasts), an error page otherwise."""
    lang = lang_of(request)
    text = t(key, lang, **(params or {}))
    if is_htmx(request):
        return render(request, "partials/toast.html", lang, status=status, text=text, kind="error",
                      headers={"HX-Retarget": "#toasts", "HX-Reswap": "beforeend"})
    return render(request, "error.html", lang, status=status, message=text)


class HTMLRoute(APIRoute):
    """Domain, validation and storage errors of a page route come back as HTML."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ChatError as exc:
                return error_response(request, exc.key, exc.status, exc.params)
            except RequestValidationError:
                return error_response(request, "error.invalid_input", 422)
            except RedisError as exc:
                request.app.state.metrics.redis_error()
                log.error("redis error on %s: %s", request.url.path, type(exc).__name__)
                return error_response(request, "error.storage", 503)

        return handle


router = APIRouter(include_in_schema=False, route_class=HTMLRoute)

FormText = Annotated[str, Form()]


# views: what a template needs, read from the store ---------------------------------

def role_of(conversation: Conversation) -> Role:
    return BUILTIN_ROLES.get(conversation.role) or BUILTIN_ROLES[DEFAULT_ROLE]


async def conversation_view(store: Store, turns: TurnManager, conversation: Conversation,
                            before: int | None = None) -> dict[str, Any]:
    """The latest page of messages (or the page before `before`), and the reply still being written."""
    messages, first_index, _ = await store.message_page(conversation.id, limit=MESSAGE_PAGE, before=before)
    streaming = None
    if conversation.running_turn_id and before is None:
        text, seq, finished = await turns.progress(conversation.running_turn_id)
        if finished:  # it ended between reading the metadata and now: show the saved reply
            conversation = await store.get_conversation(conversation.id) or conversation
            messages, first_index, _ = await store.message_page(conversation.id, limit=MESSAGE_PAGE)
        else:
            streaming = {"turn_id": conversation.running_turn_id, "after": seq, "text": text}
    no_reply_text, retry_text, retry_for = "", "", ""
    if before is None and streaming is None and messages:
        last = messages[-1]
        if last.role == "user":
            no_reply_text = last.content
        elif last.status != "complete" and len(messages) > 1 and messages[-2].role == "user":
            retry_text, retry_for = messages[-2].content, last.id
    return {
        "conv": conversation, "role": role_of(conversation), "roles": list(BUILTIN_ROLES.values()),
        "messages": messages, "first_index": first_index, "streaming": streaming,
        "no_reply_text": no_reply_text, "retry_text": retry_text, "retry_for": retry_for,
        "is_empty": before is None and streaming is None and not any(m.role == "user" for m in messages),
    }


async def sidebar_view(store: Store, user: str, query: str, cursor: str | None) -> dict[str, Any]:
    """Conversations newest-activity first, a page at a time, or those matching `query`."""
    if query.strip():
        sessions = await store.search_conversations(user, query, limit=SESSION_PAGE)
        return {"sessions": sessions, "next_cursor": None, "query": query, "cursor": None}
    sessions, next_cursor = await store.list_conversations(user, limit=SESSION_PAGE, cursor=parse_cursor(cursor))
    return {"sessions": sessions, "next_cursor": format_cursor(next_cursor), "query": "", "cursor": cursor}


async def fresh_conversation(store: Store, user: str) -> Conversation:
    """A new conversation, unless the newest one is still untouched: then that one (no piles of empties)."""
    recent, _ = await store.list_conversations(user, limit=1)
    if recent and recent[0].message_count <= 1 and not recent[0].running_turn_id and not recent[0].title:
        return recent[0]
    return await store.create_conversation(user, DEFAULT_ROLE, t("welcome", "zh"))


async def pane_view(request: Request, store: Store, turns: TurnManager, conversation: Conversation,
                    before: int | None = None) -> dict[str, Any]:
    """Everything the conversation pane (header, messages, composer) shows."""
    settings = request.app.state.settings
    values = await conversation_view(store, turns, conversation, before)
    values.update(max_chars=settings.max_message_chars, demo=settings.demo_mode, draft="", form_error="",
                  active_id=conversation.id, current_path=f"/c/{conversation.id}")
    return values


async def render_conversation(
    request: Request, conversation: Conversation, user: str, store: Store, turns: TurnManager, lang: Lang,
    *, before: int | None = None, query: str = "", cursor: str | None = None, editing_id: str = "",
    draft: str = "", form_error: str = "", deleted: str | None = None, status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """The conversation pane for HTMX, the whole page (with the sidebar) otherwise."""
    values = await pane_view(request, store, turns, conversation, before)
    values.update(draft=draft, form_error=form_error)
    if is_htmx(request):
        return render(request, "partials/conversation.html", lang, status=status, headers=headers, partial=True,
                      **values)
    values.update(await sidebar_view(store, user, query, cursor))
    values.update(editing_id=editing_id, refresh_seconds=REFRESH_SECONDS if values["streaming"] else 0,
                  deleted_id=deleted)
    return render(request, "chat.html", lang, status=status, headers=headers, **values)


# pages ------------------------------------------------------------------------------

@router.get("/")
async def home(user: CurrentUser, store: StoreDep,
               deleted: Annotated[str | None, Query(pattern=CONVERSATION_ID)] = None) -> Response:
    """The most recent conversation, or a new one."""
    recent, _ = await store.list_conversations(user, limit=1)
    conversation = recent[0] if recent else await store.create_conversation(user, DEFAULT_ROLE, t("welcome", "zh"))
    return see_other(f"/c/{conversation.id}" + (f"?deleted={deleted}" if deleted else ""))


@router.get("/c/{session_id}")
async def conversation_page(
    request: Request, conversation: OwnedConversation, user: CurrentUser, store: StoreDep, turns: TurnsDep,
    lang: LangDep, before: Annotated[int | None, Query(ge=0)] = None,
    q: Annotated[str, Query(max_length=200)] = "", cursor: str | None = None,
    deleted: Annotated[str | None, Query(pattern=CONVERSATION_ID)] = None,
) -> Response:
    """`deleted` (set after a delete without JavaScript) shows the Undo toast that HTMX would have."""
    return await render_conversation(request, conversation, user, store, turns, lang,
                                     before=before, query=q, cursor=cursor, deleted=deleted)


@router.post("/c")
async def new_conversation(request: Request, user: CurrentUser, store: StoreDep, turns: TurnsDep,
                           lang: LangDep) -> Response:
    conversation = await fresh_conversation(store, user)
    if not is_htmx(request):
        return see_other(f"/c/{conversation.id}")
    headers = {"HX-Push-Url": f"/c/{conversation.id}", "HX-Trigger-After-Settle": "sessions-changed"}
    return await render_conversation(request, conversation, user, store, turns, lang, headers=headers)


@router.get("/sidebar")
async def sidebar(request: Request, user: CurrentUser, store: StoreDep, lang: LangDep,
                  q: Annotated[str, Query(max_length=200)] = "", cursor: str | None = None) -> Response:
    """The session list (first page or search results), or the next page of it after `cursor`."""
    if not is_htmx(request):
        return see_other("/")
    values = await sidebar_view(store, user, q, cursor)
    name = "partials/session_items.html" if cursor and not q.strip() else "partials/session_list.html"
    return render(request, name, lang, active_id=active_id(request), current_path=current_path(request), **values)


@router.post("/lang")
async def switch_language(lang: FormText = "", next: FormText = "/") -> Response:
    """Remember the language switch in a cookie; `next` may only be one of our pages."""
    response = see_other(next if LOCAL_PAGE.fullmatch(next) else "/")
    if lang in ("zh", "en"):
        response.set_cookie(LANG_COOKIE, lang, max_age=LANG_COOKIE_MAX_AGE, httponly=True, samesite="lax")
    return response


# a conversation's messages ----------------------------------------------------------

@router.get("/c/{session_id}/messages")
async def older_messages(request: Request, conversation: OwnedConversation, store: StoreDep, lang: LangDep,
                         before: Annotated[int, Query(ge=0)]) -> Response:
    """The page of messages before list index `before` (scrolling up)."""
    if not is_htmx(request):
        return see_other(f"/c/{conversation.id}?before={before}")
    messages, first_index, _ = await store.message_page(conversation.id, limit=MESSAGE_PAGE, before=before)
    return render(request, "partials/message_page.html", lang, conv=conversation, messages=messages,
                  first_index=first_index)


@router.post("/c/{session_id}/messages")
async def send_message(request: Request, conversation: OwnedConversation, user: CurrentUser, store: StoreDep,
                       turns: TurnsDep, lang: LangDep, message: FormText = "") -> Response:
    """Start a turn: the user's bubble plus a reply bubble that streams (or, without JS, a redirect)."""
    text = message.replace("\r\n", "\n")  # browsers send textarea newlines as CRLF
    was_empty = conversation.message_count <= 1 and not conversation.title
    try:
        run = await turns.start_turn(conversation.id, user, text, role_of(conversation), lang)
    except ChatError as exc:
        if is_htmx(request):
            raise
        return await render_conversation(request, conversation, user, store, turns, lang, draft=text,
                                         form_error=t(exc.key, lang, **exc.params), status=exc.status)
    if not is_htmx(request):
        return see_other(f"/c/{conversation.id}")
    conversation = run.conversation
    return render(
        request, "partials/turn_started.html", lang, headers={"HX-Trigger": "sessions-changed"},
        conv=conversation, user_message=run.user_message, was_empty=was_empty,
        streaming={"turn_id": run.id, "after": 0, "text": ""},
    )


@router.post("/c/{session_id}/stop")
async def stop_reply(request: Request, conversation: OwnedConversation, user: CurrentUser,
                     turns: TurnsDep) -> Response:
    """Stop the reply being written; what it has so far is kept."""
    await turns.stop_reply(conversation)
    return Response(status_code=204) if is_htmx(request) else see_other(f"/c/{conversation.id}")


@router.post("/c/{session_id}/role")
async def switch_role(request: Request, conversation: OwnedConversation, store: StoreDep, lang: LangDep,
                      role: FormText = "") -> Response:
    chosen = get_role(role)
    await store.update_conversation(conversation, title=None, role=chosen.id)
    conversation.role = chosen.id
    if not is_htmx(request):
        return see_other(f"/c/{conversation.id}")
    return render(request, "partials/role_selector.html", lang, conv=conversation, role=chosen,
                  roles=list(BUILTIN_ROLES.values()))


# the sidebar's items: rename, delete, undo --------------------------------------------

@router.get("/c/{session_id}/item")
async def session_item(request: Request, conversation: OwnedConversation, lang: LangDep) -> Response:
    return render(request, "partials/session_item.html", lang, c=conversation, active_id=active_id(request))


@router.get("/c/{session_id}/title/edit")
async def edit_title(request: Request, conversation: OwnedConversation, user: CurrentUser, store: StoreDep,
                     turns: TurnsDep, lang: LangDep) -> Response:
    """The item as an inline rename form (without JS: the page with that form in its sidebar)."""
    if is_htmx(request):
        return render(request, "partials/session_item_edit.html", lang, c=conversation,
                      active_id=active_id(request))
    return await render_conversation(request, conversation, user, store, turns, lang, editing_id=conversation.id)


@router.post("/c/{session_id}/title")
async def rename(request: Request, conversation: OwnedConversation, store: StoreDep, lang: LangDep,
                 title: FormText = "") -> Response:
    clean = clean_title(title)
    if not clean:
        raise EmptyTitle()
    await store.update_conversation(conversation, title=clean, role=None)
    conversation.title = clean
    if not is_htmx(request):
        return see_other(f"/c/{conversation.id}")
    return render(request, "partials/renamed.html", lang, c=conversation, conv=conversation,
                  active_id=active_id(request))


@router.post("/c/{session_id}/delete")
async def delete(request: Request, conversation: OwnedConversation, user: CurrentUser, store: StoreDep,
                 turns: TurnsDep, lang: LangDep) -> Response:
    """Delete, keeping a copy for the undo toast; leaving the open conversation opens the next one."""
    await turns.stop_reply(conversation)
    await store.delete_undoably(conversation, keep_seconds=UNDO_SECONDS)
    if not is_htmx(request):
        back = local_referer(request, avoid=conversation.id)
        return see_other(f"{back}?deleted={conversation.id}" if back != "/" else f"/?deleted={conversation.id}")
    title = conversation.title or t("ui.untitled", lang)
    values: dict[str, Any] = {"text": t("ui.deleted", lang, title=title), "undo_url": f"/c/{conversation.id}/restore"}
    headers: dict[str, str] = {}
    if active_id(request) == conversation.id:  # the open one: open the next, out of band
        recent, _ = await store.list_conversations(user, limit=1)
        following = recent[0] if recent else await fresh_conversation(store, user)
        values.update(await pane_view(request, store, turns, following), following=following)
        headers = {"HX-Push-Url": f"/c/{following.id}", "HX-Trigger-After-Settle": "sessions-changed"}
    return render(request, "partials/deleted.html", lang, headers=headers, **values)


@router.post("/c/{session_id}/restore")
async def undo_delete(request: Request, session_id: str, user: CurrentUser, store: StoreDep,
                      lang: LangDep) -> Response:
    conversation = await store.undo_delete(user, check_id(session_id))
    if conversation is None:
        raise UndoExpired()
    if not is_htmx(request):
        return see_other(f"/c/{conversation.id}")
    title = conversation.title or t("ui.untitled", lang)
    return render(request, "partials/toast.html", lang, headers={"HX-Trigger": "sessions-changed"},
                  text=t("ui.restored", lang, title=title))
