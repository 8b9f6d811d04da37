"""The web UI's routes of every turn, and the page every visit opens, served by the edge itself
rather than through FastAPI's router.

A browser's turn is the composer's post (`/c/{id}/messages`) and the page's channel stream
(`/c/{id}/events`), which stays open for the whole visit; a new visitor's first request is `GET /`
(the draft's page), where FastAPI's matching, dependencies and middleware were more than half of
the request's CPU (py-spy, bench/README.md round 8). Under FastAPI each such request
ran inside ~20 nested coroutines: the exception and exit-stack middleware, the router and the
included routers' matching, the route's handler with two exit stacks of its own, and two
`send` wrappers that every server-sent event passed through. At 1000 web UI visitors ~1700
requests were in flight at once, and their suspended coroutines (14 MB) and deques (12 MB:
FastAPI's exit stacks among them) were most of the app's growth (bench/README.md, issue 19).

These routes already read their fields, user and services by hand (routes/pages.py:
`sent_form`); here they are matched by Starlette's path rules and called directly, and what
FastAPI did for them is done in a few lines: the CSRF check of the composer's posts, the
query's numbers and patterns, and the app's own exception handlers (error_handlers.py) for
what the route raises before its response starts. They are not in the OpenAPI schema, as
none of the web UI's routes are.
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable, Mapping

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from webapp.web.csrf import require_csrf_token
from webapp.web.error_handlers import PAGE_TAG

Endpoint = Callable[[Request], Awaitable[Response]]
TRUE_WORDS = frozenset({"1", "true", "on", "yes", "t", "y"})  # what a `bool` query parameter accepts
FALSE_WORDS = frozenset({"0", "false", "off", "no", "f", "n"})
INTEGER = re.compile(r"\s*[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?\s*", re.ASCII)  # what a pydantic `int` takes from a string


class DirectRoute(Route):
    """A path and method the edge serves itself. `csrf`: a web UI form, whose token is checked first.
    `tags`: as a FastAPI route's, read by the error handlers (PAGE_TAG: errors answer as HTML).
    `owns_path`: no FastAPI route shares the path, so another method is answered 405 here."""

    def __init__(self, path: str, endpoint: Endpoint, *, methods: list[str], csrf: bool, tags: list[str],
                 owns_path: bool) -> None:
        super().__init__(path, endpoint, methods=methods, include_in_schema=False)
        self.methods = set(methods)  # (Starlette adds HEAD to a GET: here only a page asks for it)
        self.csrf, self.tags, self.owns_path = csrf, tags, owns_path


class DirectRoutes:
    """An ordered list of direct routes (the first that matches serves), and how one is served.
    A group's `tags` and `owns_paths` apply to each of its routes (see DirectRoute)."""

    def __init__(self, *groups: DirectRoutes, tags: list[str] | None = None, owns_paths: bool = False) -> None:
        self.routes: list[DirectRoute] = [route for group in groups for route in group.routes]
        self.tags = tags if tags is not None else [PAGE_TAG]
        self.owns_paths = owns_paths
        self.exception_handlers: Mapping[Any, Callable[..., Awaitable[Response]]] = {}

    def get(self, path: str) -> Callable[[Endpoint], Endpoint]:
        """A stream (its HEAD is not served: a HEAD opens no stream)."""
        return self._add(path, ["GET"], csrf=False)

    def page(self, path: str) -> Callable[[Endpoint], Endpoint]:
        """A page no FastAPI route shares: GET, and HEAD for an uptime check (FastAPI's GET routes answer
        HEAD 405); another method is a 405 here."""
        return self._add(path, ["GET", "HEAD"], csrf=False, owns_path=True)

    def post(self, path: str) -> Callable[[Endpoint], Endpoint]:
        return self._add(path, ["POST"], csrf=True)

    def _add(self, path: str, methods: list[str], *, csrf: bool, owns_path: bool = False) -> Callable[[Endpoint], Endpoint]:
        def register(endpoint: Endpoint) -> Endpoint:
            self.routes.append(DirectRoute(path, endpoint, methods=methods, csrf=csrf, tags=self.tags,
                                           owns_path=owns_path or self.owns_paths))
            return endpoint
        return register

    def use_handlers(self, handlers: Mapping[Any, Callable[..., Awaitable[Response]]]) -> None:
        """The app's exception handlers (the mapping itself: handlers installed later count too)."""
        self.exception_handlers = handlers

    def find(self, scope: Scope) -> DirectRoute | None:
        """The route for this request, its path parameters put in `scope`; None: FastAPI's routes serve it
        (also a path of ours with another method, e.g. the GET of `/c/{id}/messages`, unless it owns the path)."""
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL or (match is Match.PARTIAL and route.owns_path):
                scope.update(child_scope)
                scope["route"] = route
                return route
        return None

    async def serve(self, route: DirectRoute, scope: Scope, receive: Receive, send: Send) -> None:
        """What the route answers, or the app's handler's answer to what it raised. An error while a
        response streams is past answering: it goes up, as an unhandled one does (a 500 if nothing was sent)."""
        request = Request(scope, receive, send)
        try:
            if scope["method"] not in route.methods:
                raise HTTPException(status_code=405, headers={"Allow": ", ".join(sorted(route.methods))})
            if route.csrf:
                await require_csrf_token(request)
            response = await route.endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Callable[..., Awaitable[Response]] | None:
        """As Starlette looks one up: by status for an HTTP error, else by the nearest class; the
        app's catch-all (Exception, 500) is left to the outermost middleware, where it runs anyway."""
        handlers = self.exception_handlers
        if isinstance(exc, HTTPException) and exc.status_code != 500 and exc.status_code in handlers:
            return handlers[exc.status_code]
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                return handlers[cls]
        return None


# the query's fields, read by hand: a 422 where FastAPI's `Query(...)` gave one (an explicit empty
# pattern-checked field, `channel=`, counts as absent) -------------------------------------

def _invalid(name: str, kind: str, value: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("query", name), "input": value, "msg": message}])


def query_int(request: Request, name: str, default: int | None, *, low: int, high: int) -> int | None:
    """An integer in [low, high] (ASCII digits; "5.0" is 5, as pydantic reads it), or `default` when absent."""
    value = request.query_params.get(name)
    if value is None:
        return default
    if not INTEGER.fullmatch(value):
        raise _invalid(name, "int_parsing", value, "Input should be a valid integer")
    number = int(value.strip().partition(".")[0])
    if not low <= number <= high:
        raise _invalid(name, "range", value, f"Input should be between {low} and {high}")
    return number


def query_bool(request: Request, name: str) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return False
    word = value.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise _invalid(name, "bool_parsing", value, "Input should be a valid boolean")


def query_text(request: Request, name: str, *, max_length: int, pattern: re.Pattern[str] | None = None) -> str:
    """The text ("" when absent), at most `max_length` long and (`pattern`) matching it."""
    value = request.query_params.get(name, "")
    if len(value) > max_length:
        raise _invalid(name, "string_too_long", value, f"String should have at most {max_length} characters")
    if value and pattern is not None and not pattern.fullmatch(value):
        raise _invalid(name, "string_pattern_mismatch", value, "String should match the pattern")
    return value
