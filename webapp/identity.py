"""Anonymous identities in a signed cookie.

The middleware only verifies the cookie and, when a request was given a new
identity, adds the Set-Cookie header; deciding *who* a caller is lives in deps.py.
It is plain ASGI (not BaseHTTPMiddleware) so streamed responses pass straight through.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from http.cookies import SimpleCookie

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE_NAME = "chat_uid"
COOKIE_MAX_AGE = 400 * 86400
from .ids import USER_ID_PATTERN


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


class IdentityMiddleware:
    """Puts the verified cookie identity in `request.state.identity`; sets the cookie for new ones."""

    def __init__(self, app: ASGIApp, secret: str) -> None:
        self.app = app
        self.signer = Signer(secret)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        token = read_cookie(scope["headers"], COOKIE_NAME)
        state["identity"] = self.signer.unsign(token) if token else None
        state["new_identity"] = None
        if state["identity"]:
            # a known caller never gets a new cookie: skip the send wrapper (it runs per SSE event)
            await self.app(scope, receive, send)
            return
        secure = scope.get("scheme") == "https"

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and state.get("new_identity"):
                cookie = (
                    f"{COOKIE_NAME}={self.signer.sign(state['new_identity'])}; Path=/; "
                    f"Max-Age={COOKIE_MAX_AGE}; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
                )
                message["headers"] = list(message.get("headers", [])) + [(b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, send_with_cookie)
