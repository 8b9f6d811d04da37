"""Accounts, sign-ins and API tokens (webapp/core/accounts.py) in-process on a real redis-server."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.unit.wiring import Core
from webapp.base.errors import (
    AccountSignInsLimited,
    BadCredentials,
    CommonPassword,
    InvalidUsername,
    PasswordHasUsername,
    PasswordTooShort,
    RateLimited,
    SignInsHereLimited,
    SignupClosed,
    TokenNotFound,
    UsernameTaken,
    WeakPassword,
)
from webapp.core.accounts import Accounts, SignedOut, _hash
from webapp.core.passwords import common_passwords

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
    with pytest.raises(WeakPassword):
        await core.accounts.create_user("bob", "password")

    assert await core.store.account_by_name("bob") is None
    assert (await core.store.account_by_name("Alice"))[1]["username"] == "alice"


async def test_sign_out_ends_one_sign_in_and_sign_out_everywhere_ends_them_all(core: Core) -> None:
    uid = await core.accounts.create_user("alice", PASSWORD)
    phone, laptop, tablet = [await core.accounts.sign_in("alice", PASSWORD, ip="", anonymous_uid=None)
                             for _ in range(3)]

    await core.accounts.sign_out(phone)
    assert await core.accounts.user_of_signin(phone) is None
    assert await core.accounts.user_of_signin(laptop) == uid

    _, token = await core.accounts.create_token(uid, "script")
    assert await core.accounts.sign_out_everywhere(uid) == SignedOut(signins=2, tokens=0)
    assert [await core.accounts.user_of_signin(cookie) for cookie in (laptop, tablet)] == [None, None]
    assert await core.accounts.user_of_token(token) == uid  # kept, unless asked (and the page says so)

    again = await core.accounts.sign_in("alice", PASSWORD, ip="", anonymous_uid=None)
    assert await core.accounts.sign_out_everywhere(uid, tokens=True) == SignedOut(signins=1, tokens=1)
    assert await core.accounts.user_of_signin(again) is None
    assert await core.accounts.user_of_token(token) is None and await core.accounts.tokens(uid) == []


async def test_ending_a_sign_in_or_a_token_ends_what_watches_it_here_and_is_announced(core: Core) -> None:
    """Revocations (core/revocations.py): this worker's streams end at once, every worker hears the hashes,
    and a stream that registers after its credential ended is told so."""
    uid = await core.accounts.create_user("alice", PASSWORD)
    cookie = await core.accounts.sign_in("alice", PASSWORD, ip="", anonymous_uid=None)
    token_id, token = await core.accounts.create_token(uid, "script")
    ended: list[str] = []
    heard: list[list[str]] = []

    async def listen() -> None:
        async for credentials in core.store.revoked_credentials():
            heard.append(credentials)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.2)
    for secret in (cookie, token):
        assert core.revocations.watch(Accounts.credential_of(secret), lambda s=secret: ended.append(s)) is not None
    await core.accounts.revoke_token(uid, token_id)
    assert ended == [token]
    await core.accounts.sign_out(cookie)
    assert ended == [token, cookie]
    for _ in range(50):
        if len(heard) == 3:
            break
        await asyncio.sleep(0.02)
    listener.cancel()
    assert heard == [[], [Accounts.credential_of(token)], [Accounts.credential_of(cookie)]]
    assert core.revocations.watch(Accounts.credential_of(cookie), lambda: None) is None  # (too late)
    assert core.revocations.watching == {}


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


async def test_a_guesser_is_held_per_address_and_per_account_but_the_owners_known_browser_signs_in(
    core: Core,
) -> None:
    """Failures per (account, address), then a ceiling per account for browsers that never signed in to
    it; a right password counts no failure; nothing locks the owner's known browser out."""
    await core.accounts.create_user("alice", PASSWORD)
    if 3600 - time.time() % 3600 < 8:  # every attempt in one hour's window (the next one rounds one more in)
        await asyncio.sleep(3600 - time.time() % 3600)
    here = core.settings.sign_in_failures_per_account_and_ip_per_hour
    for _ in range(here):
        with pytest.raises(BadCredentials):
            await core.accounts.sign_in("alice", "guessing", ip="203.0.113.1", anonymous_uid=None)
    for _ in range(20):  # held there, however often it tries (and that moves the account's ceiling no nearer)
        with pytest.raises(SignInsHereLimited) as held:
            await core.accounts.sign_in("alice", PASSWORD, ip="203.0.113.1", anonymous_uid=None)
    assert 1 <= held.value.retry_after <= 3600
    await core.accounts.sign_in("Alice", PASSWORD, ip="198.51.100.7", anonymous_uid=None)  # the owner, elsewhere
    for _ in range(here * 3):  # a right password counted nothing
        await core.accounts.sign_in("alice", PASSWORD, ip="198.51.100.7", anonymous_uid=None)

    ceiling = Accounts(core.store, core.settings.model_copy(update={"sign_in_failures_per_account_per_hour": 25}),
                       core.limits)
    addresses = iter(f"192.0.2.{n}" for n in range(1, 250))
    failures = here  # the first address's (its refused attempt tried no password: no failure)
    while failures < 25:
        address = next(addresses)
        for _ in range(min(here, 25 - failures)):
            with pytest.raises(BadCredentials):
                await ceiling.sign_in("alice", "guessing", ip=address, anonymous_uid=None)
            failures += 1
    with pytest.raises(AccountSignInsLimited):  # a new address: the account's ceiling, before any hash
        await ceiling.sign_in("alice", PASSWORD, ip=next(addresses), anonymous_uid=None)
    await ceiling.sign_in("alice", PASSWORD, ip="198.51.100.7", anonymous_uid=None, known_device=True)
    await ceiling.create_user("bob", PASSWORD)
    await ceiling.sign_in("bob", PASSWORD, ip=next(addresses), anonymous_uid=None)  # per account


async def test_sign_in_attempts_per_address_are_limited_whatever_the_account(core: Core) -> None:
    limited = Accounts(core.store, core.settings.model_copy(update={"sign_ins_per_ip_per_minute": 3}), core.limits)
    for name in ("carol", "dave", "erin"):
        with pytest.raises(BadCredentials):
            await limited.sign_in(name, PASSWORD, ip="203.0.113.9", anonymous_uid=None)
    with pytest.raises(RateLimited):
        await limited.sign_in("frank", PASSWORD, ip="203.0.113.9", anonymous_uid=None)


@pytest.mark.parametrize("password, error", [
    ("short", PasswordTooShort),
    ("        ", PasswordTooShort),  # eight spaces
    ("\u200b" * 8, PasswordTooShort),  # eight zero-width spaces
    ("ab\u200b\u200b\u200b\u200b\u200bcd", PasswordTooShort),  # four visible characters
    ("  abcdef  ", PasswordTooShort),  # spaces at either end do not count
    ("password", CommonPassword),
    ("12345678", CommonPassword),
    ("PassWord1", CommonPassword),  # compared in lower case
    ("ｐａｓｓｗｏｒｄ", CommonPassword),  # full-width: NFKC makes it "password"
    ("pass\u200bword", CommonPassword),  # an invisible character does not hide it
    ("Robert-the-user", PasswordHasUsername),
    ("robert_x", PasswordHasUsername),
])
async def test_the_password_policy_names_the_rule_a_password_breaks(core: Core, password: str,
                                                                    error: type[WeakPassword]) -> None:
    with pytest.raises(error):
        await core.accounts.create_user("robert_x" if error is PasswordHasUsername and "_" in password
                                        else "robert", password)
    assert await core.store.account_by_name("robert") is None


async def test_the_policy_takes_long_passphrases_any_script_and_the_shipped_list_is_large(core: Core) -> None:
    assert len(common_passwords()) >= 10_000 and {"password", "12345678", "qwerty123"} <= common_passwords()
    for name, password in (("u1", "correct horse battery"), ("u2", "我的密码很长很长"), ("u3", "🔑🔑🔑🔑🔑🔑🔑🔑"),
                           ("u4", "x" * 256)):
        await core.accounts.create_user(name + "-user", password)
        await core.accounts.sign_in(name + "-user", password, ip="", anonymous_uid=None)


async def test_a_password_typed_in_another_form_signs_in_and_an_old_hash_is_renewed(core: Core) -> None:
    """What is hashed is the NFKC form: full-width digits sign in as the ASCII ones. A hash made before
    (of the password as typed) still signs in, and is then replaced by the normalised one's."""
    await core.accounts.create_user("wang", "Ｓｅｃｒｅｔ-2026-ok")
    await core.accounts.sign_in("wang", "Secret-2026-ok", ip="", anonymous_uid=None)

    uid = await core.accounts.create_user("lilei", "zhongwen-mima-1")
    typed = "ｆｕｌｌｗｉｄｔｈ-9"
    await core.store.set_password(uid, await asyncio.to_thread(_hash, typed))  # as an older version stored it
    await core.accounts.sign_in("lilei", typed, ip="", anonymous_uid=None)
    await core.accounts.sign_in("lilei", "fullwidth-9", ip="", anonymous_uid=None)  # renewed: NFKC from now on


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
