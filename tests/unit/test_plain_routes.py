"""Plain routes (webapp/web/routing.py) in the app's one router: matching beside FastAPI's routes,
405s and HEAD as on every page, the CSRF check, errors answered by the app's own handlers, and the
query read by hand.

A tiny app with the real edge, the real error handlers, a few plain routes and FastAPI routes
(one sharing a plain route's path), served in-process by TestClient: no server, no Redis.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.testclient import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from webapp.base.errors import SessionNotFound
from webapp.base.metrics import Metrics
from webapp.core.turns.channels import CHANNEL_ID
from webapp.main import create_app
from webapp.web.edge import Edge
from webapp.web.error_handlers import PAGE_TAG, install_error_handlers
from webapp.web.routing import PageRouter, PlainRoute, query_bool, query_int, query_text

HTMX = {"HX-Request": "true"}
EN = {"Accept-Language": "en-US,en;q=0.9"}
PAGE, STREAM = [PAGE_TAG], ["turns"]


async def draft_thing(request: Request) -> Response:
    return PlainTextResponse("the draft's")


async def thing(request: Request) -> Response:
    return PlainTextResponse(f"thing of {request.path_params['session_id']}")


async def missing(request: Request) -> Response:
    raise SessionNotFound()


async def storage(request: Request) -> Response:
    raise RedisConnectionError("Connection refused")


async def teapot(request: Request) -> Response:
    raise HTTPException(status_code=404)


async def bug(request: Request) -> Response:
    raise RuntimeError("a bug")


async def a_page(request: Request) -> Response:
    return PlainTextResponse(f"page of {request.path_params['session_id']}")


async def post_thing(request: Request) -> Response:
    return PlainTextResponse("posted")


async def stream_events(request: Request) -> Response:
    if request.path_params["session_id"] == "gone":
        raise SessionNotFound()
    return PlainTextResponse("events")


async def query(request: Request) -> Response:
    return JSONResponse({
        "after": query_int(request, "after", None, low=0, high=100),
        "searching": query_bool(request, "searching"),
        "channel": query_text(request, "channel", max_length=8, pattern=CHANNEL_ID),
    })


ROUTES = [
    PlainRoute("/c/new/thing", draft_thing, methods=["GET"], tags=PAGE),  # first: wins over the pattern below
    PlainRoute("/c/{session_id}/thing", thing, methods=["GET"], tags=PAGE),
    PlainRoute("/c/{session_id}/missing", missing, methods=["GET"], tags=PAGE),
    PlainRoute("/c/{session_id}/storage", storage, methods=["GET"], tags=PAGE),
    PlainRoute("/c/{session_id}/teapot", teapot, methods=["GET"], tags=PAGE),
    PlainRoute("/c/{session_id}/bug", bug, methods=["GET"], tags=PAGE),
    PlainRoute("/p/{session_id}", a_page, methods=["GET", "HEAD"], tags=PAGE),
    PlainRoute("/c/{session_id}/thing", post_thing, methods=["POST"], tags=PAGE, csrf=True),
    PlainRoute("/s/{session_id}/events", stream_events, methods=["GET"], tags=STREAM),
    PlainRoute("/q", query, methods=["GET"], tags=PAGE),
]


@pytest.fixture(scope="module")
def client(metrics: Metrics) -> Iterator[TestClient]:
    app = FastAPI()
    app.add_middleware(Edge, metrics=metrics, log_requests=False, trusted_hosts="", secret="s" * 32,
                       max_body_bytes=10_000)
    install_error_handlers(app, metrics)
    app.router.routes[:0] = ROUTES  # as main.py puts routes/plain.py's list first

    @app.put("/c/{session_id}/thing")  # the same path with another method: FastAPI's
    async def put_thing(session_id: str) -> dict[str, str]:
        return {"put": session_id}

    pages = PageRouter(include_in_schema=False, tags=PAGE)

    @pages.get("/f/{session_id}")  # a FastAPI page: GET and HEAD, as a plain page
    async def fastapi_page(session_id: str) -> Response:
        return PlainTextResponse(f"page of {session_id}")

    app.include_router(pages)

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_the_first_route_that_matches_serves_with_its_path_parameters(client: TestClient) -> None:
    assert client.get("/c/new/thing").text == "the draft's"
    assert client.get("/c/abc/thing").text == "thing of abc"
    assert client.get("/c/abc/thing").headers["x-content-type-options"] == "nosniff"  # the edge's headers still


def test_a_plain_routes_path_with_another_method_is_served_by_the_fastapi_route_that_has_it(
    client: TestClient,
) -> None:
    assert client.put("/c/abc/thing").json() == {"put": "abc"}
    assert client.post("/c/abc/thing", headers=HTMX).status_code == 403  # the plain POST (its CSRF check)
    head = client.head("/c/abc/thing")  # a stream-like GET lists no HEAD: a HEAD opens no stream
    assert head.status_code == 405 and head.headers["allow"] == "GET"
    assert client.get("/not-a-route").status_code == 404


def test_a_path_only_a_plain_route_has_answers_another_method_with_405(client: TestClient) -> None:
    for method in ("POST", "PUT", "DELETE", "HEAD"):
        response = client.request(method, "/s/abc/events")
        assert response.status_code == 405, method
        assert response.headers["allow"] == "GET"


@pytest.mark.parametrize("path", ["/p/abc", "/f/abc"], ids=["plain page", "FastAPI page"])
def test_every_page_answers_get_and_head_and_another_method_405(client: TestClient, path: str) -> None:
    assert client.get(path).text == "page of abc"
    head = client.head(path)  # (an uptime check's)
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "11"
    for method in ("POST", "PUT", "DELETE"):
        response = client.request(method, path)
        assert response.status_code == 405, method
        assert sorted(response.headers["allow"].split(", ")) == ["GET", "HEAD"], method


def test_a_plain_post_checks_the_pages_csrf_token_first(client: TestClient) -> None:
    response = client.post("/c/abc/thing", headers=HTMX)  # (no settings: no caller has a token to match)
    assert response.status_code == 403
    assert response.headers.get("HX-Retarget") == "#toasts"


def test_a_streams_errors_are_json_as_every_streams(client: TestClient) -> None:
    response = client.get("/s/gone/events", headers={**EN, "Accept": "text/event-stream"})
    assert response.status_code == 404
    assert response.json() == {"detail": "Conversation not found"}
    assert client.get("/s/here/events").text == "events"


@pytest.mark.parametrize(("path", "status", "en"), [
    ("/c/x/missing", 404, "Conversation not found"),
    ("/c/x/storage", 503, "Storage is unavailable, please try again"),
    ("/c/x/teapot", 404, None),
])
def test_what_a_plain_route_raises_is_answered_as_a_pages_error(
    client: TestClient, path: str, status: int, en: str | None,
) -> None:
    page = client.get(path, headers=EN)
    assert page.status_code == status
    assert page.headers["content-type"].startswith("text/html")  # a page route's error: HTML, not JSON
    if en:
        assert en in page.text
    toast = client.get(path, headers={**EN, **HTMX})
    assert toast.status_code == status
    assert toast.headers.get("HX-Retarget") == "#toasts"


def test_a_storage_error_counts_in_the_metrics(client: TestClient, metrics: Metrics) -> None:
    before = metrics.registry.get_sample_value("chat_redis_errors_total") or 0.0
    client.get("/c/x/storage")
    assert metrics.registry.get_sample_value("chat_redis_errors_total") == before + 1


def test_an_error_no_handler_knows_is_a_plain_500(client: TestClient) -> None:
    response = client.get("/c/x/bug")
    assert response.status_code == 500
    assert "a bug" not in response.text


@pytest.mark.parametrize(("params", "expected"), [
    ({}, {"after": None, "searching": False, "channel": ""}),
    ({"after": "0", "searching": "true", "channel": "ab-_9"}, {"after": 0, "searching": True, "channel": "ab-_9"}),
    ({"after": " 100 ", "searching": "0"}, {"after": 100, "searching": False, "channel": ""}),
    ({"after": "5.0", "searching": "On"}, {"after": 5, "searching": True, "channel": ""}),
    ({"after": "1_0", "searching": "N"}, {"after": 10, "searching": False, "channel": ""}),
])
def test_the_query_is_read_as_pydantic_reads_it(
    client: TestClient, params: dict[str, str], expected: dict[str, object],
) -> None:
    response = client.get("/q", params=params)
    assert response.status_code == 200
    assert response.json() == expected


@pytest.mark.parametrize("params", [
    {"after": "-1"}, {"after": "101"}, {"after": "1.5"}, {"after": "abc"}, {"after": ""}, {"after": "9" * 30},
    {"after": "\u0663"}, {"after": "\uff15"}, {"after": "5."}, {"after": "1e1"},
    {"searching": "maybe"}, {"searching": " true"}, {"channel": "a b"}, {"channel": "<b>"}, {"channel": "c" * 9},
    {"after": "1" * 5000}, {"after": "0" * 5000 + "1"},  # (past Python's 4,300 digits: a 422, not a 500)
])
def test_a_bad_query_is_a_422_naming_nothing_it_should_not(client: TestClient, params: dict[str, str]) -> None:
    response = client.get("/q", params=params, headers=EN)
    assert response.status_code == 422
    assert "<b>" not in response.text


# the app's own: the API's calls of every turn are plain routes, still documented -----------------

API_TURN_CALLS = [("POST", "/chat/start"), ("GET", "/chat/stream"), ("GET", "/api/turns/{turn_id}/events")]


@pytest.mark.parametrize(("method", "path"), API_TURN_CALLS)
def test_the_apis_calls_of_every_turn_are_served_by_plain_routes(method: str, path: str) -> None:
    app = create_app()
    scope = {"type": "http", "method": method, "path": path.replace("{turn_id}", "t1"), "root_path": ""}
    served = next(route for route in app.router.routes if route.matches(scope)[0] is Match.FULL)

    assert isinstance(served, PlainRoute)  # (its FastAPI declaration, after it, only documents it: below)


def test_the_apis_plain_calls_keep_their_documentation() -> None:
    schema = create_app().openapi()
    paths = schema["paths"]

    start = paths["/chat/start"]["post"]
    assert [p["name"] for p in start["parameters"]] == ["user_id"]
    assert start["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/StartOut"}
    assert set(schema["components"]["schemas"]["StartOut"]["properties"]) == {
        "session_id", "user_id", "message", "welcome_message"}
    assert "422" in start["responses"]
    stream = paths["/chat/stream"]["get"]
    assert [p["name"] for p in stream["parameters"]] == ["session_id", "message", "role", "user_id", "Last-Event-ID"]
    assert [p["name"] for p in paths["/api/turns/{turn_id}/events"]["get"]["parameters"]] == [
        "turn_id", "after", "Last-Event-ID"]
