"""Sliding-window limits (webapp/core/limits.py) on a real redis-server: the counts the store keeps for
chosen moments, and what the core decides from them."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.unit.wiring import Core
from webapp.base.errors import ImportsLimited, ImportTooBig, RateLimited, StorageFull
from webapp.core.conversations import Conversations
from webapp.core.export_format import ExportFile
from webapp.core.limits import Limit, refuse_if_over
from webapp.core.portability import Portability
from webapp.core.quota import StorageQuota
from webapp.storage.base import split_count

PER_MINUTE = Limit("turns-user", 10, 60)
WINDOW_START = 29_000_000 * 60  # a minute's first second (a moment of 2025), so the test chooses the timing


async def hit(core: Core, limit: Limit, key: str, now: float) -> bool:
    """One hit at `now`, as Limits.hit counts it (the same store call, the same decision): allowed?"""
    counts = await core.store.count_hits([limit.counter(key, now)])
    try:
        refuse_if_over([(limit, key)], counts, now)
    except RateLimited:
        return False
    return True


async def test_a_burst_across_a_window_boundary_is_not_twice_the_limit(core: Core) -> None:
    """The probe of issue 33: 10 a minute, 20 started in 4 s across a minute boundary. Now the ten at
    the end of one minute leave room for one at the start of the next (the rounding down), and the
    allowance comes back as they fade: about half of it half a minute later."""
    end_of_minute = WINDOW_START + 58
    assert [await hit(core, PER_MINUTE, "u1", end_of_minute + n * 0.1) for n in range(10)] == [True] * 10
    after = [await hit(core, PER_MINUTE, "u1", WINDOW_START + 60 + 2 + n * 0.1) for n in range(10)]
    assert after == [True] + [False] * 9, after

    fresh = "u2"
    for n in range(10):
        assert await hit(core, PER_MINUTE, fresh, end_of_minute + n * 0.1)
    half_way = WINDOW_START + 60 + 31  # 29/60 of the old minute's ten still inside: 4.8, counted as 4
    allowed = [await hit(core, PER_MINUTE, fresh, half_way + n * 0.01) for n in range(10)]
    assert allowed == [True] * 6 + [False] * 4, allowed


async def test_a_steady_caller_gets_the_limit_every_window(core: Core) -> None:
    """A hit every 6 s at 10 a minute is never refused, window after window."""
    for n in range(40):
        assert await hit(core, PER_MINUTE, "steady", WINDOW_START + 0.5 + n * 6.01), n


@pytest.mark.parametrize("start", [5.0, 30.0, 58.0])
async def test_retry_after_is_when_the_next_hit_fits(core: Core, start: float) -> None:
    """A refused caller told Retry-After: N is refused a second before N and allowed at N (a refused
    hit counts, as a turn's does: the wait includes it)."""
    key = f"retry-{start}"
    now = WINDOW_START + start
    while await hit(core, PER_MINUTE, key, now):
        now += 0.01
    counts = await core.store.count_hits([PER_MINUTE.counter(key, now)])
    with pytest.raises(RateLimited) as refused:
        refuse_if_over([(PER_MINUTE, key)], counts, now)
    wait = refused.value.retry_after
    assert 1 <= wait <= 120
    assert not await hit(core, PER_MINUTE, key, now + wait - 1.5)
    await core.store.uncount_hits([PER_MINUTE.counter(key, now + wait - 1.5)])  # (a look, not a hit)
    assert await hit(core, PER_MINUTE, key, now + wait)


# the doors that write besides a turn ----------------------------------------------------------------------


async def test_conversations_made_per_minute_are_counted_in_the_script_that_makes_them(core: Core) -> None:
    """CONVERSATIONS_PER_MINUTE: the fourth of three a minute is refused (Retry-After) and made nowhere;
    a refused one does not count; another user is not affected."""
    limited = Conversations(core.store, core.writer, core.reader, max_per_user=100, search=core.search,
                            per_minute=3)
    made = [await limited.create("maker") for _ in range(3)]
    for _ in range(3):
        with pytest.raises(RateLimited) as refused:
            await limited.create("maker")
    assert 1 <= refused.value.retry_after <= 61
    assert len((await limited.browse("maker")).items) == 3 == len(made)
    assert (await limited.create("someone-else")).user_id == "someone-else"
    packed = await core.store.count_hits([limited.made_per_minute.counter("maker", time.time())])
    assert split_count(packed[0])[0] == 4  # the three made, and this look: the refused ones gave theirs back


def export_file(messages: int = 1, chars: int = 10) -> ExportFile:
    return ExportFile.model_validate({"format": "chat-export", "version": 1, "conversations": [{
        "title": "imported", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "messages": [{"role": "user" if n % 2 == 0 else "assistant", "content": "x" * chars}
                     for n in range(messages)]}]})


async def test_imports_are_limited_per_hour_by_count_and_bytes_and_message_length(core: Core) -> None:
    limited = Portability(core.store, core.roles, core.search, max_conversations=1000, max_messages=100,
                          models=core.provider.models, limits=core.limits, imports_per_hour=3,
                          import_bytes_per_hour=10_000, max_message_chars=500)
    with pytest.raises(ImportTooBig) as too_long:
        await limited.import_("importer", export_file(chars=501), size=700)
    assert too_long.value.params == {"what": "characters per message", "limit": 500}
    for _ in range(3):
        await limited.import_("importer", export_file(), size=100)
    with pytest.raises(ImportsLimited):  # the fourth this hour
        await limited.import_("importer", export_file(), size=100)
    assert len((await core.conversations.browse("importer")).items) == 3

    with pytest.raises(ImportsLimited) as big:  # 12 KB in one go, of 10 KB an hour (~10,000 bytes)
        await limited.import_("heavy", export_file(), size=12_000)
    assert big.value.retry_after >= 3600  # bigger than an hour's allowance: nothing fades enough sooner
    await limited.import_("heavy", export_file(), size=6_000)
    with pytest.raises(ImportsLimited):
        await limited.import_("heavy", export_file(), size=6_000)  # 12 KB within the hour
    assert len((await core.conversations.browse("heavy")).items) == 1


async def test_the_storage_quota_refuses_imports_and_new_conversations_when_full(core: Core) -> None:
    """STORAGE_QUOTA_BYTES: measured exactly (MEMORY USAGE); an import that would not fit and a new
    conversation of a full user are refused (413, with the figures), and deleting makes room again."""
    user = "hoarder"
    big_file = export_file(messages=40, chars=5000)
    await Portability(core.store, core.roles, core.search, max_conversations=100, max_messages=100,
                      models=core.provider.models).import_(user, big_file, size=200_000)
    used = await core.store.measure_usage(user)
    assert used > 200_000  # 40 messages of 5,000 characters, as Redis holds them
    quota = StorageQuota(core.store, used + 100_000)
    importing = Portability(core.store, core.roles, core.search, max_conversations=100, max_messages=100,
                            models=core.provider.models, quota=quota)
    with pytest.raises(StorageFull) as full:
        await importing.import_(user, export_file(), size=150_000)
    assert full.value.status == 413 and full.value.params["quota"] == round((used + 100_000) / 1e6, 1)
    assert len((await core.conversations.browse(user)).items) == 1  # nothing written
    await importing.import_(user, export_file(), size=1_000)

    tight = StorageQuota(core.store, await core.store.measure_usage(user))  # full, as measured now
    making = Conversations(core.store, core.writer, core.reader, max_per_user=100, search=core.search, quota=tight)
    with pytest.raises(StorageFull):
        await making.create(user)
    assert len((await making.browse(user)).items) == 2
    biggest = next(c for c in (await making.browse(user)).items if c.message_count == 40)
    await making.delete(biggest)
    await making.create(user)  # room made: no figure since the delete, so made, and measured in the background
    assert len((await making.browse(user)).items) == 2
    await asyncio.gather(*tight.measuring.values())
    assert 0 < (await core.store.cached_usage(user) or 0) < tight.quota_bytes
    await making.create("newcomer")  # their first: all they have is a welcome message, nothing to measure
    assert not tight.measuring and await core.store.cached_usage("newcomer") is None
    await making.create("newcomer")  # no figure yet: made, and measured in the background
    for _ in range(50):
        if await core.store.cached_usage("newcomer") is not None:
            break
        await asyncio.sleep(0.02)
    assert 0 < (await core.store.cached_usage("newcomer") or 0) < 10_000
