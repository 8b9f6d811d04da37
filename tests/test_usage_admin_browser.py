"""/usage and /admin in real Chromium: with JavaScript and without, light and dark, by keyboard."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import AppServer, RedisServer, _stop_app, unique
from tests.fake_upstream import ThreadedFakeUpstream
from tests.test_accounts import ACCOUNTS_SETTINGS, PASSWORD, start
from tests.ui_fixtures import send, wait_reply_done

pytestmark = pytest.mark.browser

CHIEF = "boss_" + unique("b")[-6:]


def expect(locator: Any) -> Any:
    """Playwright's waiting assertions (imported here: the browser fixture skips when Playwright is absent)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def test_usage_page_shows_the_reply_numbers_table_and_chart_in_both_themes(open_page: Callable[..., Any]) -> None:
    for scheme in ("light", "dark"):
        page = open_page(color_scheme=scheme)
        send(page, f"{unique('usage')} hello")
        wait_reply_done(page)
        details = page.locator("#message-list .msg__usage").last
        details.locator("summary").click()
        assert "in" in details.inner_text() and "tokens/s" in details.inner_text()
        page.goto("/usage")
        bar = page.locator("#usage-chart rect.usage__bar").last
        assert float(bar.get_attribute("height")) > 0
        fill = bar.evaluate("el => getComputedStyle(el).fill")
        background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        assert fill != background and fill not in ("none", "")
        assert "fake-model" in page.locator("#usage-days").inner_text()
        assert page.errors == []


def test_usage_page_without_javascript(open_page: Callable[..., Any]) -> None:
    page = open_page(java_script_enabled=False)
    page.fill("#composer-input", f"{unique('nojs')} hi")
    page.click("form.composer button[type=submit]")
    page.goto("/usage")
    for _ in range(50):
        if page.locator("#usage-days").count():
            break
        page.wait_for_timeout(100)
        page.reload()
    assert page.locator("#usage-chart title").first.text_content() == "Tokens per day"
    assert float(page.locator("#usage-chart rect.usage__bar").last.get_attribute("height")) > 0
    assert "fake-model" in page.locator("#usage-days").inner_text()


@pytest.fixture(scope="module")
def admin_app(redis_server: RedisServer, upstream: ThreadedFakeUpstream,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    app = start(redis_server, upstream, tmp_path_factory, **{**ACCOUNTS_SETTINGS, "SIGNUPS_PER_IP_PER_HOUR": "0",
                                                            "ADMIN_USERS": CHIEF})
    yield app
    _stop_app(app)


def sign_up_in(browser: Any, app: AppServer, username: str, **options: Any) -> Any:
    context = browser.new_context(base_url=app.base_url, locale="en-US",
                                  extra_http_headers={"Accept-Language": "en-US,en"}, **options)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto("/signup")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button.auth__submit")
    page.wait_for_url(lambda url: "/signup" not in url)
    return page


@pytest.mark.parametrize("javascript", [True, False])
def test_an_admin_disables_and_enables_a_user_by_keyboard(browser: Any, admin_app: AppServer,
                                                          javascript: bool) -> None:
    admin_app.create_user(CHIEF, PASSWORD)  # (an ADMIN_USERS name is made by the operator: sign-up refuses it)
    context = browser.new_context(base_url=admin_app.base_url, java_script_enabled=javascript, locale="en-US",
                                  extra_http_headers={"Accept-Language": "en-US,en"})
    chief = context.new_page()
    chief.goto("/login")
    chief.fill("#username", CHIEF)
    chief.fill("#password", PASSWORD)
    chief.click("button.auth__submit")
    chief.wait_for_url(lambda url: "/login" not in url)
    name = f"kb_{unique('u')[-8:]}"
    sign_up_in(browser, admin_app, name).context.close()
    chief.goto(f"/admin?q={name}")
    row = chief.locator(f"tr[data-username='{name}']")
    assert "active" in row.locator(".admin__status").inner_text()
    # the keyboard: focus the row's Manage, open it, reach Disable, press it
    row.locator("summary").focus()
    chief.keyboard.press("Enter")
    disable = row.locator("button", has_text="Disable")
    assert disable.is_visible()
    disable.focus()
    chief.keyboard.press("Enter")
    expect(chief.locator(f"tr[data-username='{name}'] .admin__status")).to_have_text("disabled")
    expect(chief.locator("#admin-audit")).to_contain_text(f"disabled · {name}")
    row = chief.locator(f"tr[data-username='{name}']")
    row.locator("summary").click()
    row.locator("button", has_text="Enable").click()
    expect(chief.locator(f"tr[data-username='{name}'] .admin__status")).to_have_text("active")
    chief.context.close()
