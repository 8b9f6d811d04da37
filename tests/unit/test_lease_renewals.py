"""Lease renewals that race a turn's end (issue 34 G): a renewal asked for just before the writer saved
its turn must not read as a lapsed lease, nor stop anything. On a real redis-server."""

from __future__ import annotations

import logging

import pytest

from tests.unit.wiring import Core
from webapp.core.turns.leases import LeaseKeeper
from webapp.storage.keys import TurnRef

ALICE = "alice"


async def test_a_renewal_that_arrives_after_its_turn_was_saved_finds_it_ended_not_lost(
        core: Core, caplog: pytest.LogCaptureFixture) -> None:
    conversation = await core.conversations.create(ALICE)
    started = await core.writer.start_turn(conversation.id, ALICE, "quick", None, "en")
    held = [(TurnRef(ALICE, started.id), conversation.id)]  # what a tick read before the save
    await core.finish(ALICE, started)
    after = await core.writer.start_turn(conversation.id, ALICE, "and the next", None, "en")  # holds the lock now
    lost: list[str] = []
    keeper = LeaseKeeper(core.store, core.writer.recovery, lambda: held, lost.append, lambda _: None)

    await keeper.tick()

    assert lost == [] and [r for r in caplog.records if "lease" in r.getMessage()] == []
    assert [lease.name for lease in await core.store.renew_leases(held, [])] == ["ENDED"]
    assert await core.store.lock_holder(ALICE, conversation.id) == after.id  # the next turn's lock untouched
    await core.finish(ALICE, after)


async def test_a_lease_another_host_recovers_is_still_lost(core: Core, caplog: pytest.LogCaptureFixture) -> None:
    conversation = await core.conversations.create(ALICE)
    started = await core.writer.start_turn(conversation.id, ALICE, "slow [[stall]]", None, "en")
    ref = TurnRef(ALICE, started.id)
    await core.store.redis.delete(core.store.keys.lock(ALICE, conversation.id))  # lapsed
    assert await core.store.claim_recovery(ref, conversation.id)  # another host begins to save it
    lost: list[str] = []
    keeper = LeaseKeeper(core.store, core.writer.recovery, lambda: [(ref, conversation.id)], lost.append,
                         lambda _: None)

    with caplog.at_level(logging.WARNING, logger="webapp.turns"):
        await keeper.tick()

    assert lost == [started.id]
    assert any("lease lapsed" in r.getMessage() for r in caplog.records)
    await core.writer.cancel(await core.reader.owned_turn(started.id, ALICE))
