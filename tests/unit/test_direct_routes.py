"""The routes the edge serves itself (webapp/direct_routes.py): matching, fall-through to FastAPI,
errors answered by the app's own handlers, and the query read by hand.

A tiny app with the real edge, the real error handlers and a few direct routes, served
in-process by TestClient: no server, no Redis.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.testclient import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.exceptions import HTTPException

from webapp.base.errors import SessionNotFound
from webapp.base.metrics import Metrics
from webapp.core.turns.channels import CHANNEL_ID
from webapp.web.direct_routes import DirectRoutes, query_bool, query_int, query_text
from webapp.web.edge import Edge
from webapp.web.error_handlers import install_error_handlers

HTMX = {"HX-Request": "true"}
EN = {"Accept-Language": "en-US,en;q=0.9"}

direct = DirectRoutes()  # page routes: errors as HTML
streams = DirectRoutes(tags=["turns"], owns_paths=True)  # as the web UI's streams: errors as JSON


@direct.get("/c/new/thing")  # declared first: it wins over the pattern below
async def draft_thing(request: Request) -> Response:
    return PlainTextResponse("the draft's")


@direct.get("/c/{session_id}/thing")
async def thing(request: Request) -> Response:
    return PlainTextResponse(f"thing of {request.path_params['session_id']}")


@direct.get("/c/{session_id}/missing")
async def missing(request: Request) -> Response:
    raise SessionNotFound()


@direct.get("/c/{session_id}/storage")
async def storage(request: Request) -> Response:
    raise RedisConnectionError("Connection refused")


@direct.get("/c/{session_id}/teapot")
async def teapot(request: Request) -> Response:
    raise HTTPException(status_code=404)


@direct.get("/c/{session_id}/bug")
async def bug(request: Request) -> Response:
    raise RuntimeError("a bug")


@direct.page("/p/{session_id}")
async def a_page(request: Request) -> Response:
    return PlainTextResponse(f"page of {request.path_params['session_id']}")


@direct.post("/c/{session_id}/thing")
async def post_thing(request: Request) -> Response:
    return PlainTextResponse("posted")


@streams.get("/s/{session_id}/events")
async def stream_events(request: Request) -> Response:
    if request.path_params["session_id"] == "gone":
        raise SessionNotFound()
    return PlainTextResponse("events")


@direct.get("/q")
async def query(request: Request) -> Response:
    return JSONResponse({
        "after": query_int(request, "after", None, low=0, high=100),
        "searching": query_bool(request, "searching"),
        "channel": query_text(request, "channel", max_length=8, pattern=CHANNEL_ID),
    })


@pytest.fixture(scope="module")
def client(metrics: Metrics) -> Iterator[TestClient]:
    app = FastAPI()
    routes = DirectRoutes(direct, streams)
    routes.use_handlers(app.exception_handlers)
    app.add_middleware(Edge, metrics=metrics, log_requests=False, trusted_hosts="", secret="s" * 32,
                       max_body_bytes=10_000, direct=routes)
    install_error_handlers(app, metrics)  # (after: the handlers installed later count too)

    @app.put("/c/{session_id}/thing")  # the same path with another method: FastAPI's
    async def put_thing(session_id: str) -> dict[str, str]:
        return {"put": session_id}

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_the_first_direct_route_that_matches_serves_with_its_path_parameters(client: TestClient) -> None:
    assert client.get("/c/new/thing").text == "the draft's"
    assert client.get("/c/abc/thing").text == "thing of abc"
    assert client.get("/c/abc/thing").headers["x-content-type-options"] == "nosniff"  # the edge's headers still


def test_a_path_of_a_direct_route_with_another_method_goes_on_to_fastapi(client: TestClient) -> None:
    assert client.put("/c/abc/thing").json() == {"put": "abc"}
    assert client.head("/c/abc/thing").status_code == 405  # not the GET's route: a HEAD opens no stream
    assert client.get("/not-direct").status_code == 404


def test_a_path_only_direct_routes_serve_answers_another_method_with_405(client: TestClient) -> None:
    for method in ("POST", "PUT", "DELETE", "HEAD"):
        response = client.request(method, "/s/abc/events")
        assert response.status_code == 405, method
        assert response.headers["allow"] == "GET"


def test_a_direct_page_answers_get_and_head_and_another_method_405(client: TestClient) -> None:
    assert client.get("/p/abc").text == "page of abc"
    head = client.head("/p/abc")  # (an uptime check's; FastAPI's own GET routes answer HEAD 405)
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "11"
    for method in ("POST", "PUT", "DELETE"):  # the page owns its path: no FastAPI route has it
        response = client.request(method, "/p/abc")
        assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD", method


def test_a_direct_post_checks_the_pages_csrf_token_first(client: TestClient) -> None:
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
def test_what_a_direct_route_raises_is_answered_as_a_pages_error(
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
])
def test_a_bad_query_is_a_422_naming_nothing_it_should_not(client: TestClient, params: dict[str, str]) -> None:
    response = client.get("/q", params=params, headers=EN)
    assert response.status_code == 422
    assert "<b>" not in response.text
