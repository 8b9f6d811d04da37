"""Pins, the archive, folders and the selection in headless Chromium (issue 37): by keyboard (p, e, m, x,
listed in ?), by mouse (Shift+click ranges, drag and drop), without JavaScript; and the header and the
sidebar's footer at 1280 and 390 px in both languages (screenshots in $TEST_ARTIFACTS)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.ui_fixtures import send, wait_focus, wait_reply_done

pytestmark = pytest.mark.browser


def make_conversations(page: Any, titles: list[str]) -> list[str]:
    """Conversations of the page's user (the API shares its cookie), then the page again."""
    ids = []
    for title in titles:
        response = page.request.post("/api/sessions", data={"title": title})
        assert response.status == 201, response.text()
        ids.append(response.json()["id"])
    page.goto(f"/c/{ids[-1]}")
    return ids


def session_state(page: Any, sid: str) -> dict[str, Any]:
    return page.request.get(f"/api/sessions/{sid}").json()


def test_pin_archive_move_and_select_by_keyboard(open_page: Callable[..., Any], artifacts: Path) -> None:
    page = open_page()
    a, b, c, d = make_conversations(page, ["alpha", "bravo", "charlie", "delta"])
    page.request.post("/api/folders", data={"name": "Work"})
    page.reload()

    page.focus(f"#conv-{a} .session__link")
    page.keyboard.press("p")
    page.wait_for_selector(f".shelf--pinned #conv-{a}")
    wait_focus(page, f"#conv-{a} .session__link")  # the focus follows it into its group
    assert session_state(page, a)["pinned"] is True

    page.focus(f"#conv-{b} .session__link")
    page.keyboard.press("e")
    page.wait_for_selector(f"#conv-{b}", state="detached")
    assert session_state(page, b)["archived"] is True

    page.focus(f"#conv-{c} .session__link")
    page.keyboard.press("m")
    page.wait_for_selector(f"#move-{c}")
    wait_focus(page, f"#move-{c}")
    page.keyboard.press("Escape")  # changed their mind: the item as it was, focused
    page.wait_for_selector(f"#move-{c}", state="detached")
    wait_focus(page, f"#conv-{c} .session__link")
    page.keyboard.press("m")
    page.wait_for_selector(f"#move-{c}")
    wait_focus(page, f"#move-{c}")
    page.select_option(f"#move-{c}", label="Work")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"details.folder #conv-{c}", state="attached")
    assert session_state(page, c)["folder_id"]

    # the item's menu by keyboard: opened on its summary, closed with Esc
    page.focus(f"#conv-{d} .session__menu > summary")
    page.keyboard.press("Enter")
    assert page.eval_on_selector(f"#conv-{d} .session__menu", "d => d.open")
    page.keyboard.press("Escape")
    assert not page.eval_on_selector(f"#conv-{d} .session__menu", "d => d.open")
    wait_focus(page, f"#conv-{d} .session__menu > summary")

    # x selects the focused one; the batch bar appears and archives the selection
    page.focus(f"#conv-{d} .session__link")
    page.keyboard.press("x")
    assert page.is_checked(f"#conv-{d} .session__select")
    assert page.is_visible("#bulk")
    page.screenshot(path=str(artifacts / "shelves-keyboard.png"))
    page.click("#bulk button[value=archive]")
    page.wait_for_selector(f"#conv-{d}", state="detached")
    page.wait_for_selector("#toasts [data-undo-batch]")
    page.click("#toasts [data-undo-batch]")
    page.wait_for_selector(f"#conv-{d}")
    assert session_state(page, d)["archived"] is False

    # every shortcut is in the help
    page.focus("#composer-input")
    page.keyboard.press("Escape")
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("?")
    help_text = page.locator("#help").inner_text()
    for line in ("Pin / unpin", "Archive / restore", "Move the focused", "Select the focused"):
        assert line in help_text
    assert page.errors == []


def test_shift_click_selects_a_range_and_one_undo_restores_a_deleted_batch(
        open_page: Callable[..., Any]) -> None:
    page = open_page()
    ids = make_conversations(page, [f"chat {n}" for n in range(5)])
    shown = list(reversed(ids))  # newest first
    page.hover(f"#conv-{shown[0]}")
    page.click(f"#conv-{shown[0]} .session__select")
    page.click(f"#conv-{shown[3]} .session__select", modifiers=["Shift"])
    checked = page.eval_on_selector_all(".session__select:checked", "boxes => boxes.map(b => b.value)")
    assert checked == shown[:4]
    assert "4" in page.inner_text(".bulk__count")
    page.click("#bulk button[value=delete]")
    page.wait_for_selector(f"#conv-{shown[1]}", state="detached")
    listed = page.request.get("/api/sessions").json()["items"]
    assert [s["id"] for s in listed] == [shown[4]]
    page.click("#toasts [data-undo-batch]")
    page.wait_for_selector(f"#conv-{shown[1]}")
    assert len(page.request.get("/api/sessions").json()["items"]) == 5
    assert page.errors == []


def test_sending_in_an_archived_conversation_from_the_archive_view_brings_it_back(
        open_page: Callable[..., Any]) -> None:
    page = open_page()
    kept, archived = make_conversations(page, ["kept", "archived one"])
    page.request.patch(f"/api/sessions/{archived}", data={"archived": True})
    page.goto(f"/c/{archived}?archived=1")
    page.wait_for_selector(f".shelf__view ~ #session-list #conv-{archived}, #session-list #conv-{archived}")
    send(page, "back to this one")
    wait_reply_done(page)
    page.wait_for_selector(f"#conv-{archived}", state="detached")  # it left the archive's view
    assert page.locator(f"#session-list #conv-{kept}").count() == 0  # and nothing else came into it
    assert session_state(page, archived)["archived"] is False
    page.goto(f"/c/{archived}")
    page.wait_for_selector(f"#session-list #conv-{archived}")
    assert page.errors == []


def folders_key() -> str:
    """The localStorage key app.js keeps the open folders under."""
    source = (REPO_ROOT / "static" / "app.js").read_text()
    return re.search(r'FOLDERS_KEY = "([^"]+)"', source).group(1)  # type: ignore[union-attr]


def test_folders_open_as_this_browser_left_them_and_take_a_dragged_conversation(
        open_page: Callable[..., Any]) -> None:
    page = open_page()
    a, b = make_conversations(page, ["to move", "stays"])
    folder = page.request.post("/api/folders", data={"name": "Dropped here"}).json()
    page.reload()
    target = f"#folder-{folder['id']}"
    page.drag_and_drop(f"#conv-{a} .session__link", f"{target} > summary")
    page.wait_for_selector(f"{target} #conv-{a}", state="attached")
    assert session_state(page, a)["folder_id"] == folder["id"]
    assert not page.eval_on_selector(target, "d => d.open")
    page.click(f"{target} > summary")
    # (a details element's toggle event, which keeps the state, comes a task after the click)
    page.wait_for_function("id => (localStorage.getItem(FOLDERS_KEY_NAME) || '').includes(id)".replace(
        "FOLDERS_KEY_NAME", repr(folders_key())), arg=folder["id"])
    page.reload()
    assert page.eval_on_selector(target, "d => d.open")  # kept by this browser
    page.wait_for_selector(f"{target} #conv-{a}")
    # dragged back onto the list: out of the folder
    page.drag_and_drop(f"#conv-{a} .session__link", f"#conv-{b} .session__link")
    page.wait_for_selector(f"#session-list #conv-{a}")
    assert session_state(page, a)["folder_id"] is None
    assert page.errors == []


def test_pin_archive_folders_and_batches_without_javascript(browser: Any, app_server: Any, artifacts: Path) -> None:
    context = browser.new_context(base_url=app_server.base_url, java_script_enabled=False,
                                  viewport={"width": 1280, "height": 900}, locale="en-US",
                                  extra_http_headers={"Accept-Language": "en-US,en"})
    try:
        page = context.new_page()
        page.goto("/")
        a, b, c = make_conversations(page, ["one", "two", "three"])
        # a folder, by its form
        page.click(".folder-new > summary")
        page.fill("#folder-new-name", "<i>Plain</i>")
        page.click(".folder-new button[type=submit]")
        page.wait_for_selector("details.folder")
        assert page.inner_text("details.folder .folder__label") == "<i>Plain</i>"
        # pin by the item's menu
        page.hover(f"#conv-{a}")
        page.click(f"#conv-{a} .session__menu > summary")
        page.click(f"#conv-{a} [data-key=p]")
        page.wait_for_selector(f".shelf--pinned #conv-{a}")
        # move by the form the menu links to
        page.hover(f"#conv-{b}")
        page.click(f"#conv-{b} .session__menu > summary")
        page.click(f"#conv-{b} [data-key=m]")
        page.select_option(f"#move-{b}", label="<i>Plain</i>")
        page.click(f"#conv-{b} button[type=submit]")
        page.wait_for_selector(f"details.folder #conv-{b}", state="attached")
        # archive, then find it in the archive and restore it
        page.hover(f"#conv-{c}")
        page.click(f"#conv-{c} .session__menu > summary")
        page.click(f"#conv-{c} [data-key=e]")
        page.wait_for_selector(f"#conv-{c}", state="detached")
        page.click(".shelf__link[href*=archived]")
        page.wait_for_selector(f"#conv-{c}")
        page.screenshot(path=str(artifacts / "shelves-archived-nojs.png"))
        page.hover(f"#conv-{c}")
        page.click(f"#conv-{c} .session__menu > summary")
        page.click(f"#conv-{c} [data-key=e]")
        page.wait_for_selector(".archived-empty, .sessions__empty")
        # a batch: the checkboxes and the bar are there without JavaScript
        page.goto(f"/c/{a}")
        page.check(f"#conv-{a} .session__select")
        page.check(f"#conv-{c} .session__select")
        page.click("#bulk button[value=delete]")
        page.wait_for_selector("#toasts [data-undo-batch]")
        assert page.locator(f"#conv-{c}").count() == 0
        page.click("#toasts [data-undo-batch]")
        page.wait_for_selector(f"#conv-{c}")
        page.screenshot(path=str(artifacts / "shelves-nojs.png"))
    finally:
        context.close()


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("width", [1280, 390])
def test_header_and_footer_fit_at_desktop_and_phone_widths(open_page: Callable[..., Any], artifacts: Path,
                                                         lang: str, width: int) -> None:
    page = open_page(lang=lang, viewport={"width": width, "height": 800})
    title = "你好，这是一个相当长的对话标题" if lang == "zh" else "A fairly long conversation title here"
    older, _ = make_conversations(page, ["置顶的对话" if lang == "zh" else "A pinned one", title])
    page.request.patch(f"/api/sessions/{older}", data={"pinned": True})
    page.request.post("/api/folders", data={"name": "工作" if lang == "zh" else "Work"})
    page.reload()
    page.screenshot(path=str(artifacts / f"header-{width}-{lang}.png"))
    # the title stays readable: more than a character or two
    title_box = page.locator(".chat__title").bounding_box()
    assert title_box["width"] >= (100 if width < 500 else 300), title_box
    # the model selector shows its whole choice
    cut = page.eval_on_selector(".model-select__input", """s => {
        const probe = document.createElement('span');
        probe.style.cssText = 'position:absolute;visibility:hidden;white-space:nowrap;font:' + getComputedStyle(s).font;
        probe.textContent = s.options[s.selectedIndex].text;
        document.body.appendChild(probe);
        const need = probe.getBoundingClientRect().width;
        probe.remove();
        return need - (s.clientWidth - 24);
    }""")
    assert cut <= 1, f"the model's choice is cut by {cut}px"
    if width >= 1000:  # (on a phone the footer is in the drawer)
        # accounts mode's footer has a sign-out button too (its form as the page renders it)
        page.evaluate("""() => {
            const account = document.querySelector('.sidebar__account');
            const out = document.createElement('form');
            out.innerHTML = '<button type="button" class="btn btn--small">' +
                (document.documentElement.lang.startsWith('zh') ? '退出登录' : 'Sign out') + '</button>';
            account.insertBefore(out, account.lastElementChild);
        }""")
        for name in ("中文", "English"):
            button = page.locator(f".lang-switch button:text-is('{name}')")
            box = button.bounding_box()
            line = page.eval_on_selector(f".lang-switch button[value={'zh' if name == '中文' else 'en'}]",
                                         "b => parseFloat(getComputedStyle(b).lineHeight) || b.clientHeight")
            assert box["height"] < 2 * line, f"{name} wraps: {box}"
    assert page.errors == []
