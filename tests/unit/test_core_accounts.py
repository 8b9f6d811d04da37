"""Accounts, sign-ins and API tokens (webapp/core/accounts.py) in-process on a real redis-server."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.unit.wiring import Core
from webapp.base.errors import (
    BadCredentials,
    InvalidUsername,
    RateLimited,
    SignupClosed,
    TokenNotFound,
    UsernameTaken,
    WeakPassword,
)
from webapp.core.accounts import Accounts

PASSWORD = "correct horse battery"


async def test_a_new_account_signs_in_with_its_password(core: Core) -> None:
    uid = await core.accounts.create_user("alice", PASSWORD)

    cookie = await core.accounts.sign_in("alice", PASSWORD, ip="", anonymous_uid=None)

    assert await core.accounts.user_of_signin(cookie) == uid
    assert await core.accounts.username_of(uid) == "alice"
    stored = await core.store.account(uid)
    assert PASSWORD not in str(stored) and stored["password"].startswith("$argon2id$")
    assert [key for key in await core.store.redis.keys("*") if cookie in key] == [], "only its hash is kept"


async def test_a_wrong_password_or_an_unknown_name_is_refused_alike(core: Core) -> None:
    await core.accounts.create_user("alice", PASSWORD)

    with pytest.raises(BadCredentials):
        await core.accounts.sign_in("alice", "not the password", ip="", anonymous_uid=None)
    with pytest.raises(BadCredentials):
        await core.accounts.sign_in("nobody", PASSWORD, ip="", anonymous_uid=None)
    with pytest.raises(BadCredentials):
        await core.accounts.sign_in("../alice", PASSWORD, ip="", anonymous_uid=None)


async def test_a_taken_name_a_bad_name_and_a_short_password_are_refused(core: Core) -> None:
    await core.accounts.create_user("alice", PASSWORD)

    with pytest.raises(UsernameTaken):
        await core.accounts.create_user("ALICE", "another password")  # names are case-insensitive
    with pytest.raises(InvalidUsername):
        await core.accounts.create_user("a b", PASSWORD)
    with pytest.raises(WeakPassword):
        await core.accounts.create_user("bob", "short")

    assert await core.store.account_by_name("bob") is None
    assert (await core.store.account_by_name("Alice"))[1]["username"] == "alice"


async def test_sign_out_ends_one_sign_in_and_sign_out_everywhere_ends_them_all(core: Core) -> None:
    uid = await core.accounts.create_user("alice", PASSWORD)
    phone, laptop, tablet = [await core.accounts.sign_in("alice", PASSWORD, ip="", anonymous_uid=None)
                             for _ in range(3)]

    await core.accounts.sign_out(phone)
    assert await core.accounts.user_of_signin(phone) is None
    assert await core.accounts.user_of_signin(laptop) == uid

    assert await core.accounts.sign_out_everywhere(uid) == 2
    assert [await core.accounts.user_of_signin(cookie) for cookie in (laptop, tablet)] == [None, None]


async def test_signing_up_claims_the_anonymous_history_of_the_browser(core: Core) -> None:
    conversation = await core.conversations.create("anon-1")
    await core.finish("anon-1", await core.writer.start_turn(conversation.id, "anon-1", "my old question", None, "en"))

    cookie = await core.accounts.sign_up("alice", PASSWORD, ip="", anonymous_uid="anon-1")

    uid = await core.accounts.user_of_signin(cookie)
    assert [c.id for c in (await core.conversations.browse(uid)).items] == [conversation.id]
    assert [m.content for m in await core.history(uid, conversation.id) if m.role == "user"] == ["my old question"]
    assert [c.id for c in (await core.conversations.browse(uid, query="question")).items] == [conversation.id]
    assert (await core.conversations.browse("anon-1")).items == []


async def test_sign_up_is_refused_when_closed(core: Core) -> None:
    closed = Accounts(core.store, core.settings.model_copy(update={"allow_signup": False}), core.limits)

    with pytest.raises(SignupClosed):
        await closed.sign_up("alice", PASSWORD, ip="", anonymous_uid=None)

    assert await core.store.account_by_name("alice") is None
    await closed.create_user("alice", PASSWORD)  # an operator still can (`python -m webapp create-user`)


async def test_sign_ins_to_one_account_are_limited_per_minute_even_with_the_right_password(core: Core) -> None:
    await core.accounts.create_user("alice", PASSWORD)
    per_minute = core.settings.sign_ins_per_account_per_minute
    if 60 - time.time() % 60 < 3:  # every attempt in one window
        await asyncio.sleep(60 - time.time() % 60)
    for _ in range(per_minute - 1):
        with pytest.raises(BadCredentials):
            await core.accounts.sign_in("alice", "guessing", ip="", anonymous_uid=None)
    await core.accounts.sign_in("Alice", PASSWORD, ip="", anonymous_uid=None)  # counted under the same name

    with pytest.raises(RateLimited):
        await core.accounts.sign_in("alice", PASSWORD, ip="", anonymous_uid=None)
    await core.accounts.create_user("bob", PASSWORD)
    await core.accounts.sign_in("bob", PASSWORD, ip="", anonymous_uid=None)  # per account


async def test_an_api_token_works_until_it_is_revoked(core: Core) -> None:
    uid = await core.accounts.create_user("alice", PASSWORD)

    token_id, token = await core.accounts.create_token(uid, "  my   script ")

    assert await core.accounts.user_of_token(token) == uid
    assert [(t["id"], t["name"]) for t in await core.accounts.tokens(uid)] == [(token_id, "my script")]
    assert await core.accounts.user_of_token(token + "x") is None
    await core.accounts.revoke_token(uid, token_id)
    assert await core.accounts.user_of_token(token) is None
    assert await core.accounts.tokens(uid) == []
    with pytest.raises(TokenNotFound):
        await core.accounts.revoke_token(uid, token_id)
