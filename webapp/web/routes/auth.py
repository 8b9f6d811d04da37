"""Sign-in, sign-up and sign-out pages (AUTH=accounts): plain forms, no JavaScript needed.

These run before the caller has a sign-in, so they carry no CSRF token of an identity;
cross-site posts are refused by the same-origin check (security.refuse_cross_site), and
sign-in attempts are rate limited per IP and per account (accounts.py).
"""

from __future__ import annotations

from typing import Annotated, Awaitable, Callable

from fastapi import Form, Request, Response

from webapp.base.errors import ChatError
from webapp.base.i18n import t
from webapp.web.deps import SIGNIN_COOKIE, AccountsDep, ClientIp
from webapp.web.error_handlers import PAGE_TAG
from webapp.web.htmx import View, ViewDep, local_path, see_other
from webapp.web.routing import PageRouter

router = PageRouter(include_in_schema=False, tags=[PAGE_TAG])

FormText = Annotated[str, Form()]


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


def signed_in(request: Request, cookie: str, next: str) -> Response:
    settings = request.app.state.settings
    response = see_other(local_path(next))
    response.set_cookie(SIGNIN_COOKIE, cookie, max_age=settings.session_days * 86400, httponly=True,
                        samesite="lax", secure=request.url.scheme == "https")
    return response


@router.get("/login")
async def login_page(view: ViewDep, next: str = "/") -> Response:
    if view.request.app.state.settings.auth != "accounts":
        return see_other("/")
    return auth_page(view, "/login", next=next)


async def attempt(view: View, action: str, sign: Callable[[], Awaitable[str]], username: str,
                  next: str) -> Response:
    """A sign-in or sign-up: on success the cookie and back to `next`; else the form again, with the error."""
    if view.request.app.state.settings.auth != "accounts":
        return see_other("/")
    try:
        cookie = await sign()
    except ChatError as exc:
        return auth_page(view, action, next=next, username=username, error=exc)
    return signed_in(view.request, cookie, next)


@router.post("/login")
async def login(view: ViewDep, accounts: AccountsDep, ip: ClientIp, username: FormText = "",
                password: FormText = "", next: FormText = "/") -> Response:
    return await attempt(view, "/login", lambda: accounts.sign_in(
        username, password, ip=ip, anonymous_uid=view.request.state.identity), username, next)


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
async def logout(view: ViewDep, accounts: AccountsDep, everywhere: FormText = "") -> Response:
    """Sign this browser out; with `everywhere`, every sign-in of the account."""
    cookie = view.request.cookies.get(SIGNIN_COOKIE, "")
    if everywhere:
        uid = await accounts.user_of_signin(cookie)
        if uid:
            await accounts.sign_out_everywhere(uid)
    await accounts.sign_out(cookie)
    response = see_other("/login")
    response.delete_cookie(SIGNIN_COOKIE)
    return response
