"""Pins, the archive, folders and batches (webapp/core/shelves.py, storage/organization.py) in-process,
on a real redis-server: the sidebar's groups, what each list holds, the limits, and that a turn stays
as many Redis commands as before."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.wiring import Core
from webapp.base.errors import (
    BadFolderName,
    FolderNameTaken,
    FolderNotFound,
    InvalidId,
    TooManyFolders,
    TooManyPins,
)
from webapp.core import shelves as shelves_module
from webapp.core.listing import search_filters
from webapp.core.shelves import ARCHIVED, FOLDER, PINNED

ALICE, BOB = "alice", "bob"


async def test_pinned_conversations_leave_the_list_for_their_group_newest_pin_first(core: Core) -> None:
    a, b, c = [await core.conversations.create(ALICE, title=name) for name in ("a", "b", "c")]
    shelves = core.conversations.shelves

    await shelves.keep(ALICE, [a.id], PINNED, True)
    await shelves.keep(ALICE, [c.id], PINNED, True)

    sidebar = await core.conversations.browse(ALICE, grouped=True)
    assert [x.id for x in sidebar.pinned] == [c.id, a.id]
    assert [x.id for x in sidebar.items] == [b.id]
    assert (await core.store.get_conversation(ALICE, a.id)).pinned  # type: ignore[union-attr]
    # the API's list holds them all, newest activity first
    assert [x.id for x in (await core.conversations.browse(ALICE)).items] == [c.id, b.id, a.id]

    await shelves.keep(ALICE, [a.id], PINNED, False)
    sidebar = await core.conversations.browse(ALICE, grouped=True)
    assert [x.id for x in sidebar.pinned] == [c.id]
    assert not (await core.store.get_conversation(ALICE, a.id)).pinned  # type: ignore[union-attr]


async def test_the_pins_stop_at_their_limit(core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shelves_module, "MAX_PINS", 2)
    made = [await core.conversations.create(ALICE) for _ in range(3)]
    shelves = core.conversations.shelves
    await shelves.keep(ALICE, [made[0].id, made[1].id], PINNED, True)
    await shelves.keep(ALICE, [made[1].id], PINNED, True)  # again: no second pin
    with pytest.raises(TooManyPins):
        await shelves.keep(ALICE, [made[2].id], PINNED, True)
    assert len((await core.conversations.browse(ALICE, grouped=True)).pinned) == 2


async def test_archived_conversations_leave_every_list_but_the_archive_and_live_as_long_as_the_index(
        core: Core) -> None:
    kept = await core.conversations.create(ALICE, title="kept")
    old = await core.conversations.create(ALICE, title="old kumquats")
    await core.finish(ALICE, await core.writer.start_turn(old.id, ALICE, "about kumquats", None, "en"))
    shelves = core.conversations.shelves
    await shelves.keep(ALICE, [old.id], PINNED, True)

    await shelves.keep(ALICE, [old.id], ARCHIVED, True)

    assert [x.id for x in (await core.conversations.browse(ALICE, grouped=True)).items] == [kept.id]
    assert (await core.conversations.browse(ALICE, grouped=True)).pinned == []  # archiving unpins
    assert [x.id for x in (await core.conversations.browse(ALICE)).items] == [kept.id]
    assert [x.id for x in (await core.conversations.browse(ALICE, archived=True)).items] == [old.id]
    assert (await core.conversations.browse(ALICE, query="kumquats")).items == []
    assert [x.id for x in (await core.conversations.browse(ALICE, query="kumquats in:archived")).items] == [old.id]
    assert (await core.conversations.latest(ALICE)).id == kept.id  # type: ignore[union-attr]
    k = core.store.keys
    ttl = core.store.index_ttl
    for key in (k.meta(ALICE, old.id), k.messages(ALICE, old.id)):
        assert await core.store.redis.ttl(key) > ttl - 60  # the index's TTL, not the conversation's


async def test_sending_in_an_archived_conversation_brings_it_back(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)
    await core.conversations.shelves.keep(ALICE, [conversation.id], ARCHIVED, True)

    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "hello again", None, "en"))

    assert (await core.conversations.browse(ALICE, archived=True)).items == []
    assert [x.id for x in (await core.conversations.browse(ALICE, grouped=True)).items] == [conversation.id]
    assert not (await core.store.get_conversation(ALICE, conversation.id)).archived  # type: ignore[union-attr]
    assert await core.store.redis.ttl(core.store.keys.messages(ALICE, conversation.id)) <= core.store.conversation_ttl


async def test_a_turn_costs_the_same_redis_commands_with_pins_archive_and_folders(core: Core) -> None:
    """The organisation adds no command to a turn (only sending in an archived one adds two)."""
    plain = await core.conversations.create(ALICE)
    organised = await core.conversations.create(ALICE)
    shelves = core.conversations.shelves
    folder = await shelves.create_folder(ALICE, "Work")
    await shelves.keep(ALICE, [organised.id], PINNED, True)
    await shelves.keep(ALICE, [organised.id], FOLDER, folder.id)

    async def commands_of_a_turn(sid: str) -> dict[str, int]:
        before = await core.store.redis.info("commandstats")
        await core.finish(ALICE, await core.writer.start_turn(sid, ALICE, "count me", None, "en"))
        await core.search.flush()
        after = await core.store.redis.info("commandstats")
        return {name: stats["calls"] - before.get(name, {"calls": 0})["calls"] for name, stats in after.items()
                if stats["calls"] != before.get(name, {"calls": 0})["calls"] and name != "cmdstat_info"}

    for sid in (plain.id, organised.id, plain.id, organised.id):  # (first exchanges: titles, scripts loaded)
        await commands_of_a_turn(sid)
    await asyncio.sleep(0.3)
    organised_turn, plain_turn = await commands_of_a_turn(organised.id), await commands_of_a_turn(plain.id)
    differ = {name: organised_turn.get(name, 0) - plain_turn.get(name, 0) for name in {*organised_turn, *plain_turn}}
    differ = {name: n for name, n in differ.items() if n}
    # (how many flushes a reply's stream takes, an XADD and its EXPIRE each, depends on timing alone)
    assert set(differ) <= {"cmdstat_xadd", "cmdstat_expire"}, differ
    assert differ.get("cmdstat_xadd", 0) == differ.get("cmdstat_expire", 0), differ
    assert sum(organised_turn.values()) > 20


async def test_folders_hold_their_conversations_and_deleting_one_keeps_them(core: Core) -> None:
    a, b, c = [await core.conversations.create(ALICE, title=name) for name in ("a", "b", "c")]
    shelves = core.conversations.shelves
    work = await shelves.create_folder(ALICE, "  Work   things ")
    assert work.name == "Work things"
    home = await shelves.create_folder(ALICE, "Home")
    await shelves.keep(ALICE, [a.id, b.id], FOLDER, work.id)

    sidebar = await core.conversations.browse(ALICE, grouped=True)
    assert [x.id for x in sidebar.items] == [c.id]
    assert [(f.name, f.count, [x.id for x in f.items]) for f in sidebar.folders] == [
        ("Home", 0, []), ("Work things", 2, [b.id, a.id])]
    assert [x.id for x in (await core.conversations.browse(ALICE, folder=work.id)).items] == [b.id, a.id]
    assert [x.id for x in (await core.conversations.browse(ALICE, query='folder:"work things"')).items] == [b.id, a.id]

    await shelves.keep(ALICE, [a.id], FOLDER, home.id)  # in one folder at most
    assert [x.id for x in (await core.conversations.browse(ALICE, folder=work.id)).items] == [b.id]

    await shelves.delete_folder(ALICE, work.id)
    sidebar = await core.conversations.browse(ALICE, grouped=True)
    assert [x.id for x in sidebar.items] == [c.id, b.id]
    assert (await core.store.get_conversation(ALICE, b.id)).folder == ""  # type: ignore[union-attr]
    with pytest.raises(FolderNotFound):
        await shelves.keep(ALICE, [b.id], FOLDER, work.id)


async def test_folder_names_are_checked_and_unique_and_their_number_limited(
        core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    shelves = core.conversations.shelves
    for bad in ("", "   ", "x" * 41, "\ud800"):
        with pytest.raises(Exception) as raised:
            await shelves.create_folder(ALICE, bad)
        assert raised.type.__name__ in ("BadFolderName", "UndecodableText")
    first = await shelves.create_folder(ALICE, "<b>Work</b>")
    assert first.name == "<b>Work</b>"  # kept as typed; templates escape it
    with pytest.raises(FolderNameTaken):
        await shelves.create_folder(ALICE, "<B>WORK</B>")
    await shelves.create_folder(BOB, "<b>Work</b>")  # another user's names are theirs
    monkeypatch.setattr(shelves_module, "MAX_FOLDERS", 2)
    await shelves.create_folder(ALICE, "two")
    with pytest.raises(TooManyFolders):
        await shelves.create_folder(ALICE, "three")
    renamed = await shelves.rename_folder(ALICE, first.id, "Renamed")
    assert [f.name for f in await shelves.folders(ALICE)] == ["Renamed", "two"]
    with pytest.raises(FolderNotFound):  # another's folder is no folder of hers
        await shelves.rename_folder(BOB, renamed.id, "mine")
    with pytest.raises(InvalidId):
        await shelves.delete_folder(ALICE, "../x")
    with pytest.raises(BadFolderName):
        await shelves.rename_folder(ALICE, first.id, "")


async def test_someone_elses_conversation_cannot_be_pinned_archived_or_filed(core: Core) -> None:
    theirs = await core.conversations.create(BOB)
    mine = await core.conversations.create(ALICE)
    folder = await core.conversations.shelves.create_folder(ALICE, "f")
    for what, value in ((PINNED, True), (ARCHIVED, True), (FOLDER, folder.id)):
        assert await core.conversations.shelves.keep(ALICE, [theirs.id], what, value) == []
        # in a batch it is skipped, the caller's own done
        assert await core.conversations.shelves.keep(ALICE, [theirs.id, mine.id], what, value) == [mine.id]
    assert not (await core.store.get_conversation(BOB, theirs.id)).pinned  # type: ignore[union-attr]
    assert await core.store.redis.exists(*core.store.keys.shelves(BOB)) == 0


async def test_undo_of_a_delete_puts_a_pinned_conversation_back_in_its_group(core: Core) -> None:
    conversation = await core.conversations.create(ALICE)
    await core.conversations.shelves.keep(ALICE, [conversation.id], PINNED, True)
    await core.conversations.delete_undoably(conversation)
    assert (await core.conversations.browse(ALICE, grouped=True)).pinned == []
    await core.conversations.undo_delete(ALICE, conversation.id)
    assert [x.id for x in (await core.conversations.browse(ALICE, grouped=True)).pinned] == [conversation.id]


async def test_the_sidebar_pages_skip_grouped_conversations_without_repeats_or_gaps(core: Core) -> None:
    made = [await core.conversations.create(ALICE, title=f"chat {n}") for n in range(12)]
    shelves = core.conversations.shelves
    folder = await shelves.create_folder(ALICE, "f")
    await shelves.keep(ALICE, [made[1].id, made[5].id], PINNED, True)
    await shelves.keep(ALICE, [made[2].id], ARCHIVED, True)
    await shelves.keep(ALICE, [made[7].id, made[8].id], FOLDER, folder.id)
    seen, cursor = [], None
    while True:
        page = await core.conversations.browse(ALICE, cursor=cursor, limit=3, grouped=True)
        seen += [c.id for c in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    expected = [c.id for n, c in enumerate(made) if n not in (1, 5, 2, 7, 8)]
    assert seen == list(reversed(expected))


def test_search_filters_are_read_from_the_query() -> None:
    text, filters = search_filters('kumquat in:archived folder:"my work" is:pinned')
    assert (text, filters.archived, filters.folder, filters.pinned) == ("kumquat", True, "my work", True)
    text, filters = search_filters("pinned notes")  # a bare word is searched for, not read as a filter
    assert (text, filters.pinned) == ("pinned notes", False)
    text, filters = search_filters("folder:Home tea")
    assert (text, filters.folder) == ("tea", "Home")


async def test_an_anonymous_history_claimed_at_sign_in_keeps_its_pins_archive_and_folders(core: Core) -> None:
    pinned, archived, filed = [await core.conversations.create(ALICE, title=t) for t in ("p", "a", "f")]
    shelves = core.conversations.shelves
    folder = await shelves.create_folder(ALICE, "Kept")
    await shelves.keep(ALICE, [pinned.id], PINNED, True)
    await shelves.keep(ALICE, [archived.id], ARCHIVED, True)
    await shelves.keep(ALICE, [filed.id], FOLDER, folder.id)

    await core.store.move_conversations(ALICE, BOB)

    sidebar = await core.conversations.browse(BOB, grouped=True)
    assert [c.id for c in sidebar.pinned] == [pinned.id]
    assert [(f.name, [c.id for c in f.items]) for f in sidebar.folders] == [("Kept", [filed.id])]
    assert [c.id for c in (await core.conversations.browse(BOB, archived=True)).items] == [archived.id]
    assert await core.store.redis.exists(*core.store.keys.shelves(ALICE)[:2], core.store.keys.filed(ALICE)) == 0


async def test_an_import_makes_each_folder_once_whatever_the_case_and_refuses_too_many_before_writing(
        core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    from webapp.core.export_format import ExportFile
    from webapp.core.portability import Portability

    portability = Portability(core.store, core.roles, core.search, max_conversations=0, max_messages=0,
                              models=core.provider.models)

    def file(*folders: str) -> ExportFile:
        conversations = [{"title": f"c{n}", "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z",
                          "messages": [], "folder": name} for n, name in enumerate(folders)]
        return ExportFile.model_validate({"format": "chat-export", "version": 1, "conversations": conversations})

    await core.conversations.shelves.create_folder(ALICE, "Home")
    await portability.import_(ALICE, file("work", " Work ", "HOME"))
    assert sorted(f.name for f in await core.conversations.shelves.folders(ALICE)) == ["Home", "work"]
    monkeypatch.setattr(shelves_module, "MAX_FOLDERS", 3)
    import webapp.core.portability as portability_module
    monkeypatch.setattr(portability_module, "MAX_FOLDERS", 3)
    before = await core.store.count_conversations(ALICE)
    with pytest.raises(Exception) as refused:
        await portability.import_(ALICE, file("a", "b"))
    assert refused.type.__name__ == "ImportTooBig"
    assert await core.store.count_conversations(ALICE) == before


async def test_pages_of_a_list_with_equal_activity_times_and_many_skipped_neither_repeat_nor_skip(core: Core) -> None:
    from webapp.base.models import Conversation, new_id

    made = []
    for n in range(40):  # four activity times, ten conversations each
        conversation = Conversation(id=new_id(), user_id=ALICE, title=f"t{n}", preview="", role="assistant",
                                    message_count=0, created=1000.0, updated=1000.0 + n // 10)
        await core.store.import_conversation(conversation, [], terms=[])
        made.append(conversation.id)
    shelves = core.conversations.shelves
    folder = await shelves.create_folder(ALICE, "f")
    await shelves.keep(ALICE, made[0:25:3], PINNED, True)
    await shelves.keep(ALICE, made[1:40:4], FOLDER, folder.id)
    await shelves.keep(ALICE, made[2:40:5], ARCHIVED, True)
    hidden = {made[i] for i in range(40) if (i % 3 == 0 and i < 25) or i % 4 == 1 or i % 5 == 2}
    for grouped, archived, expected in ((True, False, set(made) - hidden),
                                        (False, False, set(made) - {made[i] for i in range(2, 40, 5)}),
                                        (False, True, {made[i] for i in range(2, 40, 5)})):
        seen, cursor = [], None
        while True:
            page = await core.conversations.browse(ALICE, cursor=cursor, limit=3, grouped=grouped, archived=archived)
            seen += [c.id for c in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert len(seen) == len(set(seen)) and set(seen) == expected, (grouped, archived)


async def test_a_batch_answers_the_ids_it_changed_not_the_first_ones_sent(core: Core) -> None:
    """The batch's answer is what its Undo takes: another's and missing ids are skipped wherever they stand."""
    theirs = await core.conversations.create(BOB)
    mine = await core.conversations.create(ALICE)
    missing = "9e9e9e9e-1111-4a3b-9c8d-777788889999"
    changed = await core.conversations.shelves.keep(ALICE, [theirs.id, missing, mine.id, mine.id], ARCHIVED, True)
    assert changed == [mine.id]


async def test_a_folder_filter_naming_no_folder_finds_nothing(core: Core) -> None:
    await core.conversations.create(ALICE, title="kumquat notes")
    await core.search.flush()
    assert (await core.conversations.browse(ALICE, query="kumquat")).items  # (found without the filter)
    assert (await core.conversations.browse(ALICE, query="folder:nosuch kumquat")).items == []
    assert (await core.conversations.browse(ALICE, query="folder:nosuch")).items == []


async def test_folder_names_lose_control_and_invisible_characters_and_are_normalized(core: Core) -> None:
    shelves = core.conversations.shelves
    made = await shelves.create_folder(ALICE, "Wo\u200brk\x1b\u202e")
    assert made.name == "Work"
    with pytest.raises(FolderNameTaken):  # "Work" with a zero-width space is no other folder
        await shelves.create_folder(ALICE, "Work\u200b")
    composed = await shelves.create_folder(ALICE, "Cafe\u0301")  # NFD: the same name as NFC "Café"
    assert composed.name == "Caf\u00e9"
    with pytest.raises(FolderNameTaken):
        await shelves.create_folder(ALICE, "Caf\u00e9")
    with pytest.raises(BadFolderName):
        await shelves.create_folder(ALICE, "\u200b\ufeff\x00")


async def test_archived_conversations_keys_live_with_the_users_data_after_undo_and_each_day(core: Core) -> None:
    """Archived: the index TTL on every key of the conversation, put back by an undo (not the conversation
    TTL), and renewed once a day when the sidebar is listed, as the index is."""
    store, k = core.store, core.store.keys
    conversation = await core.conversations.create(ALICE, title="old news")
    files = k.files(ALICE, conversation.id)  # (its attachments' hash: issue 35)
    await store.redis.hset(files, "f_1", "{}")
    await store.redis.expire(files, store.conversation_ttl)
    await core.conversations.shelves.keep(ALICE, [conversation.id], ARCHIVED, True)
    assert await store.redis.ttl(files) > store.conversation_ttl  # the files live as long as the rest
    archived = await store.get_conversation(ALICE, conversation.id)
    assert archived is not None and archived.archived
    await core.conversations.delete_undoably(archived)
    await core.conversations.undo_delete(ALICE, conversation.id)
    messages = k.messages(ALICE, conversation.id)
    assert await store.redis.ttl(messages) > store.conversation_ttl  # the index TTL, not 7 days
    await store.redis.expire(messages, 1000)  # weeks later
    await store.redis.delete(k.archive_renewed(ALICE))  # a day on
    await core.conversations.browse(ALICE, grouped=True)  # the sidebar
    assert await store.redis.ttl(messages) > store.index_ttl - 60
    await store.redis.expire(messages, 1000)
    await core.conversations.browse(ALICE, grouped=True)  # the same day: nothing more
    assert await store.redis.ttl(messages) <= 1000


async def test_a_batch_export_holds_each_conversation_once(core: Core) -> None:
    conversation = await core.conversations.create(ALICE, title="once")
    exported = await core.portability.everything(ALICE, [conversation.id] * 5)
    assert [c["id"] for c in exported["conversations"]] == [conversation.id]
