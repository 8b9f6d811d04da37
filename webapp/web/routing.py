"""One router, two kinds of route: FastAPI's, and plain routes for the few that every turn or visit takes.

Every route is in the app's one router (Starlette's: the first full match serves; a path that
matches with another method is a 405 with Allow). Most are FastAPI routes: dependencies,
`Form()`/`Query()` models, OpenAPI. A **plain route** (`PlainRoute`) is a Starlette route whose
endpoint reads its request by hand: no dependency solving, no request/response wrappers of its
own. A route may be plain when every web UI turn or every visit takes it and a benchmark shows
FastAPI's solving as a large share of its cost; it then calls the same functions as the rest for
who the caller is, ownership (`deps.owned_conversation_of`) and CSRF (`csrf.require_csrf_token`,
run here for a `csrf` route), and the one list of them is web/routes/plain.py.

Under FastAPI each such request ran inside ~20 nested coroutines, with two `send` wrappers that
every server-sent event passed through; at 1000 web UI visitors their suspended coroutines and
FastAPI's exit stacks were most of the app's growth (docs/performance-history.md, issues 19, 31).
Errors raised before a response starts go to the app's exception handlers as any route's do
(Starlette's exception middleware); the query helpers below give the 422 a `Query(...)` gave.
Page routes (FastAPI's and plain) answer HEAD as GET (`PageRouter`); streams do not (a HEAD opens
no stream). The API's routes of every turn (`/chat/start`, `/chat/stream`, `/api/turns/{id}/events`)
are plain routes too; each keeps a FastAPI declaration of the same endpoint, which never serves (the
plain route matches first) but documents it for OpenAPI, its fields described by `documented_query`.
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable, Sequence

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from webapp.web.csrf import require_csrf_token

Endpoint = Callable[[Request], Awaitable[Response]]
TRUE_WORDS = frozenset({"1", "true", "on", "yes", "t", "y"})  # what a `bool` query parameter accepts
FALSE_WORDS = frozenset({"0", "false", "off", "no", "f", "n"})
INTEGER = re.compile(r"\s*[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?\s*", re.ASCII)  # what a pydantic `int` takes from a string


class PlainRoute(Route):
    """A Starlette route of the app's router whose endpoint reads the request by hand.

    `methods` exactly (Starlette would add HEAD to a GET: a page lists it, a stream does not);
    `csrf`: a web UI form, whose token is checked before the endpoint runs; `tags`: as a FastAPI
    route's, read by the error handlers (PAGE_TAG: errors answer as HTML)."""

    def __init__(self, path: str, endpoint: Endpoint, *, methods: Sequence[str], tags: Sequence[str],
                 csrf: bool = False) -> None:
        super().__init__(path, endpoint, methods=list(methods), include_in_schema=False)
        self.methods = set(methods)
        self.csrf, self.tags = csrf, list(tags)
        self.allow = ", ".join(sorted(self.methods))

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self  # (the error handlers read its tags, as a FastAPI route's)
        return match, child_scope

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in self.methods:
            raise HTTPException(status_code=405, headers={"Allow": self.allow})
        request = Request(scope, receive, send)
        if self.csrf:
            await require_csrf_token(request)
        response = await self.endpoint(request)
        await response(scope, receive, send)


class PageRouter(APIRouter):
    """An APIRouter whose GET routes answer HEAD too, as a page should (an uptime check's HEAD /c/...
    was a 405 while HEAD / answered)."""

    def get(self, path: str, **kwargs: Any) -> Callable[[Any], Any]:  # type: ignore[override]
        return self.api_route(path, methods=["GET", "HEAD"], **kwargs)


# the query's fields, read by hand: a 422 where FastAPI's `Query(...)` gave one (an explicit empty
# pattern-checked field, `channel=`, counts as absent) -------------------------------------

def _invalid(name: str, kind: str, value: str | None, message: str) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("query", name), "input": value, "msg": message}])


def query_int(request: Request, name: str, default: int | None, *, low: int, high: int) -> int | None:
    """An integer in [low, high] (ASCII digits; "5.0" is 5, as pydantic reads it), or `default` when absent."""
    value = request.query_params.get(name)
    if value is None:
        return default
    if not INTEGER.fullmatch(value):
        raise _invalid(name, "int_parsing", value, "Input should be a valid integer")
    try:
        number = int(value.strip().partition(".")[0])
    except ValueError:  # past Python's 4,300 digits: pydantic says the same
        raise _invalid(name, "int_parsing_size", value, "Unable to parse input string as an integer, exceeded"
                       " maximum size") from None
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


def required_query(request: Request, name: str) -> str:
    """A query field FastAPI would have required (`name: str`): a 422 naming it when absent."""
    value = request.query_params.get(name)
    if value is None:
        raise _invalid(name, "missing", None, "Field required")
    return value


def documented_query(*fields: tuple[Any, ...]) -> dict[str, Any]:
    """`openapi_extra` for a FastAPI route that reads its query by hand (no parameters for FastAPI to
    solve on every request): (name, where: path, query or header, required, description[, the value's
    schema: a string by default]) of each field, as FastAPI would have described them, and its 422."""
    parameters = []
    for name, where, required, description, *value in fields:
        kind = value[0] if value else {"type": "string"}
        schema: dict[str, Any] = dict(kind) if required else {"anyOf": [kind, {"type": "null"}]}
        parameter: dict[str, Any] = {"name": name, "in": where, "required": required, "schema": schema}
        if description:
            parameter["description"] = schema["description"] = description
        parameters.append(parameter)
    return {"parameters": parameters, "responses": {"422": {
        "description": "Validation Error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}}}


def query_text(request: Request, name: str, *, max_length: int, pattern: re.Pattern[str] | None = None) -> str:
    """The text ("" when absent), at most `max_length` long and (`pattern`) matching it."""
    value = request.query_params.get(name, "")
    if len(value) > max_length:
        raise _invalid(name, "string_too_long", value, f"String should have at most {max_length} characters")
    if value and pattern is not None and not pattern.fullmatch(value):
        raise _invalid(name, "string_pattern_mismatch", value, "String should match the pattern")
    return value
