"""Custom roles, the model selector, export/import and read-only links, in headless Chromium.

Uses the suite's one browser (tests/ui_fixtures.py); the fake model's `[[whoami]]` reply says
which model and system prompt it was sent, and the page shows that reply.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AppServer, unique
from tests.fake_upstream import parse_whoami
from tests.ui_fixtures import conversation_id, send, wait_reply_done

pytestmark = pytest.mark.browser


def last_reply(page: Any) -> str:
    return page.locator("#message-list .msg--assistant .msg__body").last.inner_text()


def test_a_custom_role_made_on_the_roles_page_and_the_model_selector_reach_the_model(
    open_page: Callable[..., Any], artifacts: Path,
) -> None:
    page = open_page()
    send(page, "hello")
    wait_reply_done(page)
    sid = conversation_id(page)
    # the roles page, from the role selector
    page.click("#role-button")
    page.click("#manage-roles")
    page.wait_for_url(f"**/roles?back=/c/{sid}")
    name, prompt = unique("Pirate"), "Talk like a pirate <b>always</b>."
    page.fill("#new-name", name)
    page.fill("#new-description", "Arr")
    page.fill("#new-prompt", prompt)
    page.click("#new-role button[type=submit]")
    page.wait_for_selector(f"#role-list li:has-text('{name}')")
    page.screenshot(path=str(artifacts / "roles-page.png"))
    page.click("#roles-back")
    page.wait_for_url(f"**/c/{sid}")
    # pick it in the selector, then ask the fake model who it is
    page.click("#role-button")
    page.locator(".role-option", has_text=name).click()
    page.wait_for_selector(f".roles__name:text-is('{name}')")
    send(page, "[[whoami]] who are you")
    wait_reply_done(page)
    seen = parse_whoami(last_reply(page))
    assert seen["system"] == prompt and seen["model"] == "fake-model"
    assert page.locator("#message-list .msg--assistant .badge").last.inner_text() == f"{name} · fake-model"
    # the model selector (htmx posts on change)
    page.select_option("#model-selector select", "fake-model-large")
    page.wait_for_function("() => document.querySelector('#model-selector option[selected]')?.value === 'fake-model-large'")
    send(page, "[[whoami]] and now")
    wait_reply_done(page)
    assert parse_whoami(last_reply(page))["model"] == "fake-model-large"
    assert page.locator("#message-list .msg--assistant .badge").last.inner_text() == f"{name} · fake-model-large"
    page.screenshot(path=str(artifacts / "model-selector.png"))
    assert not page.errors


def test_export_all_then_import_in_another_browser_gives_the_same_conversations(
    open_page: Callable[..., Any], tmp_path: Path,
) -> None:
    alice = open_page()
    topics = [unique("apples"), unique("pears")]
    for n, topic in enumerate(topics):
        if n:
            alice.click("#new-chat")
            alice.wait_for_selector("#message-list .suggestions")
        send(alice, f"Tell me about {topic}")
        wait_reply_done(alice)
    alice.goto("/settings")
    with alice.expect_download() as info:
        alice.click("#export-all")
    path = tmp_path / "export.json"
    info.value.save_as(path)
    exported = json.loads(path.read_text())
    assert sorted(c["title"] for c in exported["conversations"]) == sorted(f"Tell me about {t}" for t in topics)

    bob = open_page()
    bob.goto("/settings")
    bob.set_input_files("#import-file", str(path))
    bob.click("form[action='/settings/import'] button[type=submit]")
    bob.wait_for_selector("#imported")
    assert "Imported 2 conversations" in bob.inner_text("#imported")
    bob.goto("/")
    titles = bob.locator("#session-list .session__title").all_inner_texts()
    assert sorted(titles) == sorted(f"Tell me about {t}" for t in topics)
    bob.locator("#session-list .session__link", has_text=topics[0]).click()
    bob.wait_for_selector(f"#message-list .msg--user:has-text('{topics[0]}')")
    assert not alice.errors and not bob.errors


def test_a_shared_link_opens_without_javascript_or_cookie_and_shows_nothing_after_revoke(
    open_page: Callable[..., Any], browser: Any, app_server: AppServer, artifacts: Path,
) -> None:
    page = open_page()
    secret = unique("shared")
    send(page, f"[[echo]] **{secret}**")
    wait_reply_done(page)
    page.click("#conversation-tools summary")
    page.click("#share-link")
    page.click("#share-create")
    url = page.locator("#share-url").input_value()
    reader = browser.new_context(java_script_enabled=False)  # a stranger: no cookie, no JavaScript
    try:
        shared = reader.new_page()
        shared.goto(url)
        assert shared.locator(".msg--assistant strong").inner_text() == secret
        assert shared.locator("form, button:visible, textarea, input").count() == 0
        assert shared.locator('meta[name="robots"]').get_attribute("content").startswith("noindex")
        assert reader.cookies() == []
        shared.screenshot(path=str(artifacts / "shared-link.png"))
        page.click("#share-revoke")
        page.wait_for_selector("#share-create")
        response = shared.goto(url)
        assert response is not None and response.status == 404
        assert secret not in shared.content()
    finally:
        reader.close()
    assert not page.errors
