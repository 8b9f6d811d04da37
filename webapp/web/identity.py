"""Anonymous identities in a signed cookie.

The request's middleware (edge.py) only verifies the cookie and, when a request was given
a new identity, adds the Set-Cookie header; deciding *who* a caller is lives in deps.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache
from http.cookies import SimpleCookie

COOKIE_NAME = "chat_uid"
COOKIE_MAX_AGE = 400 * 86400
CACHED_COOKIE_BYTES = 512
from webapp.base.ids import USER_ID_PATTERN


class Signer:
    def __init__(self, secret: str) -> None:
        self.key = hashlib.sha256(("chat-identity:" + secret).encode()).digest()

    def _mac(self, value: str) -> str:
        digest = hmac.new(self.key, value.encode(), hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(digest).decode()

    def sign(self, value: str) -> str:
        return f"{value}.{self._mac(value)}"

    def unsign(self, token: str) -> str | None:
        value, _, mac = token.rpartition(".")
        if not value or not USER_ID_PATTERN.fullmatch(value):
            return None
        return value if hmac.compare_digest(mac, self._mac(value)) else None


def read_cookie(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    for key, raw in headers:
        if key == b"cookie":
            cookie = SimpleCookie()
            try:
                cookie.load(raw.decode("latin-1"))
            except Exception:
                continue
            if name in cookie:
                return cookie[name].value
    return None


class IdentityCookie:
    """Reads the verified cookie identity; makes the Set-Cookie header of a new one (edge.py runs it)."""

    def __init__(self, secret: str) -> None:
        self.signer = Signer(secret)
        # a browser sends the same Cookie header with every request: parsed and verified once
        # (an HMAC and a SimpleCookie parse were ~5% of a page request); only short headers
        # are remembered, so the cache stays small whatever callers send
        self._verified = lru_cache(maxsize=4096)(self._verify)

    def read(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        cookies = tuple(value for key, value in headers if key == b"cookie")
        if not cookies:
            return None
        if sum(len(value) for value in cookies) > CACHED_COOKIE_BYTES:
            return self._verify(cookies)
        return self._verified(cookies)

    def _verify(self, cookies: tuple[bytes, ...]) -> str | None:
        token = read_cookie([(b"cookie", value) for value in cookies], COOKIE_NAME)
        return self.signer.unsign(token) if token else None

    def set_cookie(self, identity: str, secure: bool) -> tuple[bytes, bytes]:
        cookie = (
            f"{COOKIE_NAME}={self.signer.sign(identity)}; Path=/; "
            f"Max-Age={COOKIE_MAX_AGE}; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
        )
        return (b"set-cookie", cookie.encode())
