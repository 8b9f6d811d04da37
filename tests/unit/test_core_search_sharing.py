"""Search (webapp/core/search.py) and read-only links (webapp/core/sharing.py) in-process on a real
redis-server: what a user finds, and what a link shows."""

from __future__ import annotations

import pytest

from tests.fake_upstream import expected_sys_tag
from tests.unit.wiring import Core
from webapp.base.errors import ShareNotFound
from webapp.core.roles import BUILTIN_ROLES

ALICE, BOB = "alice", "bob"


async def ask(core: Core, user_id: str, text: str, *, role_id: str | None = None) -> str:
    """A conversation with one finished exchange; its id."""
    conversation = await core.conversations.create(user_id, role_id=role_id)
    await core.finish(user_id, await core.writer.start_turn(conversation.id, user_id, text, None, "en"))
    return conversation.id


async def found(core: Core, user_id: str, query: str) -> list[str]:
    return [c.id for c in (await core.conversations.browse(user_id, query=query)).items]


async def test_search_finds_words_of_a_saved_reply_not_only_of_the_question(core: Core) -> None:
    teacher = await ask(core, ALICE, "explain photosynthesis", role_id="teacher")
    await ask(core, ALICE, "recipe for marmalade")
    only_in_the_reply = expected_sys_tag(BUILTIN_ROLES["teacher"].system_prompt)  # the fake model's reply says it

    assert await found(core, ALICE, only_in_the_reply) == [teacher]
    assert await found(core, ALICE, "photosynthesis") == [teacher]
    assert await found(core, BOB, "photosynthesis") == [], "nobody else's conversations"


async def test_search_matches_the_start_of_a_word_being_typed_and_every_word_given(core: Core) -> None:
    kumquat = await ask(core, ALICE, "are kumquats sweet or sour")
    sweet = await ask(core, ALICE, "sweet potato soup")

    assert await found(core, ALICE, "kumq") == [kumquat]
    assert set(await found(core, ALICE, "sweet")) == {kumquat, sweet}
    assert await found(core, ALICE, "sweet sou") == [sweet, kumquat]  # "sour", "soup": newest activity first
    assert await found(core, ALICE, "sweet potato") == [sweet]
    assert await found(core, ALICE, "sour potato") == []


async def test_chinese_text_is_found_by_any_part_of_a_word(core: Core) -> None:
    weather = await ask(core, ALICE, "今天天气很好，我们去公园吧")
    await ask(core, ALICE, "明天会下雨吗")

    assert await found(core, ALICE, "天气") == [weather]
    assert await found(core, ALICE, "公园") == [weather]
    assert await found(core, ALICE, "下雪") == []


async def test_a_single_letter_is_looked_for_in_the_text_of_the_newest_conversations(core: Core) -> None:
    quiz = await ask(core, ALICE, "a quiz for tonight")
    await ask(core, ALICE, "no such letter here")

    assert await found(core, ALICE, "Q") == [quiz]  # too short for the index: any text holding it


async def test_a_deleted_conversation_is_no_longer_found(core: Core) -> None:
    gone = await ask(core, ALICE, "secret plans for the weekend")
    kept = await ask(core, ALICE, "public plans for the weekend")

    await core.conversations.delete(await core.conversations.owned(gone, ALICE))

    assert await found(core, ALICE, "weekend") == [kept]


async def test_conversations_from_before_the_index_are_indexed_on_the_first_search(core: Core) -> None:
    conversation = await ask(core, ALICE, "an old conversation about lighthouses")
    await core.store.redis.delete(*await core.store.redis.keys("*:w:*"), *await core.store.redis.keys("*:terms"))
    await core.store.mark_search_index_ready(ALICE, False)

    assert await found(core, ALICE, "lighthouses") == [conversation]
    assert await core.store.search_index_ready(ALICE)


async def test_a_read_only_link_shows_the_conversation_until_revoked(core: Core) -> None:
    conversation = await core.conversations.owned(await ask(core, ALICE, "share this"), ALICE)

    token = await core.shares.create(conversation)
    assert await core.shares.create(conversation) == token, "one link per conversation"
    shown = await core.shares.open(token)

    assert shown.conversation.id == conversation.id
    assert [m.content for m in shown.messages] == [m.content for m in await core.history(ALICE, conversation.id)]
    assert await core.shares.revoke(conversation)
    with pytest.raises(ShareNotFound):
        await core.shares.open(token)
    with pytest.raises(ShareNotFound):
        await core.shares.open("not-a-token")


async def test_deleting_a_conversation_revokes_its_link(core: Core) -> None:
    conversation = await core.conversations.owned(await ask(core, ALICE, "share then delete"), ALICE)
    token = await core.shares.create(conversation)

    await core.conversations.delete(conversation)

    with pytest.raises(ShareNotFound):
        await core.shares.open(token)
    assert await core.store.share_token(ALICE, conversation.id) is None
