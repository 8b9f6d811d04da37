"""How a reply ends says what was saved (issue 34): an upstream that answers 200 with something else than
an event stream, a stream that stops without its proper ending, a save that fails. On a real redis-server
with the fake model over HTTP."""

from __future__ import annotations

import asyncio
import time

from tests.unit.wiring import Core
from webapp.base.i18n import t
from webapp.base.metrics import Metrics
from webapp.base.models import TurnEvent
from webapp.core.turns.reader import TurnReader
from webapp.storage.keys import TurnRef

ALICE = "alice"


def text_of(events: list[TurnEvent]) -> str:
    return "".join(e.content for e in events if e.type == "chunk")


async def test_an_upstream_that_answers_200_with_an_html_page_is_an_error_naming_its_content_type(
        core: Core) -> None:
    conversation = await core.conversations.create(ALICE)

    started = await core.writer.start_turn(conversation.id, ALICE, "hello [[html]]", None, "en")
    events = await core.finish(ALICE, started)

    assert [e.type for e in events] == ["error"]
    assert "text/html" in events[-1].content
    assert events[-1].content == t("error.upstream_not_stream", "en", content_type="text/html")
    history = await core.history(ALICE, conversation.id)
    assert [(m.role, m.content) for m in history][1:] == [("user", "hello [[html]]")], "no empty reply saved"
    assert (await core.store.get_turn(TurnRef(ALICE, started.id))).status == "error"


async def test_an_upstream_that_answers_a_plain_json_completion_is_an_error_naming_its_content_type(
        core: Core) -> None:
    conversation = await core.conversations.create(ALICE)

    started = await core.writer.start_turn(conversation.id, ALICE, "hello [[json]]", None, "zh")
    events = await core.finish(ALICE, started)

    assert [e.type for e in events] == ["error"] and "application/json" in events[-1].content
    assert [m.role for m in await core.history(ALICE, conversation.id)] == ["assistant", "user"]


async def test_a_stream_that_closes_without_done_or_a_finish_reason_is_saved_interrupted(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)

    started = await core.writer.start_turn(conversation.id, ALICE, "cut short [[nodone]]", None, "en")
    events = await core.finish(ALICE, started)

    assert events[-1].type == "error"
    assert events[-1].content == t("error.upstream_incomplete", "en")
    reply = (await core.history(ALICE, conversation.id))[-1]
    assert (reply.role, reply.status, reply.content) == ("assistant", "interrupted", text_of(events))
    assert reply.content.startswith("ctx=2") and reply.content.endswith(" t9")  # every token that came
    assert (await core.store.get_turn(TurnRef(ALICE, started.id))).status == "interrupted"
    assert await core.store.lock_holder(ALICE, conversation.id) is None


async def test_a_stream_with_a_finish_reason_is_complete(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)

    events = await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "whole", None, "en"))

    assert events[-1].type == "end"
    assert (await core.history(ALICE, conversation.id))[-1].status == "complete"


async def test_a_huge_delta_reaches_readers_as_events_of_at_most_64_kb(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)

    started = await core.writer.start_turn(conversation.id, ALICE, "a lot [[big:1000000]]", None, "en")
    events = await core.finish(ALICE, started)
    replayed = await core.read_to_end(ALICE, started.id, reader=TurnReader(core.store, lambda _: None, Metrics()))

    for seen in (events, replayed):  # from memory, and from the turn's Redis stream
        assert seen[-1].type == "end"
        assert max(len(e.content.encode()) for e in seen) <= 64 * 1024
        assert len([e for e in seen if e.type == "chunk"]) >= 1_000_000 // (64 * 1024)
    reply = (await core.history(ALICE, conversation.id))[-1]
    assert reply.content == text_of(events) == text_of(replayed)
    assert "x" * 999_999 + "y" in reply.content


async def test_a_reply_that_cannot_be_saved_says_so_frees_its_conversation_and_is_not_saved_later(
        core: Core) -> None:
    """Redis full (noeviction) while a reply is written: `error` says it could not be saved, and that is
    true for good: no recovery finds its text later (before: saved as interrupted once memory was back),
    and the conversation is free for Retry at once."""
    conversation = await core.conversations.create(ALICE)
    started = await core.writer.start_turn(conversation.id, ALICE, "keep me [[tokens:60]] [[delay:20]]", None, "en")
    ref = TurnRef(ALICE, started.id)
    while not await core.store.read_events(ref, 0):  # some of it is in the turn's stream
        await asyncio.sleep(0.02)
    redis = core.store.redis
    policy = (await redis.config_get("maxmemory-policy"))["maxmemory-policy"]
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", 1)
    try:
        events = await core.finish(ALICE, started)
        ended = time.monotonic()
        while await core.store.lock_holder(ALICE, conversation.id) is not None:
            assert time.monotonic() - ended < 1, "the conversation stays locked"
            await asyncio.sleep(0.02)
    finally:
        await redis.config_set("maxmemory", 0)
        await redis.config_set("maxmemory-policy", policy)

    assert events[-1].type == "error" and events[-1].content == t("error.save_failed", "en")
    assert text_of(events)  # the reader saw text arrive, which the error says is not kept
    await core.writer.recovery.recover(ref)  # what any host's sweep, a reader or the next turn would do
    assert [m.role for m in await core.history(ALICE, conversation.id)] == ["assistant", "user"]
    retry = await core.writer.regenerate(conversation.id, ALICE, "en")
    assert (await core.finish(ALICE, retry))[-1].type == "end"
