"""Language choice and the message catalog (webapp/i18n.py)."""

from __future__ import annotations

import pytest

from webapp.base.i18n import CATALOG, pick_lang, t


def test_the_language_cookie_wins_over_accept_language() -> None:
    assert pick_lang("en-US,en;q=0.9", "zh") == "zh"
    assert pick_lang("zh-CN,zh;q=0.9", "en") == "en"


def test_an_unknown_cookie_value_is_ignored() -> None:
    assert pick_lang("en-US", "fr") == "en"


@pytest.mark.parametrize(
    ("accept_language", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("en-US,en;q=0.9", "en"),
        ("EN-gb", "en"),
        ("fr-FR,fr;q=0.9,en;q=0.5,zh;q=0.4", "en"),  # the first of zh/en counts, not the q-values
        ("zh-TW", "zh"),
        ("fr", "zh"),
        ("", "zh"),
        (None, "zh"),
    ],
)
def test_accept_language_picks_the_first_zh_or_en_else_chinese(accept_language: str | None, expected: str) -> None:
    assert pick_lang(accept_language) == expected


def test_t_fills_placeholders_in_the_requested_language() -> None:
    assert t("error.message_too_long", "zh", limit=5) == "消息长度不能超过5个字符"
    assert t("error.message_too_long", "en", limit=5) == "The message cannot be longer than 5 characters"


def test_t_defaults_to_chinese() -> None:
    assert t("error.session_not_found") == "会话不存在"


def test_an_unknown_key_is_shown_as_the_key_not_an_error() -> None:
    assert t("no.such.key", "en") == "no.such.key"
    assert t("no.such.key", "en", n=3) == "no.such.key"


def test_every_catalog_entry_has_both_languages() -> None:
    missing = [key for key, entry in CATALOG.items() if not entry.get("zh") or not entry.get("en")]
    assert missing == []
