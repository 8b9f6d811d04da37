"""The seed frontend's API: /chat/start, /chat/stream, /chat/history."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import (
    DEFAULT_TOKENS,
    SESSION_CREATED,
    SYSTEM_PROMPTS,
    WELCOME,
    history_of,
    iter_sse,
    start_chat,
    stream_turn,
    unique,
)
from tests.fake_upstream import ThreadedFakeUpstream, expected_last_tag, expected_reply, expected_sys_tag

USER_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
CJK = re.compile(r"[\u4e00-\u9fff]")


def test_start_creates_a_session_with_the_welcome_message(client: httpx.Client) -> None:
    chat = start_chat(client)

    assert chat["message"] == SESSION_CREATED
    assert chat["welcome_message"] == WELCOME
    assert chat["session_id"]
    assert USER_ID.fullmatch(chat["user_id"])


def test_new_session_history_holds_only_the_welcome_message(client: httpx.Client) -> None:
    chat = start_chat(client)

    history = history_of(client, chat)

    assert history["session_id"] == chat["session_id"]
    assert history["total"] == 1
    assert [(m["role"], m["content"]) for m in history["messages"]] == [("assistant", WELCOME)]
    assert history["messages"][0]["timestamp"]


def test_three_turns_send_the_growing_conversation_upstream(
    client: httpx.Client, upstream: ThreadedFakeUpstream
) -> None:
    chat = start_chat(client)
    marker = unique()
    questions = [f"{marker} question {n}" for n in (1, 2, 3)]
    replies = []

    for question, ctx in zip(questions, (2, 4, 6)):
        turn = stream_turn(client, chat, question)
        assert turn.status == 200 and turn.ended and not turn.errors
        assert turn.reply["ctx"] == ctx
        assert turn.reply["last"] == expected_last_tag(question)
        assert turn.text == expected_reply(ctx, SYSTEM_PROMPTS["assistant"], question, DEFAULT_TOKENS)
        replies.append(turn.text)

    requests = upstream.chat_requests(marker)
    assert len(requests) == 3
    last_request = requests[-1]["messages"]
    assert last_request[0] == {"role": "system", "content": SYSTEM_PROMPTS["assistant"]}
    assert [(m["role"], m["content"]) for m in last_request[1:]] == [
        ("assistant", WELCOME),
        ("user", questions[0]),
        ("assistant", replies[0]),
        ("user", questions[1]),
        ("assistant", replies[1]),
        ("user", questions[2]),
    ]
    assert requests[-1]["model"] == "fake-model"


def test_history_lists_the_conversation_in_order(client: httpx.Client) -> None:
    chat = start_chat(client)
    first = stream_turn(client, chat, "first question")
    second = stream_turn(client, chat, "second question")

    history = history_of(client, chat)

    assert history["total"] == 5
    assert [(m["role"], m["content"]) for m in history["messages"]] == [
        ("assistant", WELCOME),
        ("user", "first question"),
        ("assistant", first.text),
        ("user", "second question"),
        ("assistant", second.text),
    ]
    timestamps = [m["timestamp"] for m in history["messages"]]
    assert all(timestamps)
    assert timestamps == sorted(timestamps)


@pytest.mark.parametrize("role", ["assistant", "teacher", "programmer"])
def test_each_role_sends_its_system_prompt(client: httpx.Client, role: str) -> None:
    chat = start_chat(client)

    turn = stream_turn(client, chat, f"hello {role}", role=role)

    assert turn.ended
    assert turn.reply["sys"] == expected_sys_tag(SYSTEM_PROMPTS[role])


def test_stream_events_are_numbered_within_one_turn(client: httpx.Client) -> None:
    chat = start_chat(client)
    params = {"user_id": chat["user_id"], "session_id": chat["session_id"], "message": "count"}

    with client.stream("GET", "/chat/stream", params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(iter_sse(response))

    assert events, "the stream sent no events"
    assert {e.turn_id for e in events} == {events[0].turn_id}
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)), "event sequence numbers must increase"
    assert [e.type for e in events[:-1]] == ["chunk"] * (len(events) - 1)
    assert events[-1].data == {"type": "end", "session_id": chat["session_id"]}


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "message", ["", "   \n\t  ", "x" * 1001], ids=["empty", "whitespace", "1001-chars"]
)
def test_unacceptable_message_is_refused_and_not_stored(
    client: httpx.Client, upstream: ThreadedFakeUpstream, message: str
) -> None:
    chat = start_chat(client)
    before = len(upstream.chat_requests())

    turn = stream_turn(client, chat, message)

    assert turn.status == 400
    assert isinstance(turn.body, dict) and turn.body.get("detail")
    assert len(upstream.chat_requests()) == before
    assert history_of(client, chat)["total"] == 1


@pytest.mark.parametrize("letter", ["y", "字"], ids=["ascii", "chinese"])
def test_message_of_exactly_1000_chars_is_accepted(client: httpx.Client, letter: str) -> None:
    chat = start_chat(client)
    message = (unique("long") + " " + letter * 1000)[:1000]

    turn = stream_turn(client, chat, message)

    assert turn.status == 200 and turn.ended
    assert turn.reply["last"] == expected_last_tag(message)
    assert history_of(client, chat)["messages"][1]["content"] == message


def test_1001_chinese_characters_are_refused(client: httpx.Client) -> None:
    chat = start_chat(client)

    turn = stream_turn(client, chat, "字" * 1001)

    assert turn.status == 400


def test_unknown_role_is_refused_in_chinese_by_default(client: httpx.Client) -> None:
    chat = start_chat(client)

    turn = stream_turn(client, chat, "hi", role="pirate")

    assert turn.status == 400
    assert turn.body == {"detail": "不支持的AI角色"}


def test_unknown_role_is_refused_in_english_when_asked(client: httpx.Client) -> None:
    chat = start_chat(client)

    turn = stream_turn(client, chat, "hi", role="pirate", headers={"Accept-Language": "en"})

    assert turn.status == 400
    detail = turn.body["detail"]
    assert isinstance(detail, str) and detail.strip()
    assert not CJK.search(detail), detail


def test_unknown_session_is_not_found(client: httpx.Client) -> None:
    chat = start_chat(client)
    missing = {**chat, "session_id": "00000000-0000-4000-8000-000000000000"}

    turn = stream_turn(client, missing, "hello?")
    history = client.get(
        "/chat/history", params={"user_id": chat["user_id"], "session_id": missing["session_id"]}
    )

    assert turn.status == 404
    assert history.status_code == 404


@pytest.mark.parametrize("session_id", ["../etc/passwd", "x" * 300, "a b"])
def test_malformed_session_id_is_refused(client: httpx.Client, session_id: str) -> None:
    chat = start_chat(client)

    turn = stream_turn(client, {**chat, "session_id": session_id}, "hello?")

    assert turn.status in (400, 404)
