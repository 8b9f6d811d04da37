"""Without an API key the app answers with its offline demo provider."""

from __future__ import annotations

import re

import httpx
from bs4 import BeautifulSoup

from tests.conftest import create_session, history_of, start_chat, stream_turn, wait_until


def mentions_number(text: str, number: int) -> bool:
    return re.search(rf"(?<!\d){number}(?!\d)", text) is not None


def context_line(text: str) -> str:
    return next(line for line in text.splitlines() if "上下文消息" in line or "Context messages" in line)


def test_demo_reply_is_labelled_and_describes_its_context(demo_client: httpx.Client) -> None:
    chat = start_chat(demo_client)

    first = stream_turn(demo_client, chat, "hello demo")
    second = stream_turn(demo_client, chat, "and again")

    for turn, said in ((first, "hello demo"), (second, "and again")):
        assert turn.status == 200 and turn.ended and not turn.errors
        assert turn.text.startswith("【演示模式 Demo】")
        assert f"> 你说的是：{said}" in turn.text  # visibly a reply to the message
    assert mentions_number(context_line(first.text), 2), "turn 1 sees the welcome message and the question"
    assert mentions_number(context_line(second.text), 4)
    assert "智能助手" in first.text
    history = history_of(demo_client, chat)
    assert [m["content"] for m in history["messages"]][1:] == [
        "hello demo", first.text, "and again", second.text,
    ]


def test_demo_reply_is_the_same_for_the_same_turn_and_shows_the_renderer(demo_client: httpx.Client) -> None:
    english = {"Accept-Language": "en"}
    turns = [stream_turn(demo_client, start_chat(demo_client), "show me *markdown*", headers=english)
             for _ in range(2)]
    assert turns[0].text == turns[1].text  # deterministic
    assert turns[0].text.startswith("[Demo mode]")

    sid = create_session(demo_client)["id"]
    demo_client.post(f"/api/sessions/{sid}/turns", json={"message": "render this"}, headers=english)
    wait_until(lambda: len(demo_client.get(f"/api/sessions/{sid}/messages").json()["items"]) == 3 and
               demo_client.get(f"/api/sessions/{sid}").json()["running_turn_id"] is None, timeout=10)
    page = BeautifulSoup(demo_client.get(f"/c/{sid}", headers=english).text, "html.parser")
    reply = page.select(".msg--assistant .prose")[-1]
    assert reply.select_one("blockquote") and "render this" in reply.select_one("blockquote").get_text()
    assert len(reply.select("ul > li")) == 3
    assert len(reply.select("table tbody tr")) == 3
    assert "python -m webapp" in reply.select_one("pre code").get_text()


def test_demo_reply_names_the_role(demo_client: httpx.Client) -> None:
    chat = start_chat(demo_client)

    turn = stream_turn(demo_client, chat, "teach me", role="teacher")

    assert turn.ended
    assert any(name in turn.text for name in ("AI老师", "teacher", "Teacher"))
