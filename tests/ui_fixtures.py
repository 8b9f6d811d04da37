"""Fixtures for the web UI tests: a headless Debian Chromium driven by Playwright, and helpers.

The browser is launched once per session from /usr/bin/chromium (never `playwright
install`); every test gets fresh contexts, so each one is a new anonymous user.
Screenshots of the main states go to $TEST_ARTIFACTS (default ./test-artifacts).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from tests.conftest import KEYS, REPO_ROOT, AppServer, owner_of, unique

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CONVERSATION_URL = re.compile(rf".*/c/({UUID})$")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(os.environ.get("TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)")
    with playwright_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def open_page(browser: Any, app_server: AppServer) -> Iterator[Callable[..., Any]]:
    """`open_page(path="/", **context_options)`: a page of a new user (English UI unless told)."""
    contexts: list[Any] = []

    def open_(path: str = "/", *, lang: str = "en", **options: Any) -> Any:
        options.setdefault("viewport", {"width": 1280, "height": 800})
        options.setdefault("locale", "en-US" if lang == "en" else "zh-CN")
        options.setdefault("extra_http_headers", {"Accept-Language": "en-US,en" if lang == "en" else "zh-CN,zh"})
        context = browser.new_context(base_url=app_server.base_url, **options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        page.errors = []  # type: ignore[attr-defined]
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        # the Content-Security-Policy is on in every browser test: anything it blocks is a failure
        page.on("console", lambda message: "Content Security Policy" in message.text
                and csp_violations.append(message.text))
        page.goto(path)
        return page

    csp_violations: list[str] = []
    yield open_
    for context in contexts:
        context.close()
    assert csp_violations == [], "the page did something its Content-Security-Policy forbids"


def conversation_id(page: Any) -> str:
    match = CONVERSATION_URL.match(page.url)
    assert match, page.url
    return match.group(1)


def send(page: Any, text: str) -> None:
    """Type a message and press Enter, as a user does; returns once the user's bubble is shown."""
    count = page.locator("#message-list .msg--user").count()
    box = page.locator("#composer-input")
    box.fill(text)
    box.press("Enter")
    page.wait_for_function(
        "n => document.querySelectorAll('#message-list .msg--user').length > n", arg=count
    )


def wait_reply_done(page: Any, timeout: float = 15_000) -> None:
    page.wait_for_selector(".msg--streaming", state="detached", timeout=timeout)


def wait_count(page: Any, selector: str, count: int) -> None:
    page.wait_for_function(
        "([selector, count]) => document.querySelectorAll(selector).length === count", arg=[selector, count]
    )


def wait_focus(page: Any, selector: str) -> None:
    """Until the focused element (a live one: Chromium keeps a removed one until the next frame) matches."""
    page.wait_for_function(
        "selector => { const el = document.activeElement; return !!el && el.isConnected && el.matches(selector) }",
        arg=selector,
    )


def add_message(redis_client: redis.Redis, session_id: str, role: str, content: str, status: str = "complete") -> None:
    """Put a message straight into a conversation (e.g. Markdown a model might write)."""
    message = {"id": "m_" + unique("x")[2:], "role": role, "content": content,
               "ts": "2025-01-02T03:04:05.000+00:00", "status": status}
    uid = owner_of(redis_client, session_id)
    redis_client.rpush(KEYS.messages(uid, session_id), orjson.dumps(message))
    redis_client.hincrby(KEYS.meta(uid, session_id), "count", 1)
