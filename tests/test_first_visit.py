"""A first visit stores nothing: `/` without a cookie is an empty chat; the first send makes the conversation.

Every crawler, link preview and `curl` used to cost a conversation (about five keys). These
tests run against an app with a Redis of its own, so DBSIZE counts only what they cause.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from bs4 import BeautifulSoup

from tests.conftest import AppServer, RedisServer, _start_app, _stop_app, unique, wait_until, with_page_token
from tests.fake_upstream import ThreadedFakeUpstream, parse_reply
from tests.ui_fixtures import conversation_id, wait_focus

EN = {"Accept-Language": "en"}


@pytest.fixture(scope="module")
def quiet(upstream: ThreadedFakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppServer, redis.Redis]]:
    """The app with a redis-server nobody else uses."""
    directory = Path(tempfile.mkdtemp(prefix="chat-first-"))  # short: unix socket paths are limited
    server = RedisServer(directory)
    server.start()
    app = _start_app(tmp_path_factory.mktemp("first-visit"), {
        "REDIS_URL": server.url, "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_MODEL": "fake-model",
    })
    keys = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        yield app, keys
    finally:
        keys.close()
        _stop_app(app)
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def empty(quiet: tuple[AppServer, redis.Redis]) -> tuple[AppServer, redis.Redis]:
    app, keys = quiet
    keys.flushdb()
    time.sleep(0.3)  # what the app still writes after a test (a reply's search words, its lease's end)
    keys.flushdb()
    return app, keys


def new_visitor(app: AppServer) -> httpx.Client:
    client = httpx.Client(base_url=app.base_url, timeout=30, headers=EN)
    client.event_hooks["request"].append(with_page_token(client))
    return client


def wait_for_the_first_reply(visitor: httpx.Client, session_id: str) -> None:
    """(so the reply ends before the next test empties Redis under it)"""
    def replied() -> bool:
        items = visitor.get(f"/api/sessions/{session_id}/messages").json()["items"]
        return len(items) == 3 and items[-1]["role"] == "assistant"
    wait_until(replied, timeout=15)


def test_get_home_without_a_cookie_writes_nothing_and_shows_an_empty_chat(empty: tuple[AppServer, redis.Redis]) -> None:
    app, keys = empty
    for headers in ({}, {"HX-Request": "true"}, {"User-Agent": "curl/8.5.0"}):
        with httpx.Client(base_url=app.base_url, timeout=30, headers=EN) as bot:
            page = bot.get("/", headers=headers)
            assert page.status_code == 200
            assert "chat_uid" in page.cookies  # an identity, in its signed cookie only
        with httpx.Client(base_url=app.base_url, timeout=30, headers=EN) as monitor:  # an uptime check's HEAD
            head = monitor.head("/")
            assert head.status_code == 200 and head.content == b"" and head.headers["content-type"].startswith("text/html")
    assert keys.dbsize() == 0

    html = BeautifulSoup(page.text, "html.parser")
    assert html.select_one("#message-list .msg--assistant")  # the welcome message, as before
    assert html.select_one("#suggestions")
    assert html.select_one("#composer")["action"] == "/c/new/messages"


def test_the_first_send_creates_the_conversation_and_its_reply(empty: tuple[AppServer, redis.Redis]) -> None:
    app, keys = empty
    with new_visitor(app) as visitor:
        visitor.get("/")
        refused = visitor.post("/c/new/messages", data={"message": "   "})
        assert refused.status_code == 400  # the page again, with the error
        assert keys.dbsize() == 0, "a refused first send made something"

        message = unique("first")
        sent = visitor.post("/c/new/messages", data={"message": message, "request_id": "r1"})
        assert sent.status_code == 303
        session_id = sent.headers["location"].removeprefix("/c/")
        again = visitor.post("/c/new/messages", data={"message": message, "request_id": "r1"})  # a double click
        assert again.status_code == 303 and again.headers["location"] == sent.headers["location"]

        def reply() -> str | None:
            contents = [m["content"] for m in visitor.get(f"/api/sessions/{session_id}/messages").json()["items"]]
            return contents[-1] if len(contents) == 3 and contents[1] == message else None

        # the welcome message, the message, the reply: the model got the welcome and the message
        assert parse_reply(wait_until(reply, timeout=10))["ctx"] == 2
        sessions = visitor.get("/api/sessions").json()["items"]
        assert [s["id"] for s in sessions] == [session_id]  # one conversation, not one per click
        home = visitor.get("/")
        assert home.status_code == 303 and home.headers["location"] == f"/c/{session_id}"


def test_htmx_first_send_swaps_the_draft_for_the_new_conversation(empty: tuple[AppServer, redis.Redis]) -> None:
    app, _ = empty
    with new_visitor(app) as visitor:
        visitor.get("/")
        sent = visitor.post("/c/new/messages", data={"message": unique("hx")},
                            headers={"HX-Request": "true", "HX-Current-URL": f"{app.base_url}/"})
        assert sent.status_code == 200
        assert sent.headers["HX-Retarget"] == "#main" and sent.headers["HX-Reswap"] == "outerHTML"
        session_id = sent.headers["HX-Push-Url"].removeprefix("/c/")
        pane = BeautifulSoup(sent.text, "html.parser")
        assert pane.select_one("#main")["data-conversation"] == session_id
        assert pane.select_one("#composer")["action"] == f"/c/{session_id}/messages"
        assert pane.select_one(".msg--streaming")  # the reply follows in the pane
        # the sidebar's list comes along, out of band, with the new conversation in it: no refresh after
        listed = pane.select_one("#session-list[hx-swap-oob]")
        assert [li["id"] for li in listed.select("li.session")] == [f"conv-{session_id}"]
        assert "sessions-changed" not in sent.headers.get("HX-Trigger", "")
        wait_for_the_first_reply(visitor, session_id)


def _pane_summary(html: str) -> dict[str, Any]:
    """What a conversation pane shows, less what differs between two renders of the same state (a
    page's channel id, a form's request id, how far the streaming reply has got)."""
    pane = BeautifulSoup(html, "html.parser").select_one("#main")
    messages = [(sorted(c for c in m["class"] if c.startswith("msg--")), m.get("id", ""),
                 "" if "msg--streaming" in m["class"] else m.select_one(".msg__body").get_text(" ", strip=True))
                for m in pane.select("#message-list .msg")]
    return {
        "conversation": pane["data-conversation"], "messages": messages,
        "forms": sorted((f.get("action", ""), f.get("hx-post", "")) for f in pane.select("form")),
        "title": pane.select_one("h1, .chat-title").get_text(" ", strip=True),
        "role": [o.get("value") for o in pane.select("option[selected]")],
        "streaming": [m.get("data-turn") or m.get("id") for m in pane.select(".msg--streaming")],
        "suggestions": bool(pane.select_one("#suggestions")),
    }


def test_the_first_sends_pane_is_what_reading_the_new_conversation_back_shows(
    empty: tuple[AppServer, redis.Redis]
) -> None:
    """The first send answers with what it wrote rather than reading it back: the same pane."""
    app, _ = empty
    with new_visitor(app) as visitor:
        visitor.get("/")
        hx = {"HX-Request": "true", "HX-Current-URL": f"{app.base_url}/"}
        sent = visitor.post("/c/new/messages", data={"message": unique("same") + " [[tokens:40]] [[delay:50]]"},
                            headers=hx)
        session_id = sent.headers["HX-Push-Url"].removeprefix("/c/")
        read_back = visitor.get(f"/c/{session_id}", headers=hx)  # (the reply is still being written)
        first, again = _pane_summary(sent.text), _pane_summary(read_back.text)
        assert first == again
        assert len(first["messages"]) == 3 and first["streaming"] and not first["suggestions"]
        wait_for_the_first_reply(visitor, session_id)


def test_a_first_send_lists_the_conversations_another_tab_made_meanwhile(
    empty: tuple[AppServer, redis.Redis]
) -> None:
    app, _ = empty
    with new_visitor(app) as visitor:
        visitor.get("/")  # the draft, in this tab
        other_tab = visitor.post("/api/sessions", json={}).json()["id"]
        sent = visitor.post("/c/new/messages", data={"message": unique("second")},
                            headers={"HX-Request": "true", "HX-Current-URL": f"{app.base_url}/"})
        session_id = sent.headers["HX-Push-Url"].removeprefix("/c/")
        listed = BeautifulSoup(sent.text, "html.parser").select_one("#session-list[hx-swap-oob]")
        assert [li["id"] for li in listed.select("li.session")] == [f"conv-{session_id}", f"conv-{other_tab}"]
        wait_for_the_first_reply(visitor, session_id)


def test_a_double_clicked_first_send_makes_one_conversation_with_one_welcome(
    empty: tuple[AppServer, redis.Redis]
) -> None:
    """Without JavaScript a double click posts the form twice at once; both posts race to make the
    conversation. One is made, with one welcome message and one user message."""
    app, keys = empty
    for attempt in range(5):
        with new_visitor(app) as visitor:
            visitor.get("/")
            message, request_id = unique("double"), f"dbl{attempt}"
            barrier = threading.Barrier(3)

            def post(_: int) -> str:
                with httpx.Client(base_url=app.base_url, timeout=30, headers=EN, cookies=visitor.cookies) as tab:
                    tab.event_hooks["request"].append(with_page_token(visitor))
                    barrier.wait()
                    answer = tab.post("/c/new/messages", data={"message": message, "request_id": request_id})
                    assert answer.status_code == 303, answer.text
                    return answer.headers["location"]

            with ThreadPoolExecutor(3) as pool:
                locations = set(pool.map(post, range(3)))
            assert len(locations) == 1
            session_id = locations.pop().removeprefix("/c/")
            assert [s["id"] for s in visitor.get("/api/sessions").json()["items"]] == [session_id]

            def replied() -> list[dict[str, Any]] | None:
                items = visitor.get(f"/api/sessions/{session_id}/messages").json()["items"]
                return items if items[-1]["role"] == "assistant" and items[-1]["status"] == "complete" else None
            items = wait_until(replied, timeout=15)
            assert [(m["role"], m["content"] if m["role"] == "user" else "") for m in items] == \
                [("assistant", ""), ("user", message), ("assistant", "")]


def test_choosing_a_role_on_the_empty_chat_creates_it_with_that_role(empty: tuple[AppServer, redis.Redis]) -> None:
    app, _ = empty
    with new_visitor(app) as visitor:
        visitor.get("/")
        chosen = visitor.post("/c/new/role", data={"role": "teacher"})
        assert chosen.status_code == 303
        session_id = chosen.headers["location"].removeprefix("/c/")
        assert visitor.get(f"/api/sessions/{session_id}").json()["role"] == "teacher"
        assert visitor.post("/c/new/role", data={"role": "programmer"}).headers["location"] == f"/c/{session_id}"
        assert len(visitor.get("/api/sessions").json()["items"]) == 1  # a second click reuses the untouched one
        assert visitor.post("/c/new/role", data={"role": "nobody"}).status_code == 400


@pytest.mark.browser
def test_first_send_from_the_empty_chat_in_chromium(browser: Any, empty: tuple[AppServer, redis.Redis]) -> None:
    app, keys = empty
    context = browser.new_context(base_url=app.base_url, locale="en-US",
                                  extra_http_headers={"Accept-Language": "en-US,en"})
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/")
        page.wait_for_load_state("networkidle")
        assert keys.dbsize() == 0, "opening the page (and whatever it loads) stored something"

        message = f"{unique('chromium')} [[tokens:20]] [[delay:20]]"
        box = page.locator("#composer-input")
        box.fill(message)
        box.press("Enter")  # the keyboard, as a user sends
        page.wait_for_url("**/c/*")
        session_id = conversation_id(page)
        page.wait_for_selector(".msg--streaming", state="detached", timeout=15_000)
        assert page.locator("#message-list .msg--user .msg__body").inner_text() == message
        assert page.locator(f"#main[data-conversation='{session_id}']").count() == 1
        assert page.locator("#suggestions").count() == 0
        wait_focus(page, "#composer-input")  # ready for the next message
        assert page.locator(f"#conv-{session_id}").count() == 1  # listed in the sidebar
        box.fill("and a second one")
        box.press("Enter")
        page.wait_for_function("() => document.querySelectorAll('#message-list .msg--user').length === 2")
        page.wait_for_selector(".msg--streaming", state="detached", timeout=15_000)
        assert len(httpx.get(f"{app.base_url}/api/sessions", cookies={
            "chat_uid": next(c["value"] for c in context.cookies() if c["name"] == "chat_uid")}).json()["items"]) == 1
        assert errors == []
    finally:
        context.close()
