"""Model replies as sanitized HTML, and message text in the reader's language (webapp/render.py)."""

from __future__ import annotations

import pytest

from webapp.base.i18n import t
from webapp.base.models import WELCOME, Message
from webapp.web.render import compile_all, render_markdown, ui_context

TS = "2024-01-01T00:00:00.000+00:00"


def test_raw_html_in_a_reply_is_shown_as_text_not_run() -> None:
    html = str(render_markdown("<script>alert(1)</script>"))
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_an_inline_event_handler_never_becomes_an_attribute() -> None:
    html = str(render_markdown('<img src=x onerror="alert(1)"> and <a href="javascript:alert(1)">x</a>'))
    assert "<img" not in html
    assert "<a " not in html


@pytest.mark.parametrize(
    "text",
    ["[click](javascript:alert(1))", "<javascript:alert(1)>", "[x](JavaScript:alert(1))", "[x](data:text/html,hi)"],
)
def test_javascript_and_data_links_are_dropped(text: str) -> None:
    html = str(render_markdown(text)).lower()
    assert "href" not in html
    assert "<a" not in html


def test_an_http_link_opens_in_a_new_tab_without_access_to_the_page() -> None:
    html = str(render_markdown("[docs](https://example.com/a)"))
    assert 'href="https://example.com/a"' in html
    assert 'target="_blank"' in html
    assert 'rel="noopener noreferrer nofollow"' in html


def test_an_image_becomes_a_link_so_the_browser_fetches_nothing() -> None:
    html = str(render_markdown("![a cat](https://example.com/cat.png)"))
    assert "<img" not in html
    assert '<a href="https://example.com/cat.png"' in html
    assert ">a cat</a>" in html


def test_fenced_code_is_highlighted_in_a_block_with_its_language_and_a_copy_button() -> None:
    html = str(render_markdown("```python\nprint(1)\n```", "en"))
    assert '<div class="code">' in html
    assert '<span class="code__lang">python</span>' in html
    assert '<button type="button" class="code__copy"' in html and ">Copy</button>" in html
    assert '<pre class="highlight"><code>' in html
    assert '<span class="nb">print</span>' in html  # Pygments token classes


def test_code_without_a_language_is_escaped_and_labelled_in_the_readers_language() -> None:
    html = str(render_markdown("```\n<b>bold?</b>\n```", "zh"))
    assert "&lt;b&gt;bold?&lt;/b&gt;" in html
    assert f'<span class="code__lang">{t("ui.code", "zh")}</span>' in html
    assert f">{t('ui.copy', 'zh')}</button>" in html


def test_an_unknown_code_language_still_renders_escaped() -> None:
    html = str(render_markdown("```nosuchlang\nx < y\n```"))
    assert "x &lt; y" in html
    assert '<span class="code__lang">nosuchlang</span>' in html


def test_the_stored_welcome_message_is_shown_in_the_readers_language() -> None:
    welcome = Message(id="m_1", role="assistant", content=t("welcome", "zh"), ts=TS, kind=WELCOME)
    assert ui_context("en")["display_text"](welcome) == t("welcome", "en")
    assert ui_context("zh")["display_text"](welcome) == t("welcome", "zh")


def test_other_messages_are_shown_as_written_whatever_the_language() -> None:
    reply = Message(id="m_2", role="assistant", content=t("welcome", "zh"), ts=TS)  # same text, no kind
    assert ui_context("en")["display_text"](reply) == reply.content


def test_every_template_compiles_in_every_language() -> None:
    """What the app's warm-up does at start (main.warm_up): a template that does not compile fails here."""
    assert compile_all() >= 30
