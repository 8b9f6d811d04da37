"""Sign-in, sign-up and sign-out pages (AUTH=accounts): plain forms, no JavaScript needed.

Sign-in and sign-up run before the caller has a sign-in, so they carry no CSRF token of an
identity; cross-site posts are refused by the same-origin check (security.py), and sign-in
attempts are throttled per address, per (account, address) and per account (core/accounts.py).
Sign-out is a state change of a signed-in browser: it needs the page's CSRF token.

A browser that signed in to an account keeps a mark of it (`chat_known`, an HMAC of the account
name, sent to /login only): its attempts meet no ceiling of the account's, so a guesser from many
addresses cannot keep the owner's own browsers out.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Awaitable, Callable

from fastapi import Form, Query, Request, Response

from webapp.base.errors import ChatError
from webapp.base.i18n import t
from webapp.web.csrf import csrf_subject, require_csrf_token
from webapp.web.deps import SIGNIN_COOKIE, AccountsDep, ClientIp
from webapp.web.error_handlers import PAGE_TAG
from webapp.web.htmx import View, ViewDep, local_path, see_other
from webapp.web.routing import PageRouter

router = PageRouter(include_in_schema=False, tags=[PAGE_TAG])

FormText = Annotated[str, Form()]
DEVICE_COOKIE = "chat_known"
DEVICE_MARKS_KEPT = 5  # accounts a browser is remembered for
Count = Annotated[int | None, Query(ge=0, le=1_000_000)]


def device_mark(secret: str, username: str) -> str:
    """What a browser that signed in to `username` keeps: only this server can make it."""
    return hmac.new(secret.encode(), b"device:" + username.lower().encode(), hashlib.sha256).hexdigest()[:32]


def device_marks(request: Request) -> list[str]:
    return [mark for mark in request.cookies.get(DEVICE_COOKIE, "").split(".") if mark][:DEVICE_MARKS_KEPT]


def is_known_device(request: Request, username: str) -> bool:
    mark = device_mark(request.app.state.settings.secret_key, username)
    return any(hmac.compare_digest(mark, given) for given in device_marks(request))


def auth_page(view: View, action: str, *, next: str = "/", username: str = "", error: ChatError | None = None,
              notice: str = "") -> Response:
    settings = view.request.app.state.settings
    heading = "ui.login" if action == "/login" else "ui.signup"
    response = view.render(
        "auth.html", status=error.status if error else 200, action=action, heading=heading, next=local_path(next),
        username=username, error=t(error.key, view.lang, **error.params) if error else "", notice=notice,
        allow_signup=settings.allow_signup,
    )
    response.headers.update(error.headers if error else {})
    return response


def signed_in(request: Request, cookie: str, next: str, username: str) -> Response:
    settings = request.app.state.settings
    secure = request.url.scheme == "https"
    response = see_other(local_path(next))
    response.set_cookie(SIGNIN_COOKIE, cookie, max_age=settings.session_days * 86400, httponly=True,
                        samesite="lax", secure=secure)
    mark = device_mark(settings.secret_key, username)
    marks = [mark] + [other for other in device_marks(request) if other != mark]
    response.set_cookie(DEVICE_COOKIE, ".".join(marks[:DEVICE_MARKS_KEPT]), max_age=400 * 86400, path="/login",
                        httponly=True, samesite="lax", secure=secure)
    return response


@router.get("/login")
async def login_page(view: ViewDep, next: str = "/", signed_out: Count = None, tokens_revoked: Count = None) -> Response:
    """`signed_out`/`tokens_revoked`: what "sign out everywhere" just ended (its 303 lands here)."""
    if view.request.app.state.settings.auth != "accounts":
        return see_other("/")
    notice = ""
    if signed_out is not None:
        notice = (t("ui.signed_out_with_tokens", view.lang, signins=signed_out, tokens=tokens_revoked)
                  if tokens_revoked is not None else t("ui.signed_out_tokens_kept", view.lang, signins=signed_out))
    return auth_page(view, "/login", next=next, notice=notice)


async def attempt(view: View, action: str, sign: Callable[[], Awaitable[str]], username: str,
                  next: str) -> Response:
    """A sign-in or sign-up: on success the cookie and back to `next`; else the form again, with the error."""
    if view.request.app.state.settings.auth != "accounts":
        return see_other("/")
    try:
        cookie = await sign()
    except ChatError as exc:
        return auth_page(view, action, next=next, username=username, error=exc)
    return signed_in(view.request, cookie, next, username)


@router.post("/login")
async def login(view: ViewDep, accounts: AccountsDep, ip: ClientIp, username: FormText = "",
                password: FormText = "", next: FormText = "/") -> Response:
    known = is_known_device(view.request, username)
    return await attempt(view, "/login", lambda: accounts.sign_in(
        username, password, ip=ip, anonymous_uid=view.request.state.identity, known_device=known), username, next)


@router.get("/signup")
async def signup_page(view: ViewDep, next: str = "/") -> Response:
    settings = view.request.app.state.settings
    if settings.auth != "accounts":
        return see_other("/")
    if not settings.allow_signup:
        return auth_page(view, "/login", next=next, notice=t("error.signup_closed", view.lang))
    return auth_page(view, "/signup", next=next)


@router.post("/signup")
async def signup(view: ViewDep, accounts: AccountsDep, ip: ClientIp, username: FormText = "",
                 password: FormText = "", next: FormText = "/") -> Response:
    return await attempt(view, "/signup", lambda: accounts.sign_up(
        username, password, ip=ip, anonymous_uid=view.request.state.identity), username, next)


@router.post("/logout")
async def logout(view: ViewDep, accounts: AccountsDep, everywhere: FormText = "", tokens: FormText = "") -> Response:
    """Sign this browser out; with `everywhere`, every sign-in of the account, and with `tokens` its API
    tokens too; the sign-in page then says what ended. Streams opened with what ended end with it."""
    if csrf_subject(view.request):  # (a browser signed in to nothing has nothing to lose to a forged post)
        await require_csrf_token(view.request)
    cookie = view.request.cookies.get(SIGNIN_COOKIE, "")
    uid = await accounts.user_of_signin(cookie) if everywhere and cookie else None
    if uid:
        ended = await accounts.sign_out_everywhere(uid, tokens=bool(tokens))
        response = see_other(f"/login?signed_out={ended.signins}"
                             + (f"&tokens_revoked={ended.tokens}" if tokens else ""))
    else:
        await accounts.sign_out(cookie)
        response = see_other("/login")
    response.delete_cookie(SIGNIN_COOKIE)
    return response
