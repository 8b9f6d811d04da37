"""The registry of a worker's open conversation channels (webapp/channels.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from webapp.core.turns.channels import ConversationChannels, missed


def run_of(turn_id: str, user_id: str, session_id: str) -> Any:
    """What the start hook reads of a TurnRun: its id and conversation."""
    return SimpleNamespace(id=turn_id, conversation=SimpleNamespace(id=session_id, user_id=user_id))


def test_a_turn_is_handed_to_every_channel_of_its_conversation_and_no_other() -> None:
    async def main() -> None:
        channels = ConversationChannels()
        first, second = channels.open_channel("a", "u1", "s1"), channels.open_channel("b", "u1", "s1")
        elsewhere, foreign = channels.open_channel("c", "u1", "s2"), channels.open_channel("a", "u2", "s1")
        waiting = asyncio.ensure_future(first.next_turn())
        await asyncio.sleep(0)
        channels.turn_started(run_of("t1", "u1", "s1"))
        channels.turn_started(run_of("t2", "u1", "s1"))
        assert (await waiting).id == "t1" and (await first.next_turn()).id == "t2"  # in order, none lost
        assert [run.id for run in second.started] == ["t1", "t2"]
        assert not elsewhere.started and not foreign.started

    asyncio.run(main())


def test_a_post_finds_only_its_own_users_open_channel() -> None:
    channels = ConversationChannels()
    channel = channels.open_channel("page-1", "u1", "s1")
    assert channels.is_open("page-1", "u1", "s1")
    assert not channels.is_open("page-1", "u2", "s1")  # the same id named by another identity
    assert not channels.is_open("page-1", "u1", "s2") and not channels.is_open("", "u1", "s1")
    channels.close(channel)
    channels.close(channel)  # (twice is harmless)
    assert not channels.is_open("page-1", "u1", "s1") and channels.open == {}


def test_a_channel_opened_after_its_page_was_read_gets_the_turns_started_since() -> None:
    """The start hook only reaches channels already open: one that opens later is handed the turns
    of its conversation started since its page was read, but not the one that read found."""
    started = {("u1", "s1"): [run_of("shown", "u1", "s1"), run_of("new", "u1", "s1")]}
    channels = ConversationChannels(lambda user_id, session_id, since: started.get((user_id, session_id), []))
    channel = channels.open_channel("a", "u1", "s1", read_at=0.0, shown_turn="shown")
    assert [run.id for run in channel.started] == ["new"]
    assert not channels.open_channel("b", "u1", "s1").started  # (no read: nothing to catch up)


def test_a_turn_answered_with_its_bubbles_is_not_shown_again_by_that_pages_channel() -> None:
    channels = ConversationChannels()
    channels.answered_without("page-1", "t1")
    channels.answered_without("", "t2")  # (a post that named no channel: nothing to remember)
    mine, other = channels.open_channel("page-1", "u1", "s1"), channels.open_channel("page-2", "u1", "s1")
    assert channels.shows_already(mine, "t1") and not channels.shows_already(other, "t1")
    assert not channels.shows_already(mine, "t2") and "t2" not in channels.answered
    for n in range(channels.ANSWERED_KEPT + 10):  # bounded: the oldest are forgotten
        channels.answered_without("page-3", f"x{n}")
    assert len(channels.answered) == channels.ANSWERED_KEPT and "t1" not in channels.answered


def test_what_a_reconnecting_channel_owes_its_page() -> None:
    assert missed(None, None, 0, 99) == ""  # a conversation with no turn yet
    assert missed("t2", "t1", 99, 99) == "sync"  # a whole turn went by
    assert missed("t1", None, 99, 99) == "sync"  # a page that shows none of the turns there are
    assert missed("t1", "t1", 5, 99) == "resume"  # the rest of the reply after event 5
    assert missed("t1", "t1", 99, 99) == ""  # all of it shown
