"""One error path for pages and API alike: domain errors, bad input, Redis outages, HTTP errors.

A domain error (errors.py) becomes its status and localized message; a Redis error
becomes 503 "storage unavailable" and counts in /metrics. Who asked decides the form:
a page route (tagged PAGE_TAG) or a browser navigating gets HTML (a toast for HTMX,
an error page otherwise); the JSON and SSE APIs get `{"detail": ...}`.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from redis.exceptions import RedisClusterException, RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from webapp.base.errors import ChatError, SignInRequired
from webapp.base.i18n import t
from webapp.base.metrics import Metrics
from webapp.web.htmx import View, is_htmx, lang_of

log = logging.getLogger("webapp")

PAGE_TAG = "pages"
API_PREFIXES = ("/api/", "/chat/", "/static/", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")
HTTP_ERROR_KEYS = {404: "error.not_found", 500: "error.internal"}


def wants_html(request: Request) -> bool:
    """A page route, or (for a path no route matched) a browser navigating: errors come back as HTML."""
    route = request.scope.get("route")
    if route is not None:
        return PAGE_TAG in (getattr(route, "tags", None) or ())
    if request.url.path.startswith(API_PREFIXES):
        return False
    return is_htmx(request) or "text/html" in request.headers.get("accept", "")


def error_response(request: Request, key: str, status: int, params: dict[str, object] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    if wants_html(request):
        response = View(request).error(key, status, params)
    else:
        response = JSONResponse({"detail": t(key, lang_of(request), **(params or {}))}, status_code=status)
    response.headers.update(headers or {})
    return response


def _has_sign_in_page(request: Request) -> bool:
    """Only accounts mode has one; behind an SSO proxy a missing user is a plain 401 (no redirect loop)."""
    settings = getattr(request.app.state, "settings", None)
    return settings is not None and settings.auth == "accounts"


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    @app.exception_handler(ChatError)
    async def domain_error(request: Request, exc: ChatError) -> Response:
        if isinstance(exc, SignInRequired) and wants_html(request) and _has_sign_in_page(request):
            # a page of someone not signed in: the sign-in page, then back here
            target = "/login?next=" + quote(View(request).current_path)
            if is_htmx(request):
                return Response(status_code=204, headers={"HX-Redirect": target})
            return RedirectResponse(target, status_code=303)
        return error_response(request, exc.key, exc.status, exc.params, headers=exc.headers)

    @app.exception_handler(RedisClusterException)  # (a Cluster with no node reachable: not a RedisError)
    @app.exception_handler(RedisError)
    async def storage_error(request: Request, exc: Exception) -> Response:
        metrics.redis_error()
        log.error("redis error on %s: %s", request.url.path, type(exc).__name__)
        return error_response(request, "error.storage", 503)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        if wants_html(request):
            return View(request).error("error.invalid_input", 422)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path"))
        detail = t("error.invalid_input", lang_of(request)) + (f": {where}" if where else "")
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        key = HTTP_ERROR_KEYS.get(exc.status_code)
        if key and wants_html(request):
            return View(request).error(key, exc.status_code)
        detail = t(key, lang_of(request)) if key else exc.detail
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)
