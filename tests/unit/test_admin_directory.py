"""The admin's core in-process on a real redis-server: the user directory (an index: pages newest first,
a name prefix search), each user's figures, admins only, disable, and a delete that leaves no key."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest

from tests.fake_upstream import ThreadedFakeUpstream
from tests.unit.wiring import Core, core_settings, start_core
from webapp.base.errors import AccountDisabled, AdminOnly, InvalidInput, UserNotFound
from webapp.base.models import Usage
from webapp.core.roles import custom_role
from webapp.storage.spending import utc_day

PASSWORD = "correct horse battery"


@pytest.fixture
def accounts_core(event_loop: asyncio.AbstractEventLoop, unit_redis: Any,
                  upstream: ThreadedFakeUpstream) -> Iterator[Core]:
    settings = core_settings(unit_redis.url, upstream.base_url, auth="accounts", admin_users="Chief")
    built = event_loop.run_until_complete(start_core(settings))
    try:
        yield built
    finally:
        event_loop.run_until_complete(built.aclose())


async def test_the_directory_pages_newest_first_and_finds_names_by_prefix(accounts_core: Core) -> None:
    core = accounts_core
    uids = [await core.accounts.create_user(name, PASSWORD) for name in ("chief", "ann_1", "ann_2", "bob")]
    async with core.store.redis.pipeline(transaction=True) as pipe:
        core.store._count_spending(pipe, uids[1], utc_day(), "m", Usage(100, 20))
        await pipe.execute()
    page = await core.admin.users()
    assert [row.username for row in page.rows] == ["bob", "ann_2", "ann_1", "chief"] and page.total == 4
    found = await core.admin.users(query="ANN")
    assert sorted(row.username for row in found.rows) == ["ann_1", "ann_2"] and found.total == 2
    ann = next(row for row in found.rows if row.username == "ann_1")
    assert ann.tokens == 120 and not ann.disabled and not ann.admin
    assert (await core.admin.users(page=2)).rows == []
    assert await core.admin.admin_name(uids[0]) == "chief"  # ADMIN_USERS is case-blind
    with pytest.raises(AdminOnly):
        await core.admin.admin_name(uids[1])
    with pytest.raises(InvalidInput):  # an admin does not lock themselves out
        await core.admin.set_disabled("chief", uids[0], True)


async def test_the_admin_sees_each_users_storage_against_the_quota(accounts_core: Core) -> None:
    """Issue 33's per-user storage quota, seen by an admin: unmeasured users show none and are measured
    in the background, so the next look shows what Redis holds for them."""
    core = accounts_core
    uid = await core.accounts.create_user("hoarder", PASSWORD)
    for _ in range(2):
        await core.conversations.create(uid, title="kept <b>")
    core.quota.measuring.clear()
    first = next(row for row in (await core.admin.users()).rows if row.username == "hoarder")
    if first.storage is None:  # not measured recently: measured now, off the request's path
        await asyncio.gather(*core.quota.measuring.values())
    again = next(row for row in (await core.admin.users()).rows if row.username == "hoarder")
    assert again.storage == await core.store.measure_usage(uid) and 0 < again.storage < core.quota.quota_bytes


async def test_a_disabled_user_cannot_sign_in_and_a_deleted_one_leaves_nothing(accounts_core: Core) -> None:
    core = accounts_core
    uid = await core.accounts.create_user("carol", PASSWORD)
    await core.roles.create(uid, custom_role("Critic", "", "Point out one weakness."))
    conversation = await core.conversations.create(uid)
    await core.finish(uid, await core.writer.start_turn(conversation.id, uid, "hello there", None, "en"))
    folder = await core.conversations.shelves.create_folder(uid, "Kept")  # (issue 37's keys go too)
    await core.conversations.update(conversation, pinned=True, folder_id=folder.id)
    archived = await core.conversations.create(uid)
    await core.conversations.update(archived, archived=True)
    await core.admin.set_disabled("chief", uid, True)
    with pytest.raises(AccountDisabled):
        await core.accounts.sign_in("carol", PASSWORD, ip="", anonymous_uid=None)
    await core.admin.set_disabled("chief", uid, False)
    await core.accounts.sign_in("carol", PASSWORD, ip="", anonymous_uid=None)
    with pytest.raises(InvalidInput):
        await core.admin.delete_user("chief", uid, confirm="someone")
    with pytest.raises(UserNotFound):
        await core.admin.delete_user("chief", "a_" + "f" * 24, confirm="x")
    await core.search.flush()
    await core.admin.delete_user("chief", uid, confirm="CAROL")
    left = [key for key in await core.store.redis.keys(f"*{{{uid}}}*")
            if not 0 <= await core.store.redis.ttl(key) <= 86400]
    assert left == []
    assert await core.store.account_by_name("carol") is None
    assert [entry["what"] for entry in await core.admin.audit()] == ["delete", "enable", "disable"]


async def test_accounts_made_before_the_directory_are_listed_once_at_start(accounts_core: Core) -> None:
    """An upgrade: accounts whose names exist but the directory does not know (made by a version without
    it) are listed by fill_directory, once (a marker), and a fill run again changes nothing."""
    core = accounts_core
    store, k = core.store, core.store.keys
    uids = [await core.accounts.create_user(name, PASSWORD) for name in ("old_ann", "Old_Bob")]
    await store.redis.delete(k.users, k.user_names, k.users_filled)  # as a version before the directory left them
    assert (await core.admin.users()).total == 0
    assert await store.fill_directory() == 2
    page = await core.admin.users()
    assert sorted(row.uid for row in page.rows) == sorted(uids) and page.total == 2
    assert [row.username for row in (await core.admin.users(query="old_b")).rows] == ["Old_Bob"]
    assert await store.fill_directory() == 0  # done once
    await store.redis.delete(k.users_filled)
    assert await store.fill_directory() == 2 and (await core.admin.users()).total == 2  # again: the same


async def test_a_disable_landing_while_a_password_is_checked_leaves_no_sign_in(accounts_core: Core) -> None:
    """The race: an admin disables the user (flag, then every sign-in ended) after the sign-in read the
    account and before it made its own sign-in. The flag is read again once that exists: refused, ended."""
    core = accounts_core
    uid = await core.accounts.create_user("racer", PASSWORD)
    made = core.accounts._signed_in

    async def disabled_meanwhile(user: str, anonymous: str | None) -> str:
        await core.admin.set_disabled("chief", user, True)  # (as another request does, during the hash check)
        return await made(user, anonymous)

    core.accounts._signed_in = disabled_meanwhile  # type: ignore[method-assign]
    with pytest.raises(AccountDisabled):
        await core.accounts.sign_in("racer", PASSWORD, ip="", anonymous_uid=None)
    assert await core.store.redis.scard(core.store.keys.signins(uid)) == 0


async def test_an_admin_name_is_not_for_sign_up_and_an_admins_account_is_not_deleted(accounts_core: Core) -> None:
    from webapp.base.errors import AdminProtected, NameKeptForAdmin

    core = accounts_core
    with pytest.raises(NameKeptForAdmin):
        await core.accounts.sign_up("CHIEF", PASSWORD, ip="", anonymous_uid=None)
    await core.accounts.create_user("chief", PASSWORD)  # the operator's way (python -m webapp create-user)
    second = await core.accounts.create_user("deputy", PASSWORD)
    core.admin.names = frozenset({"chief", "deputy"})
    with pytest.raises(AdminProtected):
        await core.admin.delete_user("chief", second, confirm="deputy")
    assert await core.store.account_by_name("deputy") is not None
