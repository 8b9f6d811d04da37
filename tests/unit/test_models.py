"""Stored records: the message JSON and what counts as an untouched conversation (webapp/models.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from webapp.base.models import WELCOME, Conversation, Message

TS = "2024-01-01T00:00:00.000+00:00"


def conversation(**changes: Any) -> Conversation:
    """A conversation with only its welcome message, with `changes` applied."""
    untouched = Conversation(
        id="0f1e2d3c-4b5a-4968-8776-655443322110",
        user_id="u_1",
        title="",
        preview="",
        role="assistant",
        message_count=1,
        created=1718000000.5,
        updated=1718000000.5,
    )
    return replace(untouched, **changes)


def test_a_message_round_trips_through_json() -> None:
    message = Message(id="m_1", role="assistant", content="半个回复", ts=TS, status="interrupted")
    assert Message.from_json(message.to_json()) == message


def test_a_welcome_message_keeps_its_kind_through_json() -> None:
    message = Message(id="m_0", role="assistant", content="你好", ts=TS, kind=WELCOME)
    assert orjson.loads(message.to_json())["k"] == "welcome"
    assert Message.from_json(message.to_json()) == message


def test_a_message_without_a_kind_writes_no_kind_field() -> None:
    data = orjson.loads(Message(id="m_1", role="user", content="hi", ts=TS).to_json())
    assert data == {"id": "m_1", "role": "user", "content": "hi", "ts": TS, "status": "complete"}


def test_a_seed_style_message_with_timestamp_reads_with_defaults() -> None:
    message = Message.from_json('{"role": "user", "content": "hi", "timestamp": "2024-01-01T00:00:00"}')
    assert message == Message(id="", role="user", content="hi", ts="2024-01-01T00:00:00")


def test_a_conversation_with_only_its_welcome_is_untouched() -> None:
    assert conversation().untouched


def test_a_reply_a_title_or_a_running_turn_makes_a_conversation_touched() -> None:
    assert not conversation(message_count=2).untouched
    assert not conversation(title="Plans").untouched
    assert not conversation(running_turn_id="b1c2d3e4-0000-4000-8000-000000000000").untouched


def test_a_conversation_round_trips_through_its_hash_without_the_running_turn() -> None:
    original = conversation(title="Plans", preview="ok", message_count=3, running_turn_id="t")
    stored = {key: str(value) for key, value in original.to_hash().items()}
    assert Conversation.from_hash(original.id, stored) == conversation(title="Plans", preview="ok", message_count=3)
