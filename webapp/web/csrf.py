"""CSRF tokens: the web UI's forms and HTMX requests carry a token bound to the caller's identity.

A hidden `csrf_token` field (app.js sends it as an `X-CSRF-Token` header), checked on every
state-changing request of the web UI, by FastAPI's routes and the plain routes alike
(`require_csrf_token`). The same-origin check that refuses cross-site requests before any of
this is security.py's.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from fastapi import Request

from webapp.base.errors import BadCsrfToken
from webapp.web.forms import FORM_TYPE, form_fields
from webapp.web.peers import trusted_proxy_user

SIGNIN_COOKIE = "chat_signin"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def bearer_token(request: Request) -> str | None:
    """The token of `Authorization: Bearer ...`; None for no header or another scheme (a proxy's
    Basic credentials are none of the app's business)."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def token_for(identity: str, secret: str) -> str:
    """The CSRF token of an identity: an HMAC only this server can make, stable for the identity
    (remembered for short subjects: every page, form post and stream of a caller needs it again)."""
    return _remembered_token(identity, secret) if len(identity) <= 200 else _token(identity, secret)


def _token(identity: str, secret: str) -> str:
    return hmac.new(secret.encode(), b"csrf:" + identity.encode(), hashlib.sha256).hexdigest()[:32]


_remembered_token = lru_cache(maxsize=4096)(_token)


def csrf_subject(request: Request) -> str:
    """What a CSRF token is bound to, readable before any Redis lookup: the sign-in cookie
    (accounts), the proxy's user header (proxy), or the anonymous identity (its cookie, or the
    one this request just made)."""
    settings = getattr(request.app.state, "settings", None)
    if settings is None:
        return ""
    if settings.auth == "accounts":
        return "signin:" + request.cookies.get(SIGNIN_COOKIE, "") if request.cookies.get(SIGNIN_COOKIE) else ""
    if settings.auth == "proxy":
        name = trusted_proxy_user(request)
        return "proxy:" + name if name else ""
    return getattr(request.state, "identity", None) or ""


def request_token(request: Request) -> str:
    """The token the pages of this request carry ("" before the caller has an identity)."""
    subject = csrf_subject(request)
    return token_for(subject, request.app.state.settings.secret_key) if subject else ""


async def require_csrf_token(request: Request) -> None:
    """A state-changing request of the web UI carries its identity's token (header or form field)."""
    if request.method not in UNSAFE_METHODS or bearer_token(request) is not None:
        return  # a page cannot make a browser send a Bearer token (it may resend Basic credentials)
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        (FORM_TYPE, "multipart/form-data")
    ):
        given = (await form_fields(request)).get(CSRF_FIELD)  # parsed once: the route reads the same
    expected = request_token(request)
    if not given or not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise BadCsrfToken()

