"""What a user may send and what the model is sent with a turn (webapp/context.py)."""

from __future__ import annotations

import pytest

from webapp.base.errors import EmptyMessage, MessageTooLong, UndecodableText
from webapp.base.models import Message
from webapp.core.context import build_context, check_text, validate_message
from webapp.core.roles import BUILTIN_ROLES, Role, role_or_default

ROLE: Role = BUILTIN_ROLES["assistant"]


def message(content: str, role: str = "user") -> Message:
    return Message(id=f"m_{content[:8]}", role=role, content=content, ts="2024-01-01T00:00:00.000+00:00")


@pytest.mark.parametrize("text", [None, "", " ", "\n\t  \r\n", "\u3000"])
def test_a_missing_empty_or_blank_message_is_refused_as_empty(text: str | None) -> None:
    with pytest.raises(EmptyMessage):
        validate_message(text, 100)


def test_a_message_over_the_limit_is_refused_naming_the_limit() -> None:
    with pytest.raises(MessageTooLong) as caught:
        validate_message("x" * 11, 10)
    assert caught.value.params == {"limit": 10}
    assert caught.value.status == 400


def test_a_message_exactly_at_the_limit_is_accepted_as_typed() -> None:
    text = " " + "x" * 8 + "\n"
    assert validate_message(text, 10) == text


def test_the_limit_counts_chinese_characters_not_bytes() -> None:
    text = "你好世界" * 5  # 20 characters, 60 bytes in UTF-8
    assert validate_message(text, 20) == text
    with pytest.raises(MessageTooLong):
        validate_message(text + "！", 20)


def test_context_starts_with_the_roles_system_prompt() -> None:
    context = build_context(ROLE, [message("hello"), message("hi there", "assistant")], 1000)
    assert context == [
        {"role": "system", "content": ROLE.system_prompt},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there"},
    ]


def test_context_window_drops_oldest_first_but_keeps_the_newest_message() -> None:
    window = [message("a" * 10), message("b" * 10, "assistant"), message("c" * 10), message("d" * 10, "assistant")]
    context = build_context(ROLE, window, 25)
    assert [m["content"] for m in context[1:]] == ["c" * 10, "d" * 10]


def test_context_stops_at_the_first_message_over_budget_even_if_an_older_one_would_fit() -> None:
    window = [message("old"), message("x" * 50, "assistant"), message("new")]
    context = build_context(ROLE, window, 20)
    assert [m["content"] for m in context[1:]] == ["new"]


def test_the_newest_message_is_sent_even_when_it_alone_exceeds_the_budget() -> None:
    window = [message("earlier"), message("n" * 500)]
    context = build_context(ROLE, window, 100)
    assert context[0]["role"] == "system"
    assert [m["content"] for m in context[1:]] == ["n" * 500]


def test_messages_with_no_content_are_left_out_of_the_context() -> None:
    window = [message("question"), message("", "assistant"), message("again")]
    context = build_context(ROLE, window, 1000)
    assert [m["content"] for m in context[1:]] == ["question", "again"]


def test_the_budget_counts_characters_of_chinese_text() -> None:
    window = [message("旧" * 10), message("新" * 10)]
    assert len(build_context(ROLE, window, 20)) == 3
    assert len(build_context(ROLE, window, 19)) == 2


def test_the_newest_message_with_text_is_kept_when_an_empty_failed_reply_ends_the_window() -> None:
    # a failed reply saved with no text must not use up the "newest always stays" exception
    window = [message("x" * 50), message("", "assistant")]
    assert [m["content"] for m in build_context(ROLE, window, 20)[1:]] == ["x" * 50]


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "ok \ud83d"])
def test_text_that_is_not_valid_unicode_is_refused_with_a_clear_error(text: str) -> None:
    with pytest.raises(UndecodableText):
        validate_message(text, 1000)
    with pytest.raises(UndecodableText):
        check_text(text)


def test_valid_unicode_including_emoji_and_rtl_passes() -> None:
    assert check_text("😀 שלום \u200b 你好") == "😀 שלום \u200b 你好"


def test_the_newest_messages_documents_are_cut_to_the_budget_and_the_cut_is_said() -> None:
    """The newest message always goes, but five documents of 20,000 characters do not fit a 24,000 budget:
    each is cut to its share, its block saying how much is included; a document whose text is gone says so."""
    from webapp.base.models import Attachment

    docs = [Attachment(id=f"f_{n:016x}", name=f"doc{n}.txt", kind="text", type="text/plain", size=20_000,
                       chars=20_000, kept=20_000) for n in range(5)]
    files = {a.id: ("", "y" * 20_000) for a in docs}
    asking = Message(id="m_1", role="user", content="summarize", ts="", attachments=docs)
    sent = build_context(role_or_default(None), [asking], 24_000, files)[-1]["content"]
    assert len(sent) < 24_000 + 2_000  # (the blocks' own lines)
    assert sent.count("only the first 4798 of 20000 characters are included") == 5
    gone = Message(id="m_2", role="user", content="and this?", ts="", attachments=docs[:1])
    assert "[file: doc0.txt: no longer stored]" in build_context(role_or_default(None), [gone], 24_000, {})[-1]["content"]
