"""Regenerate, edit and resend, and versions in real Chromium: with the mouse, the keyboard and no JavaScript."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import AppServer, parse_reply
from tests.ui_fixtures import send, wait_reply_done

pytestmark = pytest.mark.browser


def label(page: Any, nth: int = -1) -> str:
    labels = page.locator("#message-list .versions__label")
    return labels.nth(nth if nth >= 0 else labels.count() + nth).inner_text()


def last_reply(page: Any) -> str:
    return page.locator("#message-list > article.msg--assistant").last.locator(".msg__body").inner_text()


def regenerate(page: Any) -> None:
    before = last_reply(page)
    page.locator("#message-list > article.msg--assistant").last.hover()
    page.locator("#message-list > article.msg--assistant:last-of-type .msg__regen button").click()
    page.wait_for_selector(".msg--streaming", state="attached")
    wait_reply_done(page)
    page.wait_for_function("b => { const all = document.querySelectorAll('#message-list > article.msg--assistant');"
                           " const body = all.length && all[all.length - 1].querySelector('.msg__body');"
                           " return body && body.innerText !== b }", arg=before)


def test_regenerate_twice_flip_versions_and_reload(open_page: Callable[..., Any]) -> None:
    page = open_page()
    send(page, "tell me something [[tokens:14]] [[vary]]")
    wait_reply_done(page)
    first = last_reply(page)
    regenerate(page)
    regenerate(page)
    third = last_reply(page)
    assert label(page) == "3/3" and first != third
    assert page.locator("#message-list .msg--user").count() == 1
    page.locator("#message-list .versions__prev").last.click()
    page.wait_for_function("() => document.querySelector('#message-list .versions__label').innerText === '2/3'")
    page.locator("#message-list .versions__prev").last.click()
    page.wait_for_function("() => document.querySelector('#message-list .versions__label').innerText === '1/3'")
    assert last_reply(page) == first
    page.reload()
    assert label(page) == "1/3" and last_reply(page) == first  # the version shown is kept
    # the keyboard: ] flips forward, Alt+R regenerates
    page.evaluate("() => document.activeElement && document.activeElement.blur()")  # out of the text field
    page.keyboard.press("]")
    page.wait_for_function("() => document.querySelector('#message-list .versions__label').innerText === '2/3'")
    page.locator("#composer-input").press("Alt+r")
    # the new reply streams, or (a fast one, on a busy machine) has already ended as version 4
    page.wait_for_function("() => document.querySelector('.msg--streaming') || document.querySelector("
                           "'#message-list .versions__label').innerText === '4/4'")
    wait_reply_done(page)
    page.wait_for_function("() => document.querySelector('#message-list .versions__label').innerText === '4/4'")
    assert not page.errors


def test_edit_the_second_of_four_messages_then_flip_back(open_page: Callable[..., Any]) -> None:
    page = open_page()
    for text in ("first words", "second words", "third words", "fourth words"):
        send(page, text)
        wait_reply_done(page)
    page.locator("#message-list .msg--user").nth(1).hover()
    page.locator("#message-list .msg--user").nth(1).locator(".msg__edit").click()
    box = page.locator("#message-list .edit__input")
    box.fill("second, better words")
    page.locator("#message-list .edit button[type=submit]").click()
    page.wait_for_selector(".msg--streaming", state="attached")
    wait_reply_done(page)
    users = page.locator("#message-list .msg--user .msg__body")
    assert [users.nth(n).inner_text() for n in range(users.count())] == ["first words", "second, better words"]
    assert parse_reply(last_reply(page))["ctx"] == 4  # the model saw only the new branch
    assert label(page) == "2/2"
    page.locator("#message-list .versions__prev").click()
    page.wait_for_function("() => document.querySelectorAll('#message-list .msg--user').length === 4")
    users = page.locator("#message-list .msg--user .msg__body")
    assert [users.nth(n).inner_text() for n in range(4)] == ["first words", "second words", "third words",
                                                             "fourth words"]
    # ↑ in the empty message box edits the last message
    page.locator("#composer-input").focus()
    page.locator("#composer-input").press("ArrowUp")
    page.wait_for_selector("#message-list .edit__input")
    assert page.locator("#message-list .edit__input").input_value() == "fourth words"
    assert not page.errors


def test_regenerate_and_edit_without_javascript(browser: Any, app_server: AppServer) -> None:
    context = browser.new_context(base_url=app_server.base_url, java_script_enabled=False,
                                  extra_http_headers={"Accept-Language": "en-US,en"})
    try:
        page = context.new_page()
        page.goto("/")
        page.fill("#composer-input", "no script here [[vary]]")
        page.click(".round-btn--send")
        page.wait_for_selector("#message-list .msg--user")
        for _ in range(40):  # the page refreshes itself while the reply is written
            if page.locator(".msg--streaming").count() == 0 and page.locator(".msg__regen").count():
                break
            page.wait_for_timeout(250)
            page.reload()
        page.locator(".msg__regen button").last.click()  # a real form post, then back to the page
        for _ in range(40):
            if page.locator(".msg--streaming").count() == 0 and page.locator(".versions__label").count():
                break
            page.wait_for_timeout(250)
            page.reload()
        assert page.locator(".versions__label").inner_text() == "2/2"
        page.click("#message-list .msg--user .msg__edit")  # a link to the page with the form in place
        page.fill("#message-list .edit__input", "edited without script")
        page.click("#message-list .edit button[type=submit]")
        page.wait_for_selector("#message-list .msg--user")
        assert page.locator("#message-list .msg--user .msg__body").inner_text() == "edited without script"
        assert page.locator("#message-list .msg--user .versions__label").inner_text() == "2/2"
    finally:
        context.close()


def test_copy_a_whole_message_as_text_or_markdown(browser: Any, app_server: AppServer) -> None:
    context = browser.new_context(base_url=app_server.base_url, extra_http_headers={"Accept-Language": "en-US,en"})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_server.base_url)
    try:
        page = context.new_page()
        page.goto("/")
        send(page, "**bold** and `code` [[echo]]")
        wait_reply_done(page)
        reply = page.locator("#message-list > article.msg--assistant").last
        reply.hover()
        reply.locator("[data-copy-source]").click()
        assert page.evaluate("navigator.clipboard.readText()") == "**bold** and `code`"
        reply.locator("[data-copy-message]").click()
        assert page.evaluate("navigator.clipboard.readText()") == "bold and code"
    finally:
        context.close()
