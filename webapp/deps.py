"""Request-scoped dependencies: who is calling, in which language, and what they may touch.

Routes list these as typed parameters (`CurrentUser`, `OwnedConversation`, ...), so
no route can forget an ownership check. All are `async def`: FastAPI runs plain `def`
dependencies in a thread pool, which costs a thread hop per request and showed up as
the top cost under load.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Path, Query, Request

from .conversations import Conversations
from .errors import ForbiddenUser
from .htmx import lang_of
from .i18n import Lang
from .ids import check_user_id
from .models import Conversation
from .store import Store
from .turn_reader import TurnReader
from .turn_writer import TurnWriter


async def get_conversations(request: Request) -> Conversations:
    return request.app.state.conversations


async def get_writer(request: Request) -> TurnWriter:
    return request.app.state.turn_writer


async def get_reader(request: Request) -> TurnReader:
    return request.app.state.turn_reader


async def get_lang(request: Request) -> Lang:
    return lang_of(request)


ConversationsDep = Annotated[Conversations, Depends(get_conversations)]
WriterDep = Annotated[TurnWriter, Depends(get_writer)]
ReaderDep = Annotated[TurnReader, Depends(get_reader)]
LangDep = Annotated[Lang, Depends(get_lang)]


async def _resolve_user(request: Request, claimed: str | None) -> str:
    """The caller's identity: the signed cookie, or a new one (claiming `claimed` if nobody holds it).

    A `user_id` that differs from the cookie, or that another identity already holds,
    is refused with 403 and reveals nothing else.
    """
    if claimed is not None:
        check_user_id(claimed)
    identity: str | None = request.state.identity
    if identity:
        if claimed and claimed != identity:
            raise ForbiddenUser()
        return identity
    if claimed:
        store: Store = request.app.state.store
        if not await store.claim_user(claimed):
            raise ForbiddenUser()
        request.state.new_identity = claimed
        request.state.identity = claimed
        return claimed
    # 96 random bits nobody can guess: claimed by the first write (create_conversation), not here
    identity = "u_" + secrets.token_hex(12)
    request.state.new_identity = identity
    request.state.identity = identity
    return identity


async def current_user(request: Request) -> str:
    return await _resolve_user(request, None)


async def seed_user(
    request: Request,
    user_id: Annotated[str | None, Query(description="the caller's own id (the seed API names it)")] = None,
) -> str:
    return await _resolve_user(request, user_id or None)


CurrentUser = Annotated[str, Depends(current_user)]
SeedUser = Annotated[str, Depends(seed_user)]


async def owned_conversation(
    session_id: Annotated[str, Path()], user: CurrentUser, conversations: ConversationsDep
) -> Conversation:
    return await conversations.owned(session_id, user)


OwnedConversation = Annotated[Conversation, Depends(owned_conversation)]
