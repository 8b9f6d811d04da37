"""Conversation titles and list previews (webapp/titles.py)."""

from __future__ import annotations

from webapp.core.titles import (
    PREVIEW_CHARS,
    TITLE_CHARS,
    TITLE_MAX_CHARS,
    clean_title,
    make_preview,
    make_title,
)


def test_a_short_first_message_is_the_title_with_whitespace_collapsed() -> None:
    assert make_title("  How   do\nI\tsort?  ") == "How do I sort?"


def test_a_title_of_exactly_forty_characters_is_kept_whole() -> None:
    text = "x" * TITLE_CHARS
    assert make_title(text) == text


def test_a_long_first_message_is_cut_to_forty_characters_ending_in_an_ellipsis() -> None:
    title = make_title("字" * 100)
    assert len(title) == TITLE_CHARS == 40
    assert title == "字" * 39 + "…"


def test_a_typed_title_loses_newlines_and_repeated_spaces() -> None:
    assert clean_title("  My\n\nplan \r\n for   June ") == "My plan for June"


def test_a_typed_title_is_capped_at_two_hundred_characters_without_an_ellipsis() -> None:
    assert TITLE_MAX_CHARS == 200
    assert clean_title("a" * 250) == "a" * 200


def test_a_blank_typed_title_comes_back_empty() -> None:
    assert clean_title(" \n\t ") == ""


def test_a_preview_is_one_line_of_at_most_fifty_characters() -> None:
    preview = make_preview("line one\nline two " + "y" * 100)
    assert "\n" not in preview
    assert len(preview) == PREVIEW_CHARS == 50
    assert preview.startswith("line one line two y")


def test_a_short_preview_is_the_message_on_one_line() -> None:
    assert make_preview("好的\n谢谢") == "好的 谢谢"
