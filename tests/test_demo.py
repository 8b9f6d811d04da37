"""Without an API key the app answers with its offline demo provider."""

from __future__ import annotations

import re

import httpx

from tests.conftest import history_of, start_chat, stream_turn


def mentions_number(text: str, number: int) -> bool:
    return re.search(rf"(?<!\d){number}(?!\d)", text) is not None


def test_demo_reply_is_labelled_and_describes_its_context(demo_client: httpx.Client) -> None:
    chat = start_chat(demo_client)

    first = stream_turn(demo_client, chat, "hello demo")
    second = stream_turn(demo_client, chat, "and again")

    for turn in (first, second):
        assert turn.status == 200 and turn.ended and not turn.errors
        assert "演示" in turn.text or "Demo" in turn.text
    assert mentions_number(first.text, 2), "turn 1 sees the welcome message and the question"
    assert mentions_number(second.text, 4)
    assert "智能助手" in first.text or "assistant" in first.text.lower()
    history = history_of(demo_client, chat)
    assert [m["content"] for m in history["messages"]][1:] == [
        "hello demo", first.text, "and again", second.text,
    ]


def test_demo_reply_names_the_role(demo_client: httpx.Client) -> None:
    chat = start_chat(demo_client)

    turn = stream_turn(demo_client, chat, "teach me", role="teacher")

    assert turn.ended
    assert any(name in turn.text for name in ("AI老师", "teacher", "Teacher"))
