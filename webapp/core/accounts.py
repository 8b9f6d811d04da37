"""Accounts, sign-ins and personal API tokens.

- Passwords are hashed with argon2id (argon2-cffi), in a worker thread: a hash takes tens
  of milliseconds of CPU, which must not stall the event loop's streams. The parameters
  are OWASP's minimum (19 MiB, 2 passes): a 1 GB box can still take several sign-ins at once.
- A sign-in is a random cookie; Redis keeps only its SHA-256, so a copy of the database
  signs nobody in. Each is revocable, and "sign out everywhere" drops them all.
- An API token is shown once; Redis keeps its SHA-256.
- Signing in from a browser that has an anonymous history claims that history.
- Passwords follow the policy of passwords.py (NIST SP 800-63B); what is hashed is their NFKC form.
- Sign-in throttling that a guesser cannot turn against the owner: attempts per address
  (SIGN_INS_PER_IP_PER_MINUTE), failures per (account, address) (SIGN_IN_FAILURES_PER_ACCOUNT_AND_IP_PER_HOUR),
  and a much higher ceiling of failures per account from browsers that never signed in to it
  (SIGN_IN_FAILURES_PER_ACCOUNT_PER_HOUR), which a browser that has (`known_device`, a signed
  cookie the web edge keeps) does not meet. Nothing locks an account: a guesser from one address
  is held at that address; a guesser from many, at the ceiling, while the owner's own browsers
  still sign in. A right password counts no failure (the attempt's counts are given back).
- Ending a sign-in or a token ends the streams opened with it, on every host (revocations.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from functools import cache
from dataclasses import dataclass
from typing import TYPE_CHECKING

from webapp.base.errors import (AccountDisabled, AccountSignInsLimited, BadCredentials, InvalidUsername, NameKeptForAdmin,
                                SignInsHereLimited,
                                SignupClosed, TokenNotFound, UsernameTaken)
from webapp.config import Settings, admin_names
from webapp.core.context import check_text
from webapp.core.limits import Limit, Limits
from webapp.core.passwords import MAX_PASSWORD, check_password, normalized
from webapp.core.revocations import Revocations
from webapp.storage.store import Store

if TYPE_CHECKING:
    from argon2 import PasswordHasher

USERNAME = re.compile(r"[A-Za-z0-9_.\-]{3,32}")
PROXY_USERNAME = re.compile(r"[A-Za-z0-9_.@+\-]{1,64}")  # SSO proxies often send e-mail addresses
TOKEN_PREFIX = "chat_"
USER_CREDENTIAL = "user:"


@dataclass(frozen=True)
class SignedOut:
    """What "sign out everywhere" ended: sign-ins (this one included) and API tokens."""

    signins: int
    tokens: int


@cache
def hasher() -> PasswordHasher:
    """Made on first use: anonymous and proxy modes never hash, and need not import argon2 at start."""
    from argon2 import PasswordHasher

    return PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


@cache
def _dummy_hash() -> str:
    return hasher().hash("a password nobody has")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _hash(password: str) -> str:
    return hasher().hash(password)


def _verify(password_hash: str, password: str) -> bool:
    """In a worker thread; an unknown name (no hash) is checked against a dummy hash, for the same time."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return hasher().verify(password_hash or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False


def _verify_typed(password_hash: str, password: str) -> tuple[bool, bool]:
    """(right, rehash): the NFKC form is what is hashed now; a hash made before that was of the
    password as typed, tried when the two differ (and then rehashed)."""
    form = normalized(password)
    if _verify(password_hash, form):
        return True, False
    if form != password and password_hash and _verify(password_hash, password):
        return True, True
    return False, False


class Accounts:
    def __init__(self, store: Store, settings: Settings, limits: Limits,
                 revocations: Revocations | None = None) -> None:
        self.store = store
        self.settings = settings
        self.limits = limits
        self.revocations = revocations or Revocations(store)  # (a CLI's: it has no streams to end)
        self.signin_ttl = settings.session_days * 86400
        minute, hour = 60, 3600
        self.sign_ins_per_ip = Limit("signin-ip", settings.sign_ins_per_ip_per_minute, minute)
        self.failures_per_account_ip = Limit("signin-fail-here", settings.sign_in_failures_per_account_and_ip_per_hour,
                                             hour, SignInsHereLimited)
        self.failures_per_account = Limit("signin-fail", settings.sign_in_failures_per_account_per_hour, hour,
                                          AccountSignInsLimited)
        self.signups_per_ip = Limit("signup-ip", settings.signups_per_ip_per_hour, hour)

    # accounts -----------------------------------------------------------

    @staticmethod
    def check_credentials(username: str, password: str) -> tuple[str, str]:
        """The username, and the password to hash (its NFKC form), or the rule they break."""
        if not USERNAME.fullmatch(username or ""):
            raise InvalidUsername()
        return username, check_password(check_text(password or ""), username)

    async def create_user(self, username: str, password: str) -> str:
        """A new account (sign-up, or `python -m webapp create-user`); its uid."""
        username, password = self.check_credentials(username, password)
        uid = "a_" + secrets.token_hex(12)
        password_hash = await asyncio.to_thread(_hash, password)
        if not await self.store.create_account(uid, username, password_hash):
            raise UsernameTaken()
        return uid

    async def sign_up(self, username: str, password: str, *, ip: str, anonymous_uid: str | None) -> str:
        """Create an account and sign it in; the cookie value of the sign-in."""
        if not self.settings.allow_signup:
            raise SignupClosed()
        self.check_credentials(username, password)
        if (username or "").strip().lower() in admin_names(self.settings):
            raise NameKeptForAdmin()
        await self.limits.hit((self.signups_per_ip, ip))
        uid = await self.create_user(username, password)
        return await self._signed_in(uid, anonymous_uid)

    async def sign_in(self, username: str, password: str, *, ip: str, anonymous_uid: str | None,
                      known_device: bool = False) -> str:
        """Check the password; the cookie value of the sign-in. Throttled (see the module's docstring):
        `known_device`: the browser signed in to this account before (its failures meet no ceiling
        of the account's, only those of its address)."""
        name = (username or "").lower()[:64]
        failures = [(self.failures_per_account_ip, f"{name}|{ip}")]
        if not known_device:
            failures.append((self.failures_per_account, name))
        # counted before the password is tried, so that attempts in parallel cannot pass a limit; a refused
        # one tried no password and counts nothing (hammering a held address moves no ceiling nearer)
        await self.limits.hit((self.sign_ins_per_ip, ip), *failures, refund_refused=True)
        found = await self.store.account_by_name(username) if USERNAME.fullmatch(username or "") else None
        password_hash = found[1].get("password", "") if found else ""
        password = (password or "")[: MAX_PASSWORD * 4]  # (hashing megabytes is the guesser's cost, not ours)
        ok, rehash = await asyncio.to_thread(_verify_typed, password_hash, password)
        if not found or not password_hash or not ok:
            raise BadCredentials()
        await self.limits.give_back(*failures)  # a right password is no failure
        uid = found[0]
        if found[1].get("disabled"):
            raise AccountDisabled()
        # (an account made before the admin directory joins it at its next sign-in)
        await self.store.list_user(uid, found[1].get("username", username), float(found[1].get("created") or 0))
        if rehash or hasher().check_needs_rehash(password_hash):
            await self.store.set_password(uid, await asyncio.to_thread(_hash, normalized(password)))
        cookie = await self._signed_in(uid, anonymous_uid)
        # an admin's disable landing while the password was checked signed out every sign-in but this one
        # (made after): the flag, set before that sweep, is read again
        if (await self.store.account(uid) or {}).get("disabled"):
            await self.sign_out(cookie)
            raise AccountDisabled()
        return cookie

    async def _signed_in(self, uid: str, anonymous_uid: str | None) -> str:
        if anonymous_uid and anonymous_uid != uid and not anonymous_uid.startswith("a_"):
            await self.store.move_conversations(anonymous_uid, uid)
            await self.store.mark_search_index_ready(uid, False)  # searched next time: indexed again first
        cookie = secrets.token_urlsafe(32)
        await self.store.add_signin(uid, digest(cookie), self.signin_ttl)
        return cookie

    @staticmethod
    def credential_of(secret: str) -> str:
        """The hash a sign-in cookie or an API token is known by (what a stream watches: revocations.py)."""
        return digest(secret)

    @staticmethod
    def user_credential(uid: str) -> str:
        """What a trusted proxy's user's streams are watched by (no sign-in of ours): the user itself,
        revoked when an admin disables or deletes them (storage/accounts.py credentials_valid)."""
        return USER_CREDENTIAL + uid

    async def user_of_signin(self, cookie: str) -> str | None:
        return await self.store.signin_user(digest(cookie)) if cookie else None

    async def sign_out(self, cookie: str) -> None:
        """End this sign-in, and the streams opened with it on every host."""
        if cookie and await self.store.remove_signin(digest(cookie)):
            await self.revocations.revoke([digest(cookie)])

    async def sign_out_everywhere(self, uid: str, *, tokens: bool = False) -> SignedOut:
        """End every sign-in of the user (and with `tokens`, every API token), and their streams."""
        signins = await self.store.remove_all_signins(uid)
        revoked_tokens = await self.store.remove_all_tokens(uid) if tokens else []
        await self.revocations.revoke(signins + revoked_tokens)
        return SignedOut(signins=len(signins), tokens=len(revoked_tokens))

    async def new_password(self, uid: str) -> str:
        """Replace the password with a random one (an admin's reset: shown to them once) and end the sign-ins."""
        password = secrets.token_urlsafe(12)
        await self.store.set_password(uid, await asyncio.to_thread(_hash, password))
        await self.sign_out_everywhere(uid)
        return password

    async def username_of(self, uid: str) -> str:
        account = await self.store.account(uid)
        return account.get("username", "") if account else ""

    async def proxy_user(self, username: str) -> str:
        """The account of a name a trusted SSO proxy vouched for, made (without a password) on first sight."""
        if not PROXY_USERNAME.fullmatch(username):
            raise InvalidUsername()
        found = await self.store.account_by_name(username)
        if found:
            if found[1].get("disabled"):
                raise AccountDisabled()
            return found[0]
        uid = "a_" + secrets.token_hex(12)
        if await self.store.create_account(uid, username, ""):
            return uid
        found = await self.store.account_by_name(username)  # made by a concurrent request
        if not found:
            raise InvalidUsername()
        return found[0]

    # API tokens ---------------------------------------------------------

    async def create_token(self, uid: str, name: str) -> tuple[str, str]:
        """(id, token): the token is shown once and stored only as its hash."""
        token_id = secrets.token_hex(6)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self.store.add_token(uid, token_id, digest(token), " ".join(check_text(name).split())[:100])
        return token_id, token

    async def tokens(self, uid: str) -> list[dict[str, object]]:
        return [{"id": token_id, "name": data.get("name", ""), "created": data.get("created", 0)}
                for token_id, data in await self.store.list_tokens(uid)]

    async def revoke_token(self, uid: str, token_id: str) -> None:
        """The token stops working, and the streams opened with it end, on every host."""
        revoked = await self.store.remove_token(uid, token_id)
        if revoked is None:
            raise TokenNotFound()
        await self.revocations.revoke([revoked])

    async def user_of_token(self, token: str) -> str | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        return await self.store.token_user(digest(token))
