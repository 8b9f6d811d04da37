"""The JSON API: the seed's /chat endpoints, kept as they were, and the resource API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from ..deps import (
    CurrentUser, LangDep, OwnedConversation, SeedUser, StoreDep, TurnsDep, check_id, load_owned,
)
from ..errors import EmptyTitle, InvalidId
from ..i18n import t
from ..roles import BUILTIN_ROLES, get_role
from ..store import clean_title
from ..schemas import (
    HistoryMessage, HistoryOut, MessageOut, MessagePage, RoleOut, SessionIn, SessionOut, SessionPage,
    SessionPatch, StartOut, TurnIn, TurnOut,
)

router = APIRouter()


def parse_cursor(cursor: str | None) -> tuple[float, str] | None:
    """`{score}_{session_id}` from a previous page's next_cursor."""
    if not cursor:
        return None
    score, _, session_id = cursor.partition("_")
    try:
        return float(score), check_id(session_id)
    except ValueError:
        raise InvalidId() from None


def format_cursor(cursor: tuple[float, str] | None) -> str | None:
    return f"{cursor[0]!r}_{cursor[1]}" if cursor else None


# the seed's API ---------------------------------------------------------------

@router.post("/chat/start", response_model=StartOut, tags=["seed"])
async def start_chat(user: SeedUser, store: StoreDep, lang: LangDep) -> StartOut:
    """Create a conversation; the stored welcome message is the seed's (Chinese)."""
    welcome = t("welcome", "zh")
    conversation = await store.create_conversation(user, get_role(None).id, welcome)
    return StartOut(
        session_id=conversation.id, user_id=user, message=t("session_created", lang), welcome_message=welcome
    )


@router.get("/chat/history", response_model=HistoryOut, tags=["seed"])
async def chat_history(user: SeedUser, store: StoreDep, session_id: str) -> HistoryOut:
    conversation = await load_owned(store, session_id, user)
    messages = await store.all_messages(conversation.id)
    return HistoryOut(
        session_id=conversation.id,
        messages=[HistoryMessage(role=m.role, content=m.content, timestamp=m.ts) for m in messages],
        total=len(messages),
    )


# resources --------------------------------------------------------------------

@router.get("/api/roles", response_model=list[RoleOut], tags=["roles"])
async def list_roles() -> list[RoleOut]:
    return [
        RoleOut(id=r.id, name_zh=r.name_zh, name_en=r.name_en,
                description_zh=r.description_zh, description_en=r.description_en)
        for r in BUILTIN_ROLES.values()
    ]


@router.get("/api/sessions", response_model=SessionPage, tags=["sessions"])
async def list_sessions(
    user: CurrentUser,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
    q: Annotated[str | None, Query(max_length=200, description="search titles and messages")] = None,
) -> SessionPage:
    if q and q.strip():
        found = await store.search_conversations(user, q, limit=limit)
        return SessionPage(items=[SessionOut.of(c) for c in found], next_cursor=None)
    conversations, next_cursor = await store.list_conversations(user, limit=limit, cursor=parse_cursor(cursor))
    return SessionPage(items=[SessionOut.of(c) for c in conversations], next_cursor=format_cursor(next_cursor))


@router.post("/api/sessions", response_model=SessionOut, status_code=201, tags=["sessions"])
async def create_session(user: CurrentUser, store: StoreDep, body: SessionIn | None = None) -> SessionOut:
    body = body or SessionIn()
    role = get_role(body.role)
    title = clean_title(body.title or "")
    conversation = await store.create_conversation(user, role.id, t("welcome", "zh"), title=title)
    return SessionOut.of(conversation)


@router.get("/api/sessions/{session_id}", response_model=SessionOut, tags=["sessions"])
async def get_session(conversation: OwnedConversation) -> SessionOut:
    return SessionOut.of(conversation)


@router.patch("/api/sessions/{session_id}", response_model=SessionOut, tags=["sessions"])
async def update_session(conversation: OwnedConversation, body: SessionPatch, store: StoreDep) -> SessionOut:
    title = clean_title(body.title) if body.title is not None else None
    if title is not None and not title:
        raise EmptyTitle()
    role = get_role(body.role).id if body.role is not None else None
    await store.update_conversation(conversation, title=title, role=role)
    conversation.title = title if title is not None else conversation.title
    conversation.role = role or conversation.role
    return SessionOut.of(conversation)


@router.delete("/api/sessions/{session_id}", status_code=204, tags=["sessions"])
async def delete_session(conversation: OwnedConversation, store: StoreDep, turns: TurnsDep) -> Response:
    """Delete a conversation; a reply still being written is stopped first."""
    await turns.stop_reply(conversation)
    await store.delete_conversation(conversation)
    return Response(status_code=204)


@router.get("/api/sessions/{session_id}/messages", response_model=MessagePage, tags=["sessions"])
async def list_messages(
    conversation: OwnedConversation,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=0)] = None,
) -> MessagePage:
    messages, first_index, total = await store.message_page(conversation.id, limit=limit, before=before)
    return MessagePage(
        items=[MessageOut.of(m) for m in messages], total=total, has_more=first_index > 0, first_index=first_index
    )


@router.post("/api/sessions/{session_id}/turns", response_model=TurnOut, status_code=202, tags=["turns"])
async def create_turn(
    conversation: OwnedConversation, body: TurnIn, turns: TurnsDep, lang: LangDep, request: Request
) -> TurnOut:
    role = get_role(body.role or conversation.role)
    run = await turns.start_turn(conversation.id, conversation.user_id, body.message, role, lang)
    return TurnOut(turn_id=run.id, events_url=str(request.url_for("turn_events", turn_id=run.id).path))


@router.post("/api/turns/{turn_id}/cancel", status_code=202, tags=["turns"])
async def cancel_turn(turn_id: str, user: CurrentUser, turns: TurnsDep) -> dict[str, str]:
    turn = await turns.turn_for(check_id(turn_id), user)
    await turns.cancel(turn)
    return {"turn_id": turn.id, "status": "cancelling" if turn.status == "running" else turn.status}
