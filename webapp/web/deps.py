"""Request-scoped dependencies: who is calling, in which language, and what they may touch.

Routes list these as typed parameters (`CurrentUser`, `OwnedConversation`, ...), so
no route can forget an ownership check; the plain routes (routes/plain.py) call the same
functions by hand (`current_user`, `owned_conversation_of`). All are `async def`: FastAPI runs plain `def`
dependencies in a thread pool, which costs a thread hop per request and showed up as
the top cost under load.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from starlette.datastructures import State

from webapp.base.errors import BadToken, ForbiddenUser, SeedApiOff, SignInRequired
from webapp.base.i18n import Lang
from webapp.base.ids import check_user_id
from webapp.base.models import Conversation
from webapp.core.accounts import Accounts
from webapp.core.admin import Admin
from webapp.core.attachments import Uploads
from webapp.core.conversations import Conversations
from webapp.core.portability import Portability
from webapp.core.roles import Role, RoleBook
from webapp.core.sharing import Shares
from webapp.core.spending import Spending
from webapp.core.turns.reader import TurnReader
from webapp.core.turns.writer import TurnWriter
from webapp.storage.store import Store
from webapp.web.csrf import SIGNIN_COOKIE, bearer_token
from webapp.web.htmx import lang_of
from webapp.web.peers import trusted_proxy_user


def services(request: Request) -> State:
    """The app's services, made in the lifespan (main.py): what the getters below hand to routes as
    dependencies, for the plain routes that read them by hand (routes/plain.py)."""
    return request.app.state


async def get_conversations(request: Request) -> Conversations:
    return request.app.state.conversations


async def get_writer(request: Request) -> TurnWriter:
    return request.app.state.turn_writer


async def get_reader(request: Request) -> TurnReader:
    return request.app.state.turn_reader


async def get_accounts(request: Request) -> Accounts:
    return request.app.state.accounts


async def get_lang(request: Request) -> Lang:
    return lang_of(request)


async def get_roles(request: Request) -> RoleBook:
    return request.app.state.roles


async def get_shares(request: Request) -> Shares:
    return request.app.state.shares


async def get_portability(request: Request) -> Portability:
    return request.app.state.portability


async def get_spending(request: Request) -> Spending:
    return request.app.state.spending


def get_uploads(request: Request) -> Uploads:
    return request.app.state.uploads


UploadsDep = Annotated[Uploads, Depends(get_uploads)]


RolesDep = Annotated[RoleBook, Depends(get_roles)]
SharesDep = Annotated[Shares, Depends(get_shares)]
PortabilityDep = Annotated[Portability, Depends(get_portability)]
SpendingDep = Annotated[Spending, Depends(get_spending)]
ConversationsDep = Annotated[Conversations, Depends(get_conversations)]
WriterDep = Annotated[TurnWriter, Depends(get_writer)]
ReaderDep = Annotated[TurnReader, Depends(get_reader)]
LangDep = Annotated[Lang, Depends(get_lang)]
AccountsDep = Annotated[Accounts, Depends(get_accounts)]


def client_ip(request: Request) -> str:
    """The caller's address (a trusted proxy's X-Forwarded-For already applied)."""
    return request.client.host if request.client else ""


async def _resolve_user(request: Request, claimed: str | None, *, creating: bool = False) -> str:
    """Who is calling: an API token, a sign-in, a trusted proxy's user, or an anonymous cookie.

    Anonymous mode: the signed cookie, or a new identity (claiming `claimed`, a seed client's
    user_id, if nobody holds it) — but only a request that creates something makes one, and
    new identities are limited per IP. A `user_id` that differs from the caller, or that
    another identity already holds, is refused with 403 and reveals nothing else.
    """
    if claimed is not None:
        check_user_id(claimed)
    app = request.app.state
    settings = app.settings
    token = bearer_token(request)
    identity: str | None
    if token is not None:
        identity = await app.accounts.user_of_token(token) if token else None
        if identity is None or (settings.auth != "anonymous" and not identity.startswith("a_")):
            raise BadToken()  # (a token of an anonymous identity is no key to an accounts instance)
        request.state.credential = app.accounts.credential_of(token)  # (a stream ends with it: revocations.py)
    elif settings.auth == "accounts":
        cookie = request.cookies.get(SIGNIN_COOKIE, "")
        identity = await app.accounts.user_of_signin(cookie)
        if identity is None:
            raise SignInRequired()
        request.state.credential = app.accounts.credential_of(cookie)
    elif settings.auth == "proxy":
        name = trusted_proxy_user(request)
        if not name:
            raise SignInRequired()
        identity = await app.accounts.proxy_user(name)
        request.state.credential = app.accounts.user_credential(identity)  # (a disable ends its streams)
    else:
        identity = request.state.identity
    if identity:
        if claimed and claimed != identity:
            raise ForbiddenUser()
        request.state.identity = identity
        return identity
    if claimed:
        store: Store = app.store
        if not creating:
            # reading needs no identity: nothing is claimed, and nothing of anyone's is found
            if await store.identity_exists(claimed):
                raise ForbiddenUser()
            return claimed
        await app.limits.hit((app.new_identity_limit, client_ip(request)))
        if not await store.claim_user(claimed):
            raise ForbiddenUser()
        request.state.new_identity = claimed
        request.state.identity = claimed
        return claimed
    if creating:
        await app.limits.hit((app.new_identity_limit, client_ip(request)))
    # 96 random bits nobody can guess: claimed by the first write (create_conversation), not here
    identity = "u_" + secrets.token_hex(12)
    request.state.new_identity = identity
    request.state.identity = identity
    return identity


def is_newcomer(request: Request) -> bool:
    """The caller's identity was made by this request (a first visit): nothing of theirs is stored."""
    return bool(getattr(request.state, "new_identity", None))


async def current_user(request: Request) -> str:
    return await _resolve_user(request, None)


async def creating_user(request: Request) -> str:
    """The caller of a request that creates something: a new anonymous identity counts per IP."""
    return await _resolve_user(request, None, creating=True)


def _seed_mode(request: Request) -> None:
    mode = request.app.state.settings.seed_api_mode
    if mode == "off":
        raise SeedApiOff()
    if mode == "token" and not bearer_token(request):
        raise BadToken()


async def seed_user_of(request: Request, *, creating: bool = False) -> str:
    """The seed API's caller, its `user_id` read from the query by hand (`creating`: a call that creates
    something, as /chat/start): for the plain routes (routing.documented_query describes the field) and
    the `seed_user` dependency alike."""
    _seed_mode(request)
    user_id = request.query_params.get("user_id")
    return await _resolve_user(request, user_id or None, creating=creating)


async def seed_user(
    request: Request,
    user_id: Annotated[str | None, Query(description="the caller's own id (the seed API names it)")] = None,
) -> str:
    # (`user_id` is declared for the API's documentation; seed_user_of reads the same value)
    return await seed_user_of(request)


CurrentUser = Annotated[str, Depends(current_user)]
CreatingUser = Annotated[str, Depends(creating_user)]
SeedUser = Annotated[str, Depends(seed_user)]


async def get_client_ip(request: Request) -> str:
    return client_ip(request)


ClientIp = Annotated[str, Depends(get_client_ip)]  # (hot routes read client_ip(request): a dependency costs more)


async def owned_conversation_of(request: Request, session_id: str, user: str | None = None) -> Conversation:
    """The one ownership check of a conversation, for FastAPI's routes (`OwnedConversation`) and the
    plain routes alike: the conversation if the caller (`user`, when already resolved) owns it; a 404
    for someone else's, exactly as for a missing one."""
    if user is None:
        user = await current_user(request)
    return await request.app.state.conversations.owned(session_id, user)


async def owned_conversation(request: Request, session_id: Annotated[str, Path()], user: CurrentUser) -> Conversation:
    return await owned_conversation_of(request, session_id, user)


OwnedConversation = Annotated[Conversation, Depends(owned_conversation)]


async def owned_role(role_id: Annotated[str, Path(max_length=40)], user: CurrentUser, roles: RolesDep) -> Role:
    """One of the caller's own roles; 404 for a built-in one, someone else's or an unknown id alike."""
    return await roles.own_role(user, role_id)


OwnedRole = Annotated[Role, Depends(owned_role)]


async def get_admin(request: Request) -> Admin:
    return request.app.state.admin


AdminDep = Annotated[Admin, Depends(get_admin)]


async def admin_user(request: Request, user: CurrentUser, admin: AdminDep) -> str:
    """The caller's username if they are an admin (ADMIN_USERS); 403 for anyone else, whatever the
    route or the user it names (no route tells a non-admin whether a user exists)."""
    return await admin.admin_name(user)


AdminUser = Annotated[str, Depends(admin_user)]
