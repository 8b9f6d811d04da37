"""One error path for pages and API: status, localized text and form (webapp/error_handlers.py, htmx.py).

A tiny app with one page route group and one API route group, both failing on purpose,
served in-process by TestClient: no server, no Redis.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError

from webapp.base.errors import SessionNotFound
from webapp.base.i18n import t
from webapp.base.metrics import Metrics
from webapp.web.error_handlers import PAGE_TAG, install_error_handlers

HTMX = {"HX-Request": "true"}
EN = {"Accept-Language": "en-US,en;q=0.9"}


def failing_router(prefix: str, tags: list[str] | None = None) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=tags or [])

    @router.get("/missing")
    async def missing() -> None:
        raise SessionNotFound()

    @router.get("/storage")
    async def storage() -> None:
        raise RedisConnectionError("Connection refused")

    @router.get("/count")
    async def count(n: int) -> dict[str, int]:
        return {"n": n}

    return router


@pytest.fixture(scope="module")
def client(metrics: Metrics) -> Iterator[TestClient]:
    app = FastAPI()
    install_error_handlers(app, metrics)
    app.include_router(failing_router("/api"))
    app.include_router(failing_router("/page", [PAGE_TAG]))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def redis_errors(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("chat_redis_errors_total") or 0.0


@pytest.mark.parametrize(
    ("path", "status", "zh", "en"),
    [
        ("/api/missing", 404, "会话不存在", "Conversation not found"),
        ("/api/storage", 503, "数据存储服务异常，请稍后重试", "Storage is unavailable, please try again"),
        ("/api/count?n=many", 422, "请求参数无效: n", "Invalid request: n"),
        ("/api/count", 422, "请求参数无效: n", "Invalid request: n"),
    ],
)
def test_an_api_error_is_json_detail_in_chinese_by_default_and_english_on_request(
    client: TestClient, path: str, status: int, zh: str, en: str
) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"detail": zh}

    response = client.get(path, headers=EN)
    assert response.status_code == status
    assert response.json() == {"detail": en}


def test_the_language_cookie_picks_the_api_error_language(client: TestClient) -> None:
    client.cookies.set("lang", "en")
    try:
        assert client.get("/api/missing", headers={"Accept-Language": "zh-CN"}).json() == {
            "detail": "Conversation not found"
        }
    finally:
        client.cookies.clear()


@pytest.mark.parametrize(
    ("path", "status", "key"),
    [
        ("/page/missing", 404, "error.session_not_found"),
        ("/page/storage", 503, "error.storage"),
        ("/page/count?n=many", 422, "error.invalid_input"),
    ],
)
def test_a_page_error_is_an_html_error_page_with_the_same_status(
    client: TestClient, path: str, status: int, key: str
) -> None:
    response = client.get(path, headers=EN)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text
    assert t(key, "en") in response.text
    assert t("ui.error_title", "en") in response.text
    assert "HX-Retarget" not in response.headers
    assert "Connection refused" not in response.text  # never the exception's own text


@pytest.mark.parametrize(
    ("path", "status", "key"),
    [
        ("/page/missing", 404, "error.session_not_found"),
        ("/page/storage", 503, "error.storage"),
        ("/page/count?n=many", 422, "error.invalid_input"),
    ],
)
def test_an_htmx_page_error_is_a_toast_retargeted_into_the_toasts(
    client: TestClient, path: str, status: int, key: str
) -> None:
    response = client.get(path, headers=HTMX)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["HX-Retarget"] == "#toasts"
    assert response.headers["HX-Reswap"] == "beforeend"
    assert "<html" not in response.text
    assert 'class="toast toast--error"' in response.text
    assert t(key, "zh") in response.text


def test_an_htmx_history_restore_gets_the_whole_error_page(client: TestClient) -> None:
    response = client.get("/page/missing", headers={**HTMX, "HX-History-Restore-Request": "true"})
    assert response.status_code == 404
    assert "<html" in response.text
    assert "HX-Retarget" not in response.headers


def test_a_redis_error_counts_in_the_metrics_whichever_route_raised_it(client: TestClient, metrics: Metrics) -> None:
    before = redis_errors(metrics)
    client.get("/api/storage")
    client.get("/page/storage", headers=HTMX)
    assert redis_errors(metrics) == before + 2


def test_a_domain_error_does_not_count_as_a_redis_error(client: TestClient, metrics: Metrics) -> None:
    before = redis_errors(metrics)
    client.get("/api/missing")
    assert redis_errors(metrics) == before


def test_a_browser_navigating_to_an_unknown_path_gets_the_html_404_page(client: TestClient) -> None:
    response = client.get("/no/such/page", headers={"Accept": "text/html,application/xhtml+xml"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert t("error.not_found", "zh") in response.text


def test_an_unknown_path_without_accept_html_gets_json_404(client: TestClient) -> None:
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert response.json() == {"detail": "页面不存在"}
    assert client.get("/no/such/page", headers=EN).json() == {"detail": "Page not found"}


def test_an_unknown_api_path_gets_json_404_even_from_a_browser(client: TestClient) -> None:
    response = client.get("/api/nope", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert response.json() == {"detail": "页面不存在"}


def test_the_app_starts_while_its_redis_cluster_is_not_up_yet_and_readiness_says_so() -> None:
    """A PaaS may start the app before its Cluster: it serves, and /readyz answers 503 until Redis does."""
    from fastapi.testclient import TestClient

    from webapp.config import Settings
    from webapp.main import create_app

    settings = Settings(_env_file=None, redis_url="redis://127.0.0.1:1", redis_cluster=True,  # type: ignore[call-arg]
                        secret_key="unit-test-secret-key-0123456789", openai_api_key="k")
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 503
