"""When the upstream model fails: the user gets a short localized error, never internals,
and keeps what was already said."""

from __future__ import annotations

import re
import time

import httpx
import pytest
import redis

from tests.conftest import (
    OPENAI_TIMEOUT_SECONDS,
    Turn,
    api_turn,
    config_set,
    create_session,
    iter_sse,
    messages_of,
    start_chat,
    stream_turn,
)

CJK = re.compile(r"[\u4e00-\u9fff]")
# what an exception string would carry: the upstream's own error text, the key, class names
INTERNALS = (
    "boom", "test-key", "Traceback", "Error code", "Exception", "127.0.0.1",
    "APIConnectionError", "APITimeoutError", "InternalServerError", "RateLimitError",
)


def assert_shows_a_clean_error(turn: Turn) -> str:
    """The stream ends with exactly one error event whose message reveals nothing internal."""
    assert turn.status == 200
    assert turn.errors, f"expected an error event, got {[e.data for e in turn.events]}"
    assert turn.events[-1].type == "error", "the stream ends after the error"
    assert len(turn.errors) == 1 and not turn.ended
    message = turn.errors[0].data["content"]
    assert isinstance(message, str) and message.strip()
    for secret in INTERNALS:
        assert secret.lower() not in message.lower(), f"{secret!r} leaked into {message!r}"
    return message


@pytest.mark.parametrize("status", [500, 429])
def test_upstream_error_status_shows_a_localized_error(client: httpx.Client, status: int) -> None:
    chat = start_chat(client)
    question = f"please answer [[fail:{status}]]"

    turn = stream_turn(client, chat, question)

    message = assert_shows_a_clean_error(turn)
    assert CJK.search(message), f"the default language is Chinese: {message!r}"
    items = messages_of(client, chat["session_id"])["items"]
    assert question in [m["content"] for m in items if m["role"] == "user"]
    assert all(m["status"] != "complete" for m in items[2:]), "a failed reply is not shown as complete"


def test_upstream_error_is_shown_in_english_when_asked(client: httpx.Client) -> None:
    chat = start_chat(client)

    turn = stream_turn(client, chat, "answer [[fail:500]]", headers={"Accept-Language": "en"})

    message = assert_shows_a_clean_error(turn)
    assert not CJK.search(message), message


def test_conversation_continues_after_an_upstream_error(client: httpx.Client) -> None:
    chat = start_chat(client)
    stream_turn(client, chat, "first try [[fail:500]]")

    retry = stream_turn(client, chat, "second try")

    assert retry.ended and not retry.errors
    assert retry.reply["last"] == "second try"


def test_stalled_upstream_fails_the_turn_after_the_timeout(client: httpx.Client) -> None:
    chat = start_chat(client)
    question = "are you there [[stall]]"

    started = time.monotonic()
    turn = stream_turn(client, chat, question)
    elapsed = time.monotonic() - started

    assert_shows_a_clean_error(turn)
    assert OPENAI_TIMEOUT_SECONDS - 0.5 <= elapsed < OPENAI_TIMEOUT_SECONDS + 5
    items = messages_of(client, chat["session_id"])["items"]
    assert question in [m["content"] for m in items]


def test_upstream_stalling_mid_reply_keeps_the_partial_reply(client: httpx.Client) -> None:
    chat = start_chat(client)

    turn = stream_turn(client, chat, "half an answer [[stall_after:3]]")

    assert_shows_a_clean_error(turn)
    assert turn.text.startswith("ctx=2 sys=")
    reply = messages_of(client, chat["session_id"])["items"][-1]
    assert reply["role"] == "assistant"
    assert reply["status"] == "error"
    assert reply["content"] == turn.text


def test_dropped_upstream_connection_keeps_the_partial_reply(client: httpx.Client) -> None:
    chat = start_chat(client)
    question = "cut me off [[drop:5]]"

    turn = stream_turn(client, chat, question)

    assert_shows_a_clean_error(turn)
    assert turn.text.startswith("ctx=2 sys=") and turn.text.endswith(" t2")
    items = messages_of(client, chat["session_id"])["items"]
    assert [(m["role"], m["content"]) for m in items[1:]] == [
        ("user", question),
        ("assistant", turn.text),
    ]
    assert items[-1]["status"] == "error"


def test_failed_turn_through_the_resource_api_ends_with_an_error_event(
    client: httpx.Client,
) -> None:
    session = create_session(client)

    turn = api_turn(client, session["id"], "broken [[fail:500]]")

    assert_shows_a_clean_error(turn)
    assert client.get(f"/api/sessions/{session['id']}").json()["running_turn_id"] is None


def test_a_reply_that_cannot_be_saved_sends_error_not_end_and_unlocks(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    """Redis refusing writes (maxmemory with noeviction) while a reply is written: the reader is
    never told `end` for text that is not in the history; the user's message stays; Retry works."""
    session_id = create_session(client)["id"]
    turn = client.post(f"/api/sessions/{session_id}/turns", json={"message": "keep me [[tokens:40]] [[delay:40]]"})
    assert turn.status_code == 202
    policy = config_set(redis_client, "maxmemory-policy", "noeviction")
    try:
        with client.stream("GET", turn.json()["events_url"]) as response:
            events = []
            for event in iter_sse(response):
                events.append(event)
                if len(events) == 2:  # the reply is under way: now Redis is full
                    config_set(redis_client, "maxmemory", "1")
    finally:
        config_set(redis_client, "maxmemory", "0")
        config_set(redis_client, "maxmemory-policy", policy)
    assert events[-1].type == "error" and not any(e.type == "end" for e in events)
    assert "saved" in events[-1].data["content"] or "保存" in events[-1].data["content"]
    history = messages_of(client, session_id)["items"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["keep me [[tokens:40]] [[delay:40]]"]
    retry = client.post(f"/api/sessions/{session_id}/turns", json={"message": "again"})
    assert retry.status_code == 202  # not locked
