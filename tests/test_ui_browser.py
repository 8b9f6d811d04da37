"""The web UI in a real headless Chromium: what a person sees and does, keyboard included."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import SYSTEM_PROMPTS, AppServer, _start_app, _stop_app, unique
from tests.fake_upstream import expected_reply, expected_sys_tag
from tests.ui_fixtures import (
    add_message,
    conversation_id,
    send,
    wait_count,
    wait_focus,
    wait_reply_done,
)

pytestmark = pytest.mark.browser

SLOW = "[[tokens:40]] [[delay:30]]"  # ~1.2 s of visible streaming


def stream_lengths(page: Any, timeout: float = 15.0) -> list[int]:
    """Lengths of the streaming bubble's text, sampled until the bubble is replaced by the final one."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        length = page.evaluate(
            "() => document.querySelector('.msg--streaming .msg__stream')?.textContent.length ?? -1"
        )
        if length < 0:
            return seen
        if not seen or seen[-1] != length:
            seen.append(length)
        time.sleep(0.03)
    raise AssertionError(f"the reply did not finish within {timeout} s (lengths seen: {seen})")


def last_reply(page: Any) -> str:
    """The newest reply as rendered; whitespace collapsed, as HTML shows Markdown text."""
    return " ".join(page.locator("#message-list .msg--assistant .msg__body").last.inner_text().split())


def shown(text: str) -> str:
    return " ".join(text.split())


def test_three_messages_stream_and_text_grows_before_the_end(open_page: Callable[..., Any], artifacts: Path) -> None:
    page = open_page()
    for turn, ctx in ((1, 2), (2, 4), (3, 6)):
        message = f"{unique('turn')} number {turn} {SLOW}"
        send(page, message)
        page.wait_for_selector(".msg--streaming")
        if turn == 1:
            page.wait_for_function("() => document.querySelector('.msg--streaming .msg__stream')?.textContent.length > 20")
            page.screenshot(path=str(artifacts / "chat-streaming.png"))
        lengths = stream_lengths(page)
        growing = [n for n in lengths if n > 0]
        assert len(set(growing)) >= 3, f"turn {turn}: text did not grow while streaming: {lengths}"
        assert page.locator("#composer-input").input_value() == ""
        assert last_reply(page) == shown(expected_reply(ctx, SYSTEM_PROMPTS["assistant"], message, 40))
    assert page.locator("#message-list .msg--user").count() == 3
    assert page.locator(".round-btn--send").count() == 1 and page.locator(".round-btn--stop").count() == 0
    assert not page.errors
    page.screenshot(path=str(artifacts / "chat-light.png"))


MARKDOWN_REPLY = """Here is a **short** answer with `inline code`:

## Steps

1. Install the package
2. Run it

| Language | Typing |
|---|---|
| Python | dynamic |
| Rust | static |

```python
def greet(name: str) -> str:
    return f"Hello, {name}!"
```

> Read [the docs](https://docs.python.org/3/) for more."""


def test_markdown_reply_with_code_copy_in_light_and_dark(
    open_page: Callable[..., Any], redis_client: Any, artifacts: Path
) -> None:
    page = open_page(lang="zh")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    send(page, "用 Markdown 演示一下 <b>不是标签</b>")
    wait_reply_done(page)
    add_message(redis_client, conversation_id(page), "user", "Show me some Markdown")
    add_message(redis_client, conversation_id(page), "assistant", MARKDOWN_REPLY)
    page.reload()
    reply = page.locator("#message-list .msg--assistant").last
    assert reply.locator("h2").inner_text() == "Steps"
    assert reply.locator("table tr").count() == 3
    assert reply.locator(".code .code__lang").inner_text() == "python"
    assert "<b>" in page.locator("#message-list .msg--user .msg__body").first.inner_text()  # shown, not applied
    reply.locator(".code__copy").click()
    assert page.evaluate("() => navigator.clipboard.readText()") == 'def greet(name: str) -> str:\n    return f"Hello, {name}!"'
    assert reply.locator(".code__copy").inner_text() == "已复制"
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert page.locator("#composer-input").get_attribute("placeholder") == "输入消息…"
    page.screenshot(path=str(artifacts / "chat-markdown-light.png"))
    page.emulate_media(color_scheme="dark")
    assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") == "rgb(27, 28, 32)"
    page.screenshot(path=str(artifacts / "chat-dark.png"))


def test_switching_role_changes_the_system_prompt_of_the_next_reply(open_page: Callable[..., Any]) -> None:
    page = open_page()
    page.click("#role-button")
    page.click("#role-programmer")
    page.wait_for_selector("#role-button:has-text('Programmer')")
    assert page.locator("#role-programmer").get_attribute("aria-pressed") == "true"
    send(page, unique("role"))
    wait_reply_done(page)
    assert f"sys={expected_sys_tag(SYSTEM_PROMPTS['programmer'])}" in last_reply(page)

    page.click("#role-button")
    page.click("#role-teacher")
    page.wait_for_selector("#role-button:has-text('AI Teacher')")
    page.reload()  # the conversation remembers its role
    assert "AI Teacher" in page.locator("#role-button").inner_text()
    send(page, unique("role"))
    wait_reply_done(page)
    assert f"sys={expected_sys_tag(SYSTEM_PROMPTS['teacher'])}" in last_reply(page)


def test_create_rename_delete_undo_and_search_conversations(
    open_page: Callable[..., Any], artifacts: Path
) -> None:
    page = open_page()
    topics = ["apples", "bananas", "cherries"]
    for topic in topics:
        send(page, f"Tell me about {topic}")
        wait_reply_done(page)
        page.click("#new-chat")
        page.wait_for_selector("#message-list .suggestions")
    sidebar = page.locator("#session-list .session")
    wait_count(page, "#session-list .session", 4)  # three chats plus the new, empty one
    # pressing "New chat" again while the newest is still empty opens that one instead of piling up empties
    page.click("#new-chat")
    page.wait_for_timeout(300)
    assert sidebar.count() == 4
    titles = page.locator("#session-list .session__title").all_inner_texts()
    assert titles[1:] == [f"Tell me about {t}" for t in reversed(topics)]  # newest activity first

    # rename inline
    item = page.locator("#session-list .session", has_text="bananas")
    item_id = item.get_attribute("id")
    item.hover()
    item.locator("a[title='Rename']").click()
    wait_focus(page, f"#{item_id} .rename__input")  # the field has the focus, its text selected
    field = page.locator(".rename__input")
    field.fill("Yellow fruit <script>")
    field.press("Enter")
    page.wait_for_selector("#session-list .session__title:text-is('Yellow fruit <script>')")
    wait_focus(page, f"#{item_id} .session__link")
    # Esc cancels a rename
    item = page.locator("#session-list .session", has_text="apples")
    item_id = item.get_attribute("id")
    item.hover()
    item.locator("a[title='Rename']").click()
    wait_focus(page, f"#{item_id} .rename__input")
    page.locator(".rename__input").fill("not kept")
    page.locator(".rename__input").press("Escape")
    page.wait_for_selector(".rename__input", state="detached")
    wait_focus(page, f"#{item_id} .session__link")
    assert "not kept" not in page.locator("#session-list").inner_text()

    # delete with the confirm dialog, then undo from the toast
    item = page.locator("#session-list .session", has_text="cherries")
    item.hover()
    item.locator("button[title='Delete']").click()
    page.wait_for_selector("#confirm[open]")
    assert "cherries" in page.locator("#confirm-text").inner_text()
    page.click("#confirm button[value='ok']")
    page.wait_for_selector("#session-list .session:has-text('cherries')", state="detached")
    toast = page.locator("#toasts .toast", has_text="Deleted")
    toast.wait_for()
    toast.locator("button", has_text="Undo").click()
    page.wait_for_selector("#session-list .session:has-text('cherries')")

    # deleting the open conversation opens another and still offers Undo
    open_id = conversation_id(page)
    page.locator(f"#conv-{open_id}").hover()
    page.locator(f"#conv-{open_id} button[title='Delete']").click()
    page.click("#confirm button[value='ok']")
    page.wait_for_function("id => !location.pathname.endsWith(id)", arg=open_id)
    page.locator("#toasts .toast", has_text="Deleted").locator("button", has_text="Undo").click()
    page.wait_for_selector(f"#conv-{open_id}")
    wait_focus(page, "#composer-input")

    # search titles and content
    page.fill("#search", "yellow")
    wait_count(page, "#session-list .session", 1)
    assert page.locator("#session-list .session__title").inner_text() == "Yellow fruit <script>"
    page.fill("#search", "about cherr")  # content of a message
    page.wait_for_function(
        "() => [...document.querySelectorAll('#session-list .session__title')].map(e => e.textContent).join() === 'Tell me about cherries'"
    )
    page.fill("#search", "durian")
    page.wait_for_selector("#session-list .sessions__empty")
    page.fill("#search", "e")
    wait_count(page, "#session-list .session", 3)
    page.screenshot(path=str(artifacts / "sidebar-search.png"))
    assert not page.errors


def test_every_keyboard_shortcut(open_page: Callable[..., Any], artifacts: Path) -> None:
    page = open_page()
    ids = []
    for topic in ("one", "two", "three"):
        send(page, f"Topic {topic}")
        wait_reply_done(page)
        ids.append(conversation_id(page))
        page.keyboard.press("Control+Shift+O")  # new conversation
        page.wait_for_selector("#message-list .suggestions")
        assert conversation_id(page) != ids[-1]
    empty = conversation_id(page)
    order = [empty, *reversed(ids)]  # the sidebar, newest activity first

    wait_focus(page, "#composer-input")

    # Alt+ArrowDown / Alt+ArrowUp walk the sidebar, even while typing
    page.locator("#composer-input").type("draft")
    page.keyboard.press("Alt+ArrowDown")
    page.wait_for_url(f"**/c/{order[1]}")
    page.keyboard.press("Alt+ArrowDown")
    page.wait_for_url(f"**/c/{order[2]}")
    page.keyboard.press("Alt+ArrowUp")
    page.wait_for_url(f"**/c/{order[1]}")
    page.wait_for_selector(f"#conv-{order[1]}[class~='is-active']")
    wait_focus(page, "#composer-input")  # focus follows to the opened conversation's composer

    # Ctrl+K and / focus the search; arrows and j/k move through results; Enter opens; Esc goes back
    page.keyboard.press("Control+k")
    wait_focus(page, "#search")
    page.keyboard.press("Escape")
    wait_focus(page, "#composer-input")
    page.locator("#scroller").click()
    page.keyboard.press("/")
    wait_focus(page, "#search")
    page.keyboard.press("ArrowDown")
    wait_focus(page, f"#conv-{order[0]} .session__link")
    page.keyboard.press("j")
    page.keyboard.press("ArrowDown")
    wait_focus(page, f"#conv-{order[2]} .session__link")
    page.keyboard.press("k")
    wait_focus(page, f"#conv-{order[1]} .session__link")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/c/{order[2]}")
    wait_focus(page, "#composer-input")  # an opened conversation is ready for typing
    page.keyboard.press("Control+k")
    page.keyboard.press("ArrowDown")
    wait_focus(page, f"#conv-{order[0]} .session__link")
    page.keyboard.press("Escape")
    wait_focus(page, "#composer-input")

    # the search reached as a conversation opens keeps the focus (htmx settles 20 ms after the swap)
    page.keyboard.press("Alt+ArrowUp")
    page.wait_for_url(f"**/c/{order[1]}")
    page.keyboard.press("Control+k")
    page.wait_for_timeout(100)
    wait_focus(page, "#search")
    page.keyboard.press("Alt+ArrowDown")
    page.wait_for_url(f"**/c/{order[2]}")
    wait_focus(page, "#composer-input")

    # Shift+Esc focuses the composer from anywhere
    page.locator("#search").focus()
    page.keyboard.press("Shift+Escape")
    wait_focus(page, "#composer-input")

    # Enter sends, Shift+Enter is a new line; Esc stops a streaming reply
    box = page.locator("#composer-input")
    box.type("first line")
    box.press("Shift+Enter")
    box.type("second line [[tokens:200]] [[delay:40]]")
    assert box.input_value().count("\n") == 1
    box.press("Enter")
    page.wait_for_selector(".round-btn--stop")
    page.wait_for_function("() => document.querySelector('.msg--streaming .msg__stream')?.textContent.length > 10")
    page.keyboard.press("Escape")
    wait_reply_done(page)
    assert page.locator("#message-list .msg--user .msg__body").last.inner_text() == "first line\nsecond line [[tokens:200]] [[delay:40]]"
    assert page.locator("#message-list .msg--interrupted").count() == 1
    assert "Stopped" in page.locator("#message-list .msg").last.inner_text()
    assert page.locator(".round-btn--send").count() == 1

    # ? and Ctrl+/ open the help dialog listing the shortcuts
    page.locator("#scroller").click()
    page.keyboard.press("?")
    page.wait_for_selector("#help[open]")
    assert "Ctrl" in page.locator("#help").inner_text()
    page.screenshot(path=str(artifacts / "help-dialog.png"))
    page.keyboard.press("Escape")
    page.wait_for_selector("#help:not([open])", state="attached")
    box.focus()
    page.keyboard.press("Control+/")
    page.wait_for_selector("#help[open]")
    page.keyboard.press("Control+/")
    page.wait_for_selector("#help:not([open])", state="attached")
    assert not page.errors


def test_conversation_urls_are_bookmarkable_and_back_forward_work(open_page: Callable[..., Any]) -> None:
    page = open_page()
    send(page, "First conversation")
    wait_reply_done(page)
    first = conversation_id(page)
    page.click("#new-chat")
    page.wait_for_selector("#message-list .suggestions")
    send(page, "Second conversation")
    wait_reply_done(page)
    second = conversation_id(page)
    assert page.title().startswith("Second conversation")
    page.click(f"#conv-{first} .session__link")
    page.wait_for_url(f"**/c/{first}")
    assert page.title().startswith("First conversation")  # the fragment carries the title
    assert page.locator(f"#conv-{first}").get_attribute("class").split() == ["session", "is-active"]
    page.go_back()
    page.wait_for_url(f"**/c/{second}")
    page.wait_for_selector("#message-list .msg--user:has-text('Second conversation')")
    page.go_forward()
    page.wait_for_url(f"**/c/{first}")
    page.wait_for_selector("#message-list .msg--user:has-text('First conversation')")
    assert page.locator("#session-list .session.is-active").get_attribute("id") == f"conv-{first}"
    # a bookmark opens the conversation directly
    other = page.context.new_page()
    other.goto(f"/c/{second}")
    assert other.locator("#message-list .msg--user .msg__body").inner_text() == "Second conversation"
    assert not page.errors


def test_long_history_shows_the_latest_page_and_loads_older_on_scroll_up(
    open_page: Callable[..., Any], redis_client: Any
) -> None:
    page = open_page()
    page.click("#new-chat")  # (/ shows an empty chat, stored nowhere: this makes one)
    page.wait_for_url("**/c/*")
    session_id = conversation_id(page)
    for n in range(1, 61):
        add_message(redis_client, session_id, "user" if n % 2 else "assistant", f"message {n}")
    page.reload()
    articles = page.locator("#message-list article")
    assert articles.count() == 30
    assert articles.last.inner_text().endswith("message 60")
    assert page.locator("#message-list article:has-text('message 59')").is_visible()  # opened at the newest
    top = page.locator("#message-list article").first
    top_text = top.locator(".msg__body").inner_text()
    page.evaluate("() => { const s = document.querySelector('#scroller'); s.scrollTop = -s.scrollHeight }")
    wait_count(page, "#message-list article", 60)
    assert page.locator("#message-list article .msg__body").nth(30).inner_text() == top_text
    assert page.locator(f"#message-list article:has-text('{top_text}')").is_visible()  # the view did not jump
    page.evaluate("() => { const s = document.querySelector('#scroller'); s.scrollTop = -s.scrollHeight }")
    wait_count(page, "#message-list article", 61)  # the welcome message, the very first
    assert page.locator("#message-list .older").count() == 0


def test_reload_mid_stream_resumes_the_reply(open_page: Callable[..., Any], app_server: AppServer) -> None:
    page = open_page()
    message = f"{unique('reload')} [[tokens:60]] [[delay:30]]"
    send(page, message)
    page.wait_for_function("() => document.querySelector('.msg--streaming .msg__stream')?.textContent.length > 30")
    page.reload()
    # the page shows what was written so far at once, then keeps streaming
    page.wait_for_selector(".msg--streaming")
    assert page.locator(".msg--streaming .msg__stream").inner_text().startswith("ctx=2")
    assert page.locator(".round-btn--stop").count() == 1
    lengths = stream_lengths(page)
    assert len(set(lengths)) >= 2, lengths
    assert last_reply(page) == shown(expected_reply(2, SYSTEM_PROMPTS["assistant"], message, 60))
    # a second reload shows the saved reply, once
    page.reload()
    assert page.locator("#message-list .msg--assistant").count() == 2
    assert not page.errors


def test_error_reply_offers_retry_and_keeps_the_message(open_page: Callable[..., Any]) -> None:
    page = open_page()
    text = f"{unique('please fail')} [[fail:400]] [[once]]"  # fails the first time only
    send(page, text)
    wait_reply_done(page)
    error = page.locator("#message-list .msg--error")
    assert error.count() == 1
    assert "unavailable" in error.inner_text()
    assert page.locator("#message-list .msg--user .msg__body").last.inner_text() == text
    error.locator("button", has_text="Retry").click()
    page.wait_for_selector("#message-list .msg--assistant:not(.msg--error):not(.msg--streaming) >> nth=1")
    wait_reply_done(page)
    # the same message answered again: not sent, nor stored, a second time
    assert page.locator("#message-list .msg--user").count() == 1
    assert page.locator("#message-list .msg--error").count() == 0
    page.reload()
    assert page.locator("#message-list .msg--user").count() == 1


def test_counter_and_limit_keep_what_was_typed(open_page: Callable[..., Any]) -> None:
    page = open_page()
    box = page.locator("#composer-input")
    box.fill("汉字" * 300)
    assert page.locator("#char-count").inner_text().startswith("600 / 1000")
    box.fill("x" * 1001)
    counter = page.locator("#char-count")
    assert "over" in counter.inner_text() and "is-over" in counter.get_attribute("class")
    assert page.locator(".round-btn--send").is_disabled()
    box.press("Enter")
    assert page.locator("#message-list .msg--user").count() == 0
    assert box.input_value() == "x" * 1001


def test_phone_viewport_uses_a_drawer(open_page: Callable[..., Any], artifacts: Path) -> None:
    page = open_page(viewport={"width": 360, "height": 740}, has_touch=True, is_mobile=True)
    page.locator("#composer-input").fill("Hello from a phone")
    page.locator(".round-btn--send").tap()  # on a phone Enter is a new line; the button sends
    page.wait_for_selector("#message-list .msg--user")
    wait_reply_done(page)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
    assert not page.locator("#sidebar").is_visible()
    page.screenshot(path=str(artifacts / "phone-chat.png"))
    page.click(".chat__menu")
    page.wait_for_function("() => getComputedStyle(document.querySelector('#sidebar')).transform === 'none'")
    page.wait_for_timeout(250)
    assert page.locator("#sidebar").is_visible()
    page.screenshot(path=str(artifacts / "phone-drawer.png"))
    first = conversation_id(page)
    page.click("#new-chat")
    page.wait_for_selector("#message-list .suggestions")
    page.wait_for_function("() => getComputedStyle(document.querySelector('#sidebar')).visibility === 'hidden'")
    page.click(".chat__menu")
    page.locator(f"#conv-{first} .session__link").click()
    page.wait_for_url(f"**/c/{first}")
    assert page.locator("#message-list .msg--user .msg__body").inner_text() == "Hello from a phone"


def test_works_without_javascript(browser: Any, app_server: AppServer, artifacts: Path) -> None:
    context = browser.new_context(
        base_url=app_server.base_url, java_script_enabled=False, viewport={"width": 1024, "height": 720},
        extra_http_headers={"Accept-Language": "en"},
    )
    try:
        page = context.new_page()
        page.goto("/")  # an empty chat, stored nowhere yet
        assert page.locator("#message-list .suggestions").count() == 1
        message = f"{unique('nojs')} [[tokens:40]] [[delay:40]]"
        page.fill("#composer-input", message)
        page.click(".round-btn--send")
        page.wait_for_url("**/c/*")  # POST makes the conversation, then 303 to it
        first = conversation_id(page)
        page.wait_for_selector(".msg--streaming")
        assert "refreshes itself" in page.locator(".msg--streaming").inner_text()
        page.screenshot(path=str(artifacts / "no-js-streaming.png"))
        # the page refreshes itself until the reply is complete
        page.wait_for_selector(".msg--streaming", state="detached", timeout=15_000)
        assert last_reply(page) == shown(expected_reply(2, SYSTEM_PROMPTS["assistant"], message, 40))
        assert page.locator(".msg__note:has-text('refreshes')").count() == 0

        # new conversation, role switch and sidebar links are plain forms and links
        page.click("#new-chat")
        page.wait_for_selector("#message-list .suggestions")
        second = conversation_id(page)
        assert second != first
        page.click("#role-button")
        page.click("#role-teacher")
        page.wait_for_url(f"**/c/{second}")
        assert "AI Teacher" in page.locator("#role-button").inner_text()
        page.click(f"#conv-{first} .session__link")
        page.wait_for_url(f"**/c/{first}")
        assert page.locator("#message-list .msg--user").count() == 1
        # a message that is too long comes back with the text still in the box
        page.fill("#composer-input", "y" * 1001)
        page.click(".round-btn--send")
        assert "1000" in page.locator(".composer__error").inner_text()
        assert page.locator("#composer-input").input_value() == "y" * 1001
        page.screenshot(path=str(artifacts / "no-js.png"))
    finally:
        context.close()


def test_a_send_moves_its_sidebar_item_to_the_top_without_reloading_the_list(open_page: Callable[..., Any]) -> None:
    """The POST brings the item (title, running mark) and the done event its reply preview, out of
    band: no GET /sidebar per turn. With search results shown, the list is asked for again."""
    page = open_page()
    send(page, "Tell me about apples")
    wait_reply_done(page)
    first = conversation_id(page)  # (the first send made the conversation)
    page.click("#new-chat")
    page.wait_for_selector("#message-list .suggestions")
    send(page, "Tell me about bananas")
    wait_reply_done(page)
    wait_count(page, "#session-list .session", 2)
    page.click(f"#conv-{first} .session__link")
    page.wait_for_selector(f"#main[data-conversation='{first}']")
    assert page.locator("#session-list .session").first.get_attribute("id") != f"conv-{first}"

    sidebar_requests: list[str] = []
    page.on("request", lambda request: "/sidebar" in request.url and sidebar_requests.append(request.url))
    message = f"{unique('move')} {SLOW}"
    send(page, message)
    items = page.locator("#session-list .session")
    assert items.first.get_attribute("id") == f"conv-{first}"
    assert items.count() == 2 and page.locator(f"#conv-{first}").count() == 1
    assert page.locator(f"#conv-{first} .session__running").count() == 1  # while the reply is written
    assert page.locator(f"#conv-{first}").get_attribute("aria-current") is None  # the link has it, not the item
    assert page.locator(f"#conv-{first} .session__link").get_attribute("aria-current") == "page"
    wait_reply_done(page)
    page.wait_for_selector(f"#conv-{first}:not(:has(.session__running))")
    reply = expected_reply(4, SYSTEM_PROMPTS["assistant"], message, 40)
    preview = page.locator(f"#conv-{first} .session__preview").inner_text()
    assert preview and shown(reply).startswith(shown(preview).rstrip("…"))
    page.wait_for_timeout(300)  # app.js would have asked 50 ms after done
    assert sidebar_requests == []
    assert not page.errors

    # search results in the sidebar: a send and its done each refresh them (with the query)
    page.fill("#search", "bananas")
    page.wait_for_function("() => document.querySelectorAll('#session-list .session').length === 1")
    sidebar_requests.clear()
    send(page, unique("while searching"))
    wait_reply_done(page)
    page.wait_for_function("() => true")
    page.wait_for_timeout(300)
    assert len(sidebar_requests) == 2 and all("q=bananas" in url for url in sidebar_requests)
    assert page.locator("#session-list .session").count() == 1
    assert page.locator(f"#conv-{first}").count() == 0
    assert not page.errors


def test_turns_ride_the_pages_one_stream_and_show_in_every_tab(open_page: Callable[..., Any]) -> None:
    """After the first send (which makes the conversation and opens its page's channel), every turn
    arrives on that one stream: no stream request per turn, no bubble twice. A second tab on the
    same conversation shows the turns sent from the first one as they are written."""
    page = open_page()
    send(page, unique("first"))
    wait_reply_done(page)
    session_id = conversation_id(page)
    other = page.context.new_page()
    other_errors: list[str] = []
    other.on("pageerror", lambda error: other_errors.append(str(error)))
    other.goto(f"/c/{session_id}")
    other.wait_for_selector("#message-list .msg--user")
    streams: list[str] = []
    page.on("request", lambda request: "/events" in request.url and streams.append(request.url))
    for turn in (2, 3):
        message = f"{unique(f'turn {turn}')} {SLOW}"
        send(page, message)
        # the other tab shows it too, while it is written
        other.wait_for_function("n => document.querySelectorAll('#message-list .msg--user').length === n", arg=turn)
        other.wait_for_selector(".msg--streaming .msg__stream:not(:empty)")
        wait_reply_done(page)
        wait_reply_done(other)
        reply = shown(expected_reply(2 * turn, SYSTEM_PROMPTS["assistant"], message, 40))
        for tab in (page, other):
            assert tab.locator("#message-list .msg--user").count() == turn
            assert tab.locator("#message-list .msg--assistant").count() == turn + 1  # (and the welcome)
            assert shown(tab.locator("#message-list .msg--assistant .msg__body").last.inner_text()) == reply
            assert tab.locator("#composer-actions .round-btn--send").count() == 1
    assert streams == []  # both turns came on the stream the page already had open
    assert not page.errors and not other_errors


CHANNEL_STATE = """() => {
  const data = document.querySelector(".chat__inner")["htmx-internal-data"];
  return data && data.sseEventSource ? data.sseEventSource.readyState : -1;
}"""
SET_VISIBILITY = """(hidden) => {
  Object.defineProperty(document, "hidden", { value: hidden, configurable: true });
  Object.defineProperty(document, "visibilityState", { value: hidden ? "hidden" : "visible", configurable: true });
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_a_channel_that_does_not_bring_the_turn_is_reconnected(open_page: Callable[..., Any]) -> None:
    """The server still counts the page's channel as open (here: another connection under its id, as a
    connection that died unseen stays counted) but the page hears nothing: the post says which turn
    the channel brings, and when nothing of it came, app.js reconnects the channel, which shows it."""
    from tests.test_channels import ChannelReader  # (the HTTP tests' reader of a channel)

    page = open_page()
    send(page, unique("first"))
    wait_reply_done(page)
    session_id = conversation_id(page)
    url = page.locator(".chat__inner").get_attribute("sse-connect")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    import httpx
    with httpx.Client(base_url=page.url.split("/c/")[0], cookies=cookies) as client:
        stand_in = ChannelReader(client, url)
        try:
            page.evaluate("""() => document.querySelector(".chat__inner")["htmx-internal-data"].sseEventSource.close()""")
            assert page.evaluate(CHANNEL_STATE) == 2  # closed, and the extension does not know
            message = unique("unheard")
            send(page, message)  # (returns once the bubble shows: after the reconnect's `sync`)
            assert stand_in.next().event == "turn"  # the server handed the turn to the channel it knew
            wait_reply_done(page)
            assert page.locator("#message-list .msg--user").count() == 2
            assert shown(page.locator("#message-list .msg--user .msg__body").last.inner_text()) == message
            assert page.locator("#message-list .msg--assistant").count() == 3
            assert page.evaluate(CHANNEL_STATE) == 1  # open again
        finally:
            stand_in.close()
    assert not page.errors and session_id == conversation_id(page)


def test_a_hidden_tab_lets_go_of_its_channel_and_catches_up_when_shown(open_page: Callable[..., Any]) -> None:
    """A browser has few connections per server: a tab in the background closes its channel; shown
    again, it reconnects and shows what it missed. A turn whose post answered with the bubbles (the
    channel was away) is not shown a second time when the channel is back."""
    page = open_page()
    send(page, unique("first"))
    wait_reply_done(page)
    session_id = conversation_id(page)
    page.evaluate(SET_VISIBILITY, True)
    page.wait_for_function(f"() => ({CHANNEL_STATE})() === 2")
    other = page.context.new_page()
    other.goto(f"/c/{session_id}")
    missed = unique("missed")
    send(other, missed)
    wait_reply_done(other)
    page.evaluate(SET_VISIBILITY, False)
    page.wait_for_function("t => [...document.querySelectorAll('#message-list .msg--user')].some(e => e.textContent.includes(t))",
                           arg=missed)
    page.wait_for_function(f"() => ({CHANNEL_STATE})() === 1")
    assert page.locator("#message-list .msg--assistant").count() == 3

    # a post while the page's channel is away (here: closed unseen) answers with the bubbles and a
    # stream of the turn's own; the channel, back, shows the list as it is: each message once
    page.evaluate("""() => document.querySelector(".chat__inner")["htmx-internal-data"].sseEventSource.close()""")
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    channel_id = page.locator('#composer input[name="channel"]').get_attribute("value")
    alone = unique("alone")
    page.evaluate("""([url, message, token, channel]) => htmx.ajax("POST", url, {target: "#message-list",
                       swap: "beforeend", values: {message: message, csrf_token: token, channel: channel}})""",
                  [f"/c/{session_id}/messages", alone, token, channel_id])
    page.wait_for_function("t => [...document.querySelectorAll('#message-list .msg--user')].some(e => e.textContent.includes(t))",
                           arg=alone)
    wait_reply_done(page)
    page.evaluate(SET_VISIBILITY, True)
    page.evaluate(SET_VISIBILITY, False)
    page.wait_for_function(f"() => ({CHANNEL_STATE})() === 1")
    page.wait_for_timeout(500)
    assert page.locator("#message-list .msg--user").count() == 3
    assert page.locator("#message-list .msg--assistant").count() == 4
    assert not page.errors


@pytest.fixture(scope="module")
def two_workers(redis_server: Any, upstream: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    app = _start_app(tmp_path_factory.mktemp("workers"), {
        "REDIS_URL": redis_server.url, "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_MODEL": "fake-model", "WEB_CONCURRENCY": "2",
    })
    yield app
    _stop_app(app)


def test_with_two_workers_every_turn_shows_once_whichever_worker_takes_the_post(
    browser: Any, two_workers: AppServer,
) -> None:
    """With two workers the page's channel is on one and a post may reach the other, which answers
    with the bubbles and a stream of the turn's own: every reply still shows once, whole."""
    context = browser.new_context(base_url=two_workers.base_url, locale="en-US",
                                  extra_http_headers={"Accept-Language": "en-US,en"})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/")
        for turn in range(1, 6):  # (which worker takes which connection is the kernel's choice)
            message = unique(f"worker {turn}")
            send(page, message)
            wait_reply_done(page)
            assert page.locator("#message-list .msg--user").count() == turn
            assert page.locator("#message-list .msg--assistant").count() == turn + 1
            reply = shown(expected_reply(2 * turn, SYSTEM_PROMPTS["assistant"], message, 12))
            assert shown(page.locator("#message-list .msg--assistant .msg__body").last.inner_text()) == reply
        assert not errors
    finally:
        context.close()
