"""Turns in-process: the writer (start, generate, save, cancel) and the reader (follow, resume, replay,
recover), on a real redis-server with the fake model over HTTP. What a user would see of a reply:
its events, and the history and turn state Redis holds afterwards."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing

import pytest

from tests.fake_upstream import expected_sys_tag, parse_reply
from tests.unit.wiring import Core
from webapp.base.errors import RateLimited, SessionNotFound, TurnRunning
from webapp.base.i18n import t
from webapp.base.metrics import Metrics
from webapp.base.models import Message, TurnEvent, new_id, new_message_id, now_iso
from webapp.core.roles import BUILTIN_ROLES
from webapp.core.turns.reader import TurnReader
from webapp.storage.keys import TurnRef

ALICE, BOB = "alice", "bob"


def text_of(events: list[TurnEvent]) -> str:
    return "".join(e.content for e in events if e.type == "chunk")


async def first_chunk(core: Core, user_id: str, turn_id: str) -> None:
    """Until the reply has begun (its first text is out)."""
    turn = await core.reader.owned_turn(turn_id, user_id)
    async with aclosing(core.reader.follow(turn)) as batches:
        async for batch in batches:
            if any(event.type == "chunk" for event in batch):
                return


async def test_a_turn_saves_the_question_and_the_whole_reply_and_frees_the_conversation(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)

    started = await core.writer.start_turn(conversation.id, ALICE, "What is a kumquat?", None, "en")
    events = await core.finish(ALICE, started)

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    end = events[-1]
    assert end.type == "end" and end.message_id
    _, question, reply = await core.history(ALICE, conversation.id)
    assert (question.role, question.content) == ("user", "What is a kumquat?")
    assert (reply.role, reply.id, reply.status) == ("assistant", end.message_id, "complete")
    assert reply.content == text_of(events)
    assert (reply.role_id, reply.model) == ("assistant", "fake-model")
    said = parse_reply(reply.content)  # what the model was sent: the welcome, the question, the role's prompt
    assert said["ctx"] == 2 and said["last"] == "What is a kumquat?"
    assert said["sys"] == expected_sys_tag(BUILTIN_ROLES["assistant"].system_prompt)
    turn = await core.store.get_turn(TurnRef(ALICE, started.id))
    assert (turn.status, turn.message_id, turn.session_id) == ("complete", reply.id, conversation.id)
    stored = await core.store.get_conversation(ALICE, conversation.id)
    assert stored.running_turn_id is None and stored.message_count == 3
    assert stored.title == "What is a kumquat?" and stored.preview.startswith("ctx=2")
    assert await core.store.lock_holder(ALICE, conversation.id) is None


async def test_the_next_turn_sends_the_model_the_conversation_so_far(core: Core) -> None:
    conversation = await core.conversations.create(ALICE, role_id="teacher")
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "first question", None, "en"))

    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "second question", None, "en"))

    reply = parse_reply((await core.history(ALICE, conversation.id))[-1].content)
    assert reply["ctx"] == 4 and reply["last"] == "second question"
    assert reply["sys"] == expected_sys_tag(BUILTIN_ROLES["teacher"].system_prompt)


async def test_a_second_turn_while_one_runs_is_refused_and_stores_nothing(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)
    running = await core.writer.start_turn(conversation.id, ALICE, "take your time [[stall]]", None, "en")

    with pytest.raises(TurnRunning):
        await core.writer.start_turn(conversation.id, ALICE, "are you there?", None, "en")
    with pytest.raises(TurnRunning):
        await core.writer.regenerate(conversation.id, ALICE, "en")

    assert [m.content for m in await core.history(ALICE, conversation.id) if m.role == "user"] == \
        ["take your time [[stall]]"]
    assert await core.store.lock_holder(ALICE, conversation.id) == running.id  # still the first turn's
    await core.writer.cancel(await core.reader.owned_turn(running.id, ALICE))
    await core.finish(ALICE, running)
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "now?", None, "en"))


async def test_a_turn_in_someone_elses_conversation_is_refused_as_missing(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)

    with pytest.raises(SessionNotFound):
        await core.writer.start_turn(conversation.id, BOB, "let me in", None, "en")

    assert len(await core.history(ALICE, conversation.id)) == 1
    assert await core.store.lock_holder(ALICE, conversation.id) is None


async def test_a_model_that_fails_before_answering_keeps_the_question_and_ends_with_an_error(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)

    started = await core.writer.start_turn(conversation.id, ALICE, "hello [[fail:400]]", None, "en")
    events = await core.finish(ALICE, started)

    assert [(e.type, e.content) for e in events] == [("error", t("error.upstream", "en"))]
    assert [(m.role, m.content) for m in await core.history(ALICE, conversation.id)][1:] == \
        [("user", "hello [[fail:400]]")]  # no reply was written: nothing saved as one
    assert (await core.store.get_turn(TurnRef(ALICE, started.id))).status == "error"
    stored = await core.store.get_conversation(ALICE, conversation.id)
    assert stored.running_turn_id is None and await core.store.lock_holder(ALICE, conversation.id) is None
    view = await core.conversations.view(stored, limit=20)
    assert view.no_reply_text == "hello [[fail:400]]"  # the page offers to send it again


async def test_retry_after_a_failure_answers_the_same_message_without_storing_it_twice(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)
    question = "try again [[fail:400]] [[once]]"
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, question, None, "en"))

    retry = await core.writer.regenerate(conversation.id, ALICE, "en")
    events = await core.finish(ALICE, retry)

    assert events[-1].type == "end"
    history = await core.history(ALICE, conversation.id)
    assert [(m.role, m.status) for m in history] == [("assistant", "complete"), ("user", "complete"),
                                                     ("assistant", "complete")]
    assert history[1].content == question and parse_reply(history[2].content)["ctx"] == 2
    assert await core.conversations.versions_of(await core.conversations.owned(conversation.id, ALICE)) == {}


async def test_a_model_that_breaks_off_mid_reply_saves_what_arrived_as_an_error_reply(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)

    started = await core.writer.start_turn(conversation.id, ALICE, "cut me off [[drop:5]]", None, "en")
    events = await core.finish(ALICE, started)

    assert events[-1].type == "error" and text_of(events).endswith(" t2")
    reply = (await core.history(ALICE, conversation.id))[-1]
    assert (reply.role, reply.status, reply.content) == ("assistant", "error", text_of(events))
    assert (await core.store.get_turn(TurnRef(ALICE, started.id))).status == "error"
    view = await core.conversations.view(await core.conversations.owned(conversation.id, ALICE), limit=20)
    assert (view.retry_text, view.retry_for) == ("cut me off [[drop:5]]", reply.id)  # the page offers Retry


async def test_stop_saves_the_reply_so_far_as_interrupted(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)
    started = await core.writer.start_turn(conversation.id, ALICE, "go on and on [[stall_after:4]]", None, "en")
    await first_chunk(core, ALICE, started.id)

    await core.writer.cancel(await core.reader.owned_turn(started.id, ALICE))
    events = await core.finish(ALICE, started)

    assert events[-1].type == "end", "a stop the user asked for is no error"
    reply = (await core.history(ALICE, conversation.id))[-1]
    assert (reply.id, reply.status, reply.content) == (events[-1].message_id, "interrupted", text_of(events))
    assert reply.content.startswith("ctx=2")
    assert (await core.store.get_turn(TurnRef(ALICE, started.id))).status == "interrupted"
    assert await core.store.lock_holder(ALICE, conversation.id) is None


async def test_a_stop_asked_through_redis_reaches_the_turn(core: Core) -> None:
    """Stop from another worker: it does not run the turn, so it asks through Redis (pub/sub)."""
    conversation = await core.conversations.create(ALICE)
    started = await core.writer.start_turn(conversation.id, ALICE, "wait for it [[stall_after:3]]", None, "en")
    await first_chunk(core, ALICE, started.id)

    await core.store.request_cancel(TurnRef(ALICE, started.id))
    events = await core.finish(ALICE, started)

    assert events[-1].type == "end"
    assert (await core.history(ALICE, conversation.id))[-1].status == "interrupted"


async def test_deleting_a_conversation_stops_its_reply_and_nothing_brings_it_back(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)
    started = await core.writer.start_turn(conversation.id, ALICE, "a long story [[stall_after:3]]", None, "en")
    await first_chunk(core, ALICE, started.id)

    await core.conversations.delete(await core.conversations.owned(conversation.id, ALICE))  # as a route loads it
    events = await core.finish(ALICE, started)
    await core.search.flush()

    assert events[-1].type == "end", "stopped at once (not after the model's timeout)"
    assert await core.store.get_conversation(ALICE, conversation.id) is None
    assert (await core.conversations.browse(ALICE)).items == []
    assert (await core.conversations.browse(ALICE, query="story")).items == []
    assert [key for key in core.store.keys.conversation_keys(ALICE, conversation.id)
            if await core.store.redis.exists(key)] == []


async def test_a_delete_mid_reply_waits_for_the_stopped_reply_to_be_saved_then_leaves_nothing(core: Core) -> None:
    """(The stopped reply's save read "the conversation exists" and then wrote its message and metadata back
    after the delete had removed them, when the delete's own steps ran in between: seen once on CI, through
    HTTP. In-process the order happens to hold without the wait; this pins it: the delete returns after the
    save.)"""
    for n in range(12):
        user = f"racer-{n}"  # (a user of their own each: the per-user turn limit)
        conversation = await core.conversations.create(user)
        started = await core.writer.start_turn(conversation.id, user, f"race {n} [[tokens:400]] [[delay:5]]", None,
                                               "en")
        await first_chunk(core, user, started.id)
        await asyncio.sleep(0.003 * n)
        run = core.writer.runs[started.id]
        await core.conversations.delete(await core.conversations.owned(conversation.id, user))
        assert run.task is not None and run.task.done(), "the delete returned before the stopped reply was saved"
        left = [key for key in core.store.keys.conversation_keys(user, conversation.id)
                if await core.store.redis.exists(key)]
        assert left == [], f"round {n}: {left}"
        assert (await core.store.get_turn(TurnRef(user, started.id))).status == "interrupted"


async def test_deleting_a_conversation_mid_reply_leaves_no_search_entries(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)
    started = await core.writer.start_turn(conversation.id, ALICE, "a long story [[stall_after:3]]", None, "en")
    await first_chunk(core, ALICE, started.id)

    await core.conversations.delete(await core.conversations.owned(conversation.id, ALICE))
    await core.finish(ALICE, started)
    await core.search.flush()

    assert await core.store.redis.keys(f"*{conversation.id}*") == []


async def test_a_reply_that_ends_after_its_conversation_was_deleted_writes_nothing_back(core: Core) -> None:
    read_before_the_turn = await core.conversations.create(ALICE)  # as a delete request read it, a moment earlier
    started = await core.writer.start_turn(read_before_the_turn.id, ALICE, "quick [[tokens:20]] [[delay:10]]", None,
                                           "en")
    await first_chunk(core, ALICE, started.id)

    await core.conversations.delete(read_before_the_turn)
    await core.finish(ALICE, started)

    assert await core.store.get_conversation(ALICE, read_before_the_turn.id) is None
    assert [key for key in core.store.keys.conversation_keys(ALICE, read_before_the_turn.id)
            if await core.store.redis.exists(key)] == []


@pytest.mark.parametrize("kind", ["send", "edit"])
async def test_a_turn_whose_conversation_is_deleted_as_it_starts_writes_nothing_and_frees_the_lock(
    core: Core, kind: str
) -> None:
    """(A delete does not wait for the lock: between the lock's round trip and the start's, it found no running
    reply to stop and removed the keys; the start then wrote a metadata hash with no owner, the message and
    the session index entry back. An edit writes its new branch before that: it goes too.)"""
    conversation = await core.conversations.create(ALICE)
    if kind == "edit":
        first = await core.writer.start_turn(conversation.id, ALICE, "first words [[tokens:3]]", None, "en")
        await core.finish(ALICE, first)
    step = "write_branch" if kind == "edit" else "save_turn_start"  # the start's first write
    write = getattr(core.store, step)

    async def deleted_in_between(*args: object, **kwargs: object) -> object:
        await core.conversations.delete(await core.conversations.owned(conversation.id, ALICE))
        return await write(*args, **kwargs)

    setattr(core.store, step, deleted_in_between)
    try:
        with pytest.raises(SessionNotFound):
            if kind == "edit":
                assert first.user_message is not None
                await core.writer.edit(conversation.id, ALICE, first.user_message.id, "other words", "en")
            else:
                await core.writer.start_turn(conversation.id, ALICE, "hello there", None, "en")
    finally:
        delattr(core.store, step)
    await core.search.flush()

    assert await core.store.get_conversation(ALICE, conversation.id) is None
    assert (await core.conversations.browse(ALICE)).items == []
    assert [key for key in core.store.keys.conversation_keys(ALICE, conversation.id)
            if await core.store.redis.exists(key)] == []
    assert await core.store.lock_holder(ALICE, conversation.id) is None
    assert core.writer.runs == {}


async def test_a_finished_turn_replays_every_event_exactly_once_from_any_event_id(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)
    started = await core.writer.start_turn(conversation.id, ALICE, "count slowly [[tokens:30]] [[delay:15]]", None,
                                           "en")
    live = await core.finish(ALICE, started)
    assert core.writer.local_run(started.id) is None  # ended: read back from its Redis stream from now on

    for after in range(len(live) + 1):
        replayed = await core.read_to_end(ALICE, started.id, after)
        assert [e.seq for e in replayed] == [e.seq for e in live[after:]], f"from event {after}"
        assert replayed == live[after:]
    saved = (await core.history(ALICE, conversation.id))[-1]
    assert text_of(await core.read_to_end(ALICE, started.id)) == saved.content
    assert await core.reader.resumable(started.id, ALICE, after=len(live)) is None  # the reader has seen the end


async def test_a_reader_on_another_worker_follows_a_running_reply_through_redis(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)
    elsewhere = TurnReader(core.store, lambda turn_id: None, Metrics())  # runs no turn: reads Redis only
    try:
        started = await core.writer.start_turn(conversation.id, ALICE, "stream it [[tokens:25]] [[delay:20]]", None,
                                               "en")
        here, there = await asyncio.gather(core.read_to_end(ALICE, started.id),
                                           core.read_to_end(ALICE, started.id, reader=elsewhere))
    finally:
        await elsewhere.aclose()

    assert [e.seq for e in there] == [e.seq for e in here]
    assert text_of(there) == text_of(here) == (await core.history(ALICE, conversation.id))[-1].content
    assert there[-1] == here[-1] and here[-1].type == "end"


async def test_a_reply_whose_writer_died_is_saved_as_interrupted_by_the_reader_that_resumes_it(core: Core) -> None:
    """A writer killed mid-reply: its user message, turn state and first chunks are in Redis, its lease
    has lapsed. A reader coming back for the rest (a reload) saves the text as an interrupted reply
    and ends the stream, for every reader."""
    conversation = await core.conversations.create(ALICE)
    turn_id = new_id()
    lock = await core.store.lock_turn(ALICE, conversation.id, turn_id=turn_id, hits=[])
    assert lock.locked
    conversation.message_count, conversation.running_turn_id = 2, turn_id
    question = Message(id=new_message_id(), role="user", content="and then?", ts=now_iso())
    await core.store.save_turn_start(conversation, question, turn_id=turn_id, context_messages=20)
    ref = TurnRef(ALICE, turn_id)
    await core.store.append_events([(ref, [TurnEvent(1, "chunk", "Once upon"), TurnEvent(2, "chunk", " a time")])])
    await core.store.release_lock(ALICE, conversation.id, turn_id)  # the lease lapsed: nobody renews it

    rest = await core.read_to_end(ALICE, turn_id, after=2)

    assert [(e.seq, e.type, e.content) for e in rest] == [(3, "error", t("error.interrupted", "zh"))]
    assert [e.type for e in await core.read_to_end(ALICE, turn_id)] == ["chunk", "chunk", "error"]
    reply = (await core.history(ALICE, conversation.id))[-1]
    assert (reply.role, reply.status, reply.content) == ("assistant", "interrupted", "Once upon a time")
    assert (await core.store.get_turn(ref)).status == "interrupted"
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "go on", None, "en"))


async def test_regenerate_keeps_the_first_reply_as_a_version_to_switch_back_to(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "a name for a cat [[vary]]", None,
                                                          "en"))
    first = (await core.history(ALICE, conversation.id))[-1]

    await core.finish(ALICE, await core.writer.regenerate(conversation.id, ALICE, "en", reply_id=first.id))

    history = await core.history(ALICE, conversation.id)
    second = history[-1]
    assert len(history) == 3 and second.content != first.content and second.status == "complete"
    owned = await core.conversations.owned(conversation.id, ALICE)
    assert await core.conversations.versions_of(owned) == {2: (2, 2)}

    await core.conversations.switch_version(owned, 2, 1)

    assert (await core.history(ALICE, conversation.id))[-1] == first
    assert await core.conversations.versions_of(owned) == {2: (1, 2)}


async def test_editing_a_question_keeps_the_old_one_and_its_reply_as_a_version(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "capital of Australia?", None, "en"))
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "and its population?", None, "en"))
    asked = (await core.history(ALICE, conversation.id))[1]

    await core.finish(ALICE, await core.writer.edit(conversation.id, ALICE, asked.id, "capital of Austria?", "en"))

    history = await core.history(ALICE, conversation.id)
    assert [m.content for m in history if m.role == "user"] == ["capital of Austria?"]
    assert parse_reply(history[-1].content)["last"] == "capital of Austria?"
    owned = await core.conversations.owned(conversation.id, ALICE)
    assert await core.conversations.versions_of(owned) == {1: (2, 2)}
    await core.conversations.switch_version(owned, 1, 1)
    assert [m.content for m in await core.history(ALICE, conversation.id) if m.role == "user"] == \
        ["capital of Australia?", "and its population?"]


async def test_a_repeated_request_starts_no_second_turn(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)
    first = await core.writer.start_turn(conversation.id, ALICE, "only once", None, "en", request_id="form-1")
    await core.finish(ALICE, first)

    again = await core.writer.start_turn(conversation.id, ALICE, "only once", None, "en", request_id="form-1")

    assert again.duplicate and again.id == first.id
    assert [m.content for m in await core.history(ALICE, conversation.id) if m.role == "user"] == ["only once"]


async def test_the_eleventh_turn_in_a_minute_is_refused(core: Core) -> None:
    limit = core.writer.turns_per_user
    assert (limit.per_window, limit.window_seconds) == (10, 60)  # RATE_LIMIT_PER_MINUTE as shipped
    if limit.window_seconds - time.time() % limit.window_seconds < 2:  # all eleven in one window
        await asyncio.sleep(limit.window_seconds - time.time() % limit.window_seconds)
    conversations = [await core.conversations.create(ALICE) for _ in range(11)]
    started = [await core.writer.start_turn(c.id, ALICE, f"question {n}", None, "en")
               for n, c in enumerate(conversations[:10])]

    with pytest.raises(RateLimited) as refused:
        await core.writer.start_turn(conversations[10].id, ALICE, "one more", None, "en")

    assert 1 <= refused.value.retry_after <= 2 * limit.window_seconds  # (a sliding window: core/limits.py)
    assert len(await core.history(ALICE, conversations[10].id)) == 1, "the refused message is not stored"
    assert await core.store.lock_holder(ALICE, conversations[10].id) is None
    other = await core.conversations.create(BOB)
    await core.finish(BOB, await core.writer.start_turn(other.id, BOB, "mine", None, "en"))  # per user
    for turn in started:
        await core.finish(ALICE, turn)
