"""Request-scoped dependencies: who is calling, in which language, and what they may touch.

All are `async def`: FastAPI runs plain `def` dependencies in a thread pool, which
costs a thread hop per request and showed up as the top cost under load.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated

from fastapi import Depends, Path, Query, Request

from .chat import TurnManager
from .errors import ForbiddenUser, InvalidId, InvalidUserId, SessionNotFound
from .i18n import LANG_COOKIE, Lang, pick_lang
from .identity import USER_ID_PATTERN
from .store import Conversation, Store

ID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_turns(request: Request) -> TurnManager:
    return request.app.state.turns


def lang_of(request: Request) -> Lang:
    """The remembered switch (cookie), else Accept-Language, else Chinese."""
    return pick_lang(request.headers.get("accept-language"), request.cookies.get(LANG_COOKIE))


async def get_lang(request: Request) -> Lang:
    return lang_of(request)


StoreDep = Annotated[Store, Depends(get_store)]
TurnsDep = Annotated[TurnManager, Depends(get_turns)]
LangDep = Annotated[Lang, Depends(get_lang)]


async def _resolve_user(request: Request, store: Store, claimed: str | None) -> str:
    """The caller's identity: the signed cookie, or a new one (claiming `claimed` if nobody holds it).

    A `user_id` that differs from the cookie, or that another identity already holds,
    is refused with 403 and reveals nothing else.
    """
    if claimed is not None and not USER_ID_PATTERN.fullmatch(claimed):
        raise InvalidUserId()
    identity: str | None = request.state.identity
    if identity:
        if claimed and claimed != identity:
            raise ForbiddenUser()
        return identity
    if claimed:
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


async def current_user(request: Request, store: StoreDep) -> str:
    return await _resolve_user(request, store, None)


async def seed_user(
    request: Request,
    store: StoreDep,
    user_id: Annotated[str | None, Query(description="the caller's own id (the seed API names it)")] = None,
) -> str:
    return await _resolve_user(request, store, user_id or None)


CurrentUser = Annotated[str, Depends(current_user)]
SeedUser = Annotated[str, Depends(seed_user)]


def check_id(value: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise InvalidId()
    return value


async def load_owned(store: Store, session_id: str, user: str) -> Conversation:
    """The conversation if the user owns it; 404 for unknown and for someone else's alike."""
    conversation = await store.get_conversation(check_id(session_id))
    if conversation is None or conversation.user_id != user:
        raise SessionNotFound()
    return conversation


async def owned_conversation(session_id: Annotated[str, Path()], user: CurrentUser, store: StoreDep) -> Conversation:
    return await load_owned(store, session_id, user)


OwnedConversation = Annotated[Conversation, Depends(owned_conversation)]
