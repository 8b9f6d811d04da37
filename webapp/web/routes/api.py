"""The JSON API: the seed's /chat endpoints, kept as they were, and the resource API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response

from webapp.base.i18n import t
from webapp.base.ids import check_id
from webapp.core.pagination import MAX_INDEX
from webapp.web.deps import (
    AccountsDep,
    ConversationsDep,
    CreatingUser,
    CurrentUser,
    LangDep,
    OwnedConversation,
    ReaderDep,
    SeedUser,
    WriterDep,
    client_ip,
    seed_user_of,
    services,
)
from webapp.web.htmx import lang_of
from webapp.web.routing import documented_query
from webapp.web.schemas import (
    HistoryMessage,
    HistoryOut,
    MessageEdit,
    MessageOut,
    MessagePage,
    NewTokenOut,
    SessionIn,
    SessionOut,
    SessionPage,
    SessionPatch,
    StartOut,
    TokenIn,
    TokenOut,
    TurnIn,
    TurnOut,
    VersionIn,
)

router = APIRouter()

RequestId = Annotated[str | None, Header(alias="Idempotency-Key", max_length=100,
                                         description="a client request id: a repeat starts nothing new")]


# the seed's API ---------------------------------------------------------------

SEED_USER_QUERY = documented_query(("user_id", "query", False, "the caller's own id (the seed API names it)"))


@router.post("/chat/start", response_model=StartOut, tags=["seed"], openapi_extra=SEED_USER_QUERY)
async def start_chat(request: Request) -> Response:
    """Create a conversation; the stored welcome message is the seed's (Chinese)."""
    # every seed client's first call: a plain route (routes/plain.py) that reads its caller by hand; this
    # declaration only documents it (FastAPI's solving and its response model's were ~40 µs of its CPU)
    user = await seed_user_of(request, creating=True)
    conversation, lang = await services(request).conversations.create(user), lang_of(request)
    started = StartOut(session_id=conversation.id, user_id=user, message=t("session_created", lang),
                       welcome_message=t("welcome", "zh"))
    return Response(started.model_dump_json(), media_type="application/json")


@router.get("/chat/history", response_model=HistoryOut, tags=["seed"])
async def chat_history(user: SeedUser, conversations: ConversationsDep, session_id: str) -> HistoryOut:
    conversation = await conversations.owned(session_id, user)
    messages = await conversations.history(conversation)
    return HistoryOut(
        session_id=conversation.id,
        messages=[HistoryMessage(role=m.role, content=m.content, timestamp=m.ts) for m in messages],
        total=len(messages),
    )


# resources --------------------------------------------------------------------

@router.get("/api/sessions", response_model=SessionPage, tags=["sessions"])
async def list_sessions(
    user: CurrentUser,
    conversations: ConversationsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
    q: Annotated[str | None, Query(max_length=200, description="search titles and messages; filters "
                                                               "`in:archived`, `is:pinned`, `folder:name`")] = None,
    archived: Annotated[bool, Query(description="the archive (newest archived first) instead")] = False,
    folder: Annotated[str | None, Query(max_length=36, description="that folder's conversations")] = None,
) -> SessionPage:
    """Newest activity first, archived ones left out (they are `archived=true`'s)."""
    found = await conversations.browse(user, query=q or "", cursor=cursor, limit=limit, archived=archived,
                                       folder=folder or "")
    return SessionPage(items=[SessionOut.of(c) for c in found.items], next_cursor=found.next_cursor)


@router.post("/api/sessions", response_model=SessionOut, status_code=201, tags=["sessions"])
async def create_session(user: CreatingUser, conversations: ConversationsDep,
                         body: SessionIn | None = None) -> SessionOut:
    body = body or SessionIn()
    return SessionOut.of(await conversations.create(user, role_id=body.role, title=body.title or ""))


@router.get("/api/sessions/{session_id}", response_model=SessionOut, tags=["sessions"])
async def get_session(conversation: OwnedConversation) -> SessionOut:
    return SessionOut.of(conversation)


@router.patch("/api/sessions/{session_id}", response_model=SessionOut, tags=["sessions"])
async def update_session(conversation: OwnedConversation, body: SessionPatch,
                         conversations: ConversationsDep) -> SessionOut:
    """Rename, switch role or model; pin, archive, move into a folder (`folder_id`)."""
    conversation = await conversations.update(conversation, title=body.title, role_id=body.role, model=body.model,
                                              pinned=body.pinned, archived=body.archived,
                                              folder_id=(body.folder_id or "") if "folder_id" in body.model_fields_set
                                              else None)
    return SessionOut.of(conversation)


@router.delete("/api/sessions/{session_id}", status_code=204, tags=["sessions"])
async def delete_session(conversation: OwnedConversation, conversations: ConversationsDep) -> Response:
    """Delete a conversation; a reply still being written is stopped first."""
    await conversations.delete(conversation)
    return Response(status_code=204)


@router.get("/api/sessions/{session_id}/messages", response_model=MessagePage, tags=["sessions"])
async def list_messages(
    conversation: OwnedConversation,
    conversations: ConversationsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=0, le=MAX_INDEX)] = None,
) -> MessagePage:
    """The active branch, a page at a time; each message says which of its versions it is."""
    messages, first_index, total = await conversations.message_page(conversation, limit=limit, before=before)
    versions = await conversations.versions_of(conversation)
    return MessagePage(
        items=[MessageOut.of(m, first_index + n, versions.get(first_index + n, (1, 1)))
               for n, m in enumerate(messages)],
        total=total, has_more=first_index > 0, first_index=first_index,
    )


@router.post("/api/sessions/{session_id}/messages/{index}/version", response_model=SessionOut,
             tags=["sessions"])
async def choose_version(conversation: OwnedConversation, index: Annotated[int, Path(ge=1, le=MAX_INDEX)],
                         body: VersionIn, conversations: ConversationsDep) -> SessionOut:
    """Show version `version` (1-based) of the message at list `index`; later turns see that branch."""
    return SessionOut.of(await conversations.switch_version(conversation, index, body.version))


def turn_out(request: Request, turn_id: str) -> TurnOut:
    return TurnOut(turn_id=turn_id, events_url=str(request.url_for("turn_events", turn_id=turn_id).path))


@router.post("/api/sessions/{session_id}/turns", response_model=TurnOut, status_code=202, tags=["turns"])
async def create_turn(
    session_id: Annotated[str, Path()], body: TurnIn, user: CurrentUser, request: Request, request_id: RequestId = None,
) -> TurnOut:
    """Send a message. With an `Idempotency-Key`, a repeated request starts nothing and answers the same turn.
    Files go first to `POST /api/files`; their ids in `attachments` (422 for images to a model that takes none)."""
    writer, lang = services(request).turn_writer, lang_of(request)  # (by hand: see start_chat)
    # ownership is checked in the round trip that takes the conversation's lock (404 for someone else's, as for
    # a missing one), as /chat/stream's: no read of its own (a JSON API turn took one more round trip)
    started = await writer.start_turn(check_id(session_id), user, body.message, body.role, lang, client_ip(request),
                                      request_id=request_id, attachments=body.attachments)
    return turn_out(request, started.id)


@router.post("/api/turns/{turn_id}/regenerate", response_model=TurnOut, status_code=202, tags=["turns"])
async def regenerate(turn_id: str, user: CurrentUser, reader: ReaderDep, writer: WriterDep, lang: LangDep,
                     request: Request, request_id: RequestId = None) -> TurnOut:
    """A new reply in place of this turn's (the last); the earlier reply stays as a version.
    After a failed turn that saved no reply, the same message is answered again (Retry)."""
    turn = await reader.owned_turn(check_id(turn_id), user)
    started = await writer.regenerate(turn.session_id, user, lang, client_ip(request), request_id=request_id,
                                      reply_id=turn.message_id or None)
    return turn_out(request, started.id)


@router.patch("/api/messages/{message_id}", response_model=TurnOut, status_code=202, tags=["turns"])
async def edit_message(message_id: Annotated[str, Path(max_length=40)], body: MessageEdit, user: CurrentUser,
                       conversations: ConversationsDep, writer: WriterDep, lang: LangDep, request: Request,
                        request_id: RequestId = None) -> TurnOut:
    """Edit a user message and resend it: the old version and what followed it stay reachable."""
    conversation = await conversations.of_message(message_id, user)
    started = await writer.edit(conversation.id, user, message_id, body.content, lang, client_ip(request),
                                request_id=request_id, attachments=body.attachments)
    return turn_out(request, started.id)


@router.post("/api/turns/{turn_id}/cancel", status_code=202, tags=["turns"])
async def cancel_turn(turn_id: str, user: CurrentUser, reader: ReaderDep, writer: WriterDep) -> dict[str, str]:
    turn = await reader.owned_turn(check_id(turn_id), user)
    await writer.cancel(turn)
    return {"turn_id": turn.id, "status": "cancelling" if turn.status == "running" else turn.status}


# personal API tokens ------------------------------------------------------------

@router.get("/api/tokens", response_model=list[TokenOut], tags=["tokens"])
async def list_tokens(user: CurrentUser, accounts: AccountsDep) -> list[TokenOut]:
    return [TokenOut.of(token) for token in await accounts.tokens(user)]


@router.post("/api/tokens", response_model=NewTokenOut, status_code=201, tags=["tokens"])
async def create_token(user: CreatingUser, accounts: AccountsDep, body: TokenIn | None = None) -> NewTokenOut:
    """A token for `Authorization: Bearer`; the token is in this answer only, the server keeps its hash."""
    token_id, token = await accounts.create_token(user, (body or TokenIn()).name)
    return NewTokenOut(id=token_id, token=token)


@router.delete("/api/tokens/{token_id}", status_code=204, tags=["tokens"])
async def revoke_token(token_id: str, user: CurrentUser, accounts: AccountsDep) -> Response:
    await accounts.revoke_token(user, token_id)
    return Response(status_code=204)
