"""Custom roles (webapp/core/roles.py) in-process on a real redis-server, and what a conversation using
one sends the model (the fake model's `[[whoami]]` reply names the system prompt, model and temperature)."""

from __future__ import annotations

import pytest

from tests.fake_upstream import parse_whoami
from tests.unit.wiring import Core
from webapp.base.errors import RoleLimit, RoleNotFound, UnknownRole
from webapp.core.roles import BUILTIN_ROLES, RoleBook, custom_role

ALICE, BOB = "alice", "bob"


async def test_a_custom_role_is_listed_after_the_built_in_ones_until_deleted(core: Core) -> None:
    pirate = await core.roles.create(ALICE, custom_role("Pirate", "Talks like one", "Answer as a pirate."))
    critic = await core.roles.create(ALICE, custom_role("Critic", "Finds the flaw", "Point out one weakness."))

    listed = await core.roles.all(ALICE)
    assert [r.id for r in listed] == [*BUILTIN_ROLES, pirate.id, critic.id]  # built-in first, then oldest first
    got = await core.roles.get(ALICE, pirate.id)
    assert (got.name("en"), got.system_prompt, got.custom) == ("Pirate", "Answer as a pirate.", True)

    await core.roles.delete(ALICE, pirate.id)

    assert [r.id for r in await core.roles.own(ALICE)] == [critic.id]
    with pytest.raises(RoleNotFound):
        await core.roles.delete(ALICE, pirate.id)
    with pytest.raises(UnknownRole):
        await core.roles.get(ALICE, pirate.id)


async def test_someone_elses_role_is_unknown(core: Core) -> None:
    pirate = await core.roles.create(ALICE, custom_role("Pirate", "", "Answer as a pirate."))

    with pytest.raises(UnknownRole):
        await core.roles.get(BOB, pirate.id)
    with pytest.raises(RoleNotFound):
        await core.roles.delete(BOB, pirate.id)
    assert await core.roles.own(BOB) == []
    conversation = await core.conversations.create(BOB)
    with pytest.raises(UnknownRole):
        await core.conversations.update(conversation, role_id=pirate.id)


async def test_a_user_may_have_only_so_many_roles(core: Core) -> None:
    book = RoleBook(core.store, max_per_user=2)
    await book.create(ALICE, custom_role("One", "", "1"))
    await book.create(ALICE, custom_role("Two", "", "2"))

    with pytest.raises(RoleLimit):
        await book.create(ALICE, custom_role("Three", "", "3"))

    assert [r.name("en") for r in await book.own(ALICE)] == ["One", "Two"]
    await book.create(BOB, custom_role("Bob's", "", "b"))


async def test_an_edited_role_answers_with_its_new_prompt(core: Core) -> None:
    role = await core.roles.create(ALICE, custom_role("Poet", "", "Answer in verse.", temperature=0.5))
    conversation = await core.conversations.create(ALICE, role_id=role.id)

    await core.roles.update(ALICE, role.id, {"prompt": "Answer in haiku.", "model": "other-model"})
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "spring [[whoami]]", None, "en"))

    reply = (await core.history(ALICE, conversation.id))[-1]
    sent = parse_whoami(reply.content)
    assert (sent["system"], sent["model"], sent["temperature"]) == ("Answer in haiku.", "other-model", "0.5")
    assert (reply.role_id, reply.role_name, reply.model) == (role.id, "Poet", "other-model")


async def test_a_conversation_whose_role_was_deleted_answers_as_the_default_role(core: Core) -> None:
    role = await core.roles.create(ALICE, custom_role("Pirate", "", "Answer as a pirate."))
    conversation = await core.conversations.create(ALICE, role_id=role.id)
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "ahoy [[whoami]]", None, "en"))

    await core.roles.delete(ALICE, role.id)
    view = await core.conversations.view(await core.conversations.owned(conversation.id, ALICE), limit=20)
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "there? [[whoami]]", None, "en"))

    assert view.role_missing and view.role.id == "assistant"
    first, second = [parse_whoami(m.content) for m in (await core.history(ALICE, conversation.id))[2::2]]
    assert first["system"] == "Answer as a pirate."
    assert second["system"] == BUILTIN_ROLES["assistant"].system_prompt
    assert (await core.history(ALICE, conversation.id))[2].role_name == "Pirate", "an old reply keeps who wrote it"
