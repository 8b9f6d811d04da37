"""Conversations (webapp/core/conversations.py) in-process, on a real redis-server: what a user sees
of their list, a new conversation, renaming, deleting and undoing, and someone else's conversation."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.fake_upstream import parse_whoami
from tests.unit.wiring import Core
from webapp.base.errors import (
    EmptyTitle,
    InvalidId,
    SessionNotFound,
    TooManyConversations,
    UndoExpired,
    UnknownModel,
    UnknownRole,
)
from webapp.base.i18n import t
from webapp.base.models import WELCOME
from webapp.core.auto_title import TitleWriter
from webapp.core.conversations import Conversations

ALICE, BOB = "alice", "bob"


async def test_a_new_conversation_starts_with_the_welcome_message_and_is_listed(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)

    stored = await core.store.get_conversation(ALICE, conversation.id)
    assert stored is not None and stored.title == "" and stored.role == "assistant" and stored.message_count == 1
    [welcome] = await core.history(ALICE, conversation.id)
    assert (welcome.role, welcome.kind, welcome.content) == ("assistant", WELCOME, t("welcome", "zh"))
    listed = await core.conversations.browse(ALICE)
    assert [c.id for c in listed.items] == [conversation.id] and listed.next_cursor is None


async def test_a_title_and_a_role_given_at_creation_are_kept(core: Core) -> None:
    conversation = await core.conversations.create(ALICE, role_id="teacher", title="  Homework   help ")

    stored = await core.store.get_conversation(ALICE, conversation.id)
    assert (stored.title, stored.title_by, stored.role) == ("Homework help", "user", "teacher")
    with pytest.raises(UnknownRole):
        await core.conversations.create(ALICE, role_id="pirate")
    assert len((await core.conversations.browse(ALICE)).items) == 1, "a refused role creates nothing"


async def test_someone_elses_conversation_looks_exactly_like_a_missing_one(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)

    with pytest.raises(SessionNotFound):
        await core.conversations.owned(conversation.id, BOB)
    with pytest.raises(SessionNotFound):
        await core.conversations.owned(str(uuid.uuid4()), ALICE)
    with pytest.raises(InvalidId):
        await core.conversations.owned("../../etc/passwd", ALICE)
    assert (await core.conversations.browse(BOB)).items == []
    assert (await core.conversations.owned(conversation.id, ALICE)).id == conversation.id


async def test_rename_is_the_users_title_and_an_empty_one_is_refused(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)

    await core.conversations.update(conversation, title="Trip   to Kyoto")
    with pytest.raises(EmptyTitle):
        await core.conversations.update(conversation, title="   ")

    stored = await core.store.get_conversation(ALICE, conversation.id)
    assert (stored.title, stored.title_by) == ("Trip to Kyoto", "user")
    found = await core.conversations.browse(ALICE, query="kyoto")
    assert [c.id for c in found.items] == [conversation.id], "a rename is searchable at once"


async def test_switching_the_role_is_stored_and_an_unknown_role_changes_nothing(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)

    await core.conversations.update(conversation, role_id="programmer")
    with pytest.raises(UnknownRole):
        await core.conversations.update(conversation, role_id="r_0123456789abcdef")  # no such custom role

    assert (await core.store.get_conversation(ALICE, conversation.id)).role == "programmer"


async def test_a_conversation_switched_to_another_offered_model_is_answered_by_it(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)
    assert await core.conversations.models() == ["fake-model", "fake-model-large"]  # the API's list, default first

    await core.conversations.update(conversation, model="fake-model-large")
    with pytest.raises(UnknownModel):
        await core.conversations.update(conversation, model="gpt-9")
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "who? [[whoami]]", None, "en"))

    reply = (await core.history(ALICE, conversation.id))[-1]
    assert parse_whoami(reply.content)["model"] == reply.model == "fake-model-large"
    assert (await core.store.get_conversation(ALICE, conversation.id)).model == "fake-model-large"


async def test_the_model_titles_a_conversation_after_its_first_exchange_but_a_rename_wins(core: Core) -> None:
    titles = TitleWriter(core.store, core.provider, core.search, enabled=True)  # AUTO_TITLE=true
    core.writer.saved_hooks.append(titles.reply_saved)
    titled, renamed = await core.conversations.create(ALICE), await core.conversations.create(ALICE)
    try:
        await core.finish(ALICE, await core.writer.start_turn(titled.id, ALICE, "tell me about owls", None, "en"))
        slow = await core.writer.start_turn(renamed.id, ALICE, "and ravens [[tokens:20]] [[delay:10]]", None, "en")
        await core.conversations.update(await core.conversations.owned(renamed.id, ALICE), title="My ravens")
        await core.finish(ALICE, slow)
        while titles.tasks:
            await asyncio.wait(set(titles.tasks))
    finally:
        await titles.aclose()

    first = await core.store.get_conversation(ALICE, titled.id)
    assert first.title_by == "model" and first.title not in ("", "tell me about owls")
    second = await core.store.get_conversation(ALICE, renamed.id)
    assert (second.title, second.title_by) == ("My ravens", "user")


async def test_delete_removes_the_conversation_and_its_messages_for_good(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)
    keep = await core.conversations.create(ALICE)
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "hello", None, "en"))

    await core.conversations.delete(conversation)

    assert await core.store.get_conversation(ALICE, conversation.id) is None
    assert await core.store.all_messages(conversation) == []
    assert [c.id for c in (await core.conversations.browse(ALICE)).items] == [keep.id]
    with pytest.raises(SessionNotFound):
        await core.conversations.owned(conversation.id, ALICE)
    with pytest.raises(UndoExpired):  # deleted for good: nothing to put back
        await core.conversations.undo_delete(ALICE, conversation.id)


async def test_undo_puts_a_deleted_conversation_back_with_its_messages(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "remember the kumquats", None, "en"))
    before = await core.history(ALICE, conversation.id)

    await core.conversations.delete_undoably(conversation)
    assert await core.store.get_conversation(ALICE, conversation.id) is None
    assert (await core.conversations.browse(ALICE)).items == []
    assert (await core.conversations.browse(ALICE, query="kumquats")).items == []
    with pytest.raises(UndoExpired):  # only its owner can put it back
        await core.conversations.undo_delete(BOB, conversation.id)

    restored = await core.conversations.undo_delete(ALICE, conversation.id)

    assert restored.id == conversation.id
    assert await core.history(ALICE, conversation.id) == before
    assert [c.id for c in (await core.conversations.browse(ALICE)).items] == [conversation.id]
    assert [c.id for c in (await core.conversations.browse(ALICE, query="kumquats")).items] == [conversation.id]
    with pytest.raises(UndoExpired):  # once
        await core.conversations.undo_delete(ALICE, conversation.id)


async def test_new_chat_reuses_the_untouched_newest_conversation(core: Core) -> None:
    first = await core.conversations.fresh(ALICE)
    assert (await core.conversations.fresh(ALICE)).id == first.id  # no pile of empty conversations

    await core.finish(ALICE, await core.writer.start_turn(first.id, ALICE, "hi", None, "en"))

    second = await core.conversations.fresh(ALICE)
    assert second.id != first.id
    assert {c.id for c in (await core.conversations.browse(ALICE)).items} == {first.id, second.id}


async def test_the_conversation_limit_refuses_one_more_and_writes_nothing(core: Core) -> None:
    limited = Conversations(core.store, core.writer, core.reader, max_per_user=2, search=core.search)
    await limited.create(ALICE)
    await limited.create(ALICE)

    with pytest.raises(TooManyConversations):
        await limited.create(ALICE)

    assert await core.store.count_conversations(ALICE) == 2
    await limited.create(BOB)  # the limit is per user


async def test_the_list_pages_newest_first_without_repeats_or_gaps(core: Core) -> None:
    made = [await core.conversations.create(ALICE, title=f"chat {n}") for n in range(7)]

    seen, cursor = [], None
    while True:
        page = await core.conversations.browse(ALICE, cursor=cursor, limit=3)
        seen += [c.id for c in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert seen == [c.id for c in reversed(made)]


async def test_a_conversation_with_activity_moves_to_the_top(core: Core) -> None:
    older = await core.conversations.create(ALICE)
    newer = await core.conversations.create(ALICE)

    await core.finish(ALICE, await core.writer.start_turn(older.id, ALICE, "back again", None, "en"))

    assert [c.id for c in (await core.conversations.browse(ALICE)).items] == [older.id, newer.id]
    assert (await core.conversations.latest(ALICE)).id == older.id


async def test_the_first_send_from_the_draft_creates_one_conversation_even_when_repeated(core: Core) -> None:
    first = await core.conversations.start_first(ALICE, "plan a picnic", "en", request_id="req-1")
    await core.finish(ALICE, first.started)
    again = await core.conversations.start_first(ALICE, "plan a picnic", "en", request_id="req-1")

    assert again.started.duplicate and again.started.id == first.started.id and again.pane is None
    assert first.only_one and first.pane is not None
    listed = (await core.conversations.browse(ALICE)).items
    assert [c.id for c in listed] == [first.started.conversation.id]
    history = await core.history(ALICE, listed[0].id)
    assert [m.role for m in history] == ["assistant", "user", "assistant"]
    assert [m.content for m in history if m.role == "user"] == ["plan a picnic"], "stored once"
