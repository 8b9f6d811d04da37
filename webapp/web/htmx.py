"""Page or fragment: what an HTMX request gets, decided once per request, not in every route.

The htmx essays' "template fragments" and fasthx's `DependsHXRequest`, in the small:
a route asks the `View` for a response and says what to show; the View knows whether
the caller is HTMX (a fragment of the same templates), a history restore (the whole
page), or a browser with JavaScript off (the whole page, or a 303 back to it after a
form post). Route bodies do not branch on `HX-Request`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from webapp.base.errors import ChatError
from webapp.base.i18n import LANG_COOKIE, Lang, pick_lang, t
from webapp.base.ids import UUID_PATTERN
from webapp.web.csrf import request_token
from webapp.web.render import render_template

CONVERSATION_PATH = re.compile(rf"/c/({UUID_PATTERN})")
LOCAL_PAGE = re.compile(rf"/(?:c/{UUID_PATTERN})?")

Values = dict[str, Any]


def lang_of(request: Request) -> Lang:
    """The remembered switch (cookie), else Accept-Language, else Chinese."""
    return pick_lang(request.headers.get("accept-language"), request.cookies.get(LANG_COOKIE))


def is_htmx(request: Request) -> bool:
    """An HTMX request wants a fragment; a history restore wants the whole page."""
    headers = request.headers
    return headers.get("hx-request") == "true" and headers.get("hx-history-restore-request") != "true"


def see_other(path: str) -> Response:
    return RedirectResponse(path, status_code=303)


def url_path(url: str) -> str:
    """The path of a URL a client sent in a header ("/" when it is not one, e.g. `http://[::1`)."""
    try:
        return urlsplit(url).path or "/"
    except ValueError:
        return "/"


def local_path(path: str, fallback: str = "/") -> str:
    """`path` if it is one of our pages (never an open redirect), else `fallback`."""
    return path if LOCAL_PAGE.fullmatch(path) else fallback


class View:
    """How this request is answered: a fragment for HTMX, a page (or a redirect) otherwise."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.lang: Lang = lang_of(request)
        self.fragment = is_htmx(request)

    # where the user is ---------------------------------------------------

    @property
    def current_path(self) -> str:
        """The page the user is on: an HTMX request names it in HX-Current-URL."""
        if self.fragment and self.request.headers.get("hx-current-url"):
            return url_path(self.request.headers["hx-current-url"])
        return self.request.url.path

    @property
    def active_id(self) -> str | None:
        """The conversation open in the page, if any."""
        match = CONVERSATION_PATH.match(self.current_path)
        return match.group(1) if match else None

    def referer(self, avoid: str = "") -> str:
        """Where a form without JavaScript came from, if it is one of our pages (and not `avoid`)."""
        path = url_path(self.request.headers.get("referer", ""))
        if LOCAL_PAGE.fullmatch(path) and (not avoid or avoid not in path):
            return path
        return "/"

    # responses -----------------------------------------------------------

    def render(self, name: str, *, status: int = 200, headers: dict[str, str] | None = None,
               **values: Any) -> Response:
        """`name` rendered, whoever asks (a page, or a fragment both kinds of request get)."""
        values.setdefault("csrf_token", request_token(self.request))
        settings = getattr(self.request.app.state, "settings", None)  # absent in apps built by unit tests
        values.setdefault("auth_mode", settings.auth if settings else "anonymous")
        response = HTMLResponse(render_template(name, self.lang, **values), status_code=status, headers=headers)
        response.headers["Vary"] = "HX-Request"
        response.headers["Cache-Control"] = "private, no-cache"
        return response

    async def fragment_or_redirect(
        self, fragment: str, to: str, values: Values | Callable[[], Awaitable[Values]] | None = None,
        *, headers: dict[str, str] | None = None,
    ) -> Response:
        """HTMX: `fragment` with `values` (computed only then, when a callable); otherwise a 303 to `to`."""
        if not self.fragment:
            return see_other(to)
        if callable(values):
            values = await values()
        return self.render(fragment, headers=headers, **(values or {}))

    async def fragment_or_page(
        self, fragment: str, page: str, values: Values, *,
        page_values: Callable[[], Awaitable[Values]] | None = None,
        status: int = 200, headers: dict[str, str] | None = None,
    ) -> Response:
        """HTMX: `fragment`; otherwise the whole `page`, with `page_values` (e.g. its sidebar) added."""
        if self.fragment:
            return self.render(fragment, status=status, headers=headers, partial=True, **values)
        if page_values is not None:
            values = {**values, **await page_values()}
        return self.render(page, status=status, headers=headers, **values)

    async def fragment_or(self, fragment: str, values: Values,
                          otherwise: Callable[[], Awaitable[Response]]) -> Response:
        """HTMX: `fragment`; otherwise whatever `otherwise` answers (a page showing the same thing)."""
        if self.fragment:
            return self.render(fragment, **values)
        return await otherwise()

    def no_content_or_redirect(self, to: str) -> Response:
        """HTMX: 204 (nothing to swap); otherwise a 303 to `to`."""
        return Response(status_code=204) if self.fragment else see_other(to)

    async def form_error(self, error: ChatError, page: Callable[[str, int], Awaitable[Response]]) -> Response:
        """A refused form post: HTMX shows the error as a toast (the error handler); without
        JavaScript, `page` renders the form again with the message, keeping what was typed."""
        if self.fragment:
            raise error
        response = await page(t(error.key, self.lang, **error.params), error.status)
        response.headers.update(error.headers)
        return response

    def error(self, key: str, status: int, params: dict[str, object] | None = None) -> Response:
        """A toast for HTMX (retargeted into #toasts), an error page otherwise."""
        text = t(key, self.lang, **(params or {}))
        if self.fragment:
            return self.render("partials/toast.html", status=status, text=text, kind="error",
                               headers={"HX-Retarget": "#toasts", "HX-Reswap": "beforeend"})
        return self.render("error.html", status=status, message=text)


async def get_view(request: Request) -> View:
    return View(request)


ViewDep = Annotated[View, Depends(get_view)]
