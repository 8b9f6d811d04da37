"""Each worker renews the leases of the turns it generates, and sweeps for turns whose writer died.

The lock a turn holds on its conversation lasts TURN_LEASE_SECONDS unless renewed. Every
second (or third of that, if shorter), one pipeline renews the lock of every turn generating on this worker and
lists it, with its new deadline, in the set of running turns; turns that ended since are
taken off. The same tick looks for listed turns past their deadline (a writer that was
killed, on any host, or on this one before a restart) and has them saved as interrupted
(recovery.py): a dead host frees its conversations, and ends their readers' streams,
within about TURN_LEASE_SECONDS plus one tick.

A lease that lapsed because this worker was slow (an overloaded host, a long pause) is
taken again at the next renewal, unless another host has begun to recover the turn or
another turn holds the conversation (storage/turns.py RENEW_LEASE, atomic with the recovery's
claim). Then the turn stops: it must not save a second reply over the one recovery saved.

The renewal also says when Stop was asked for a turn (store.request_cancel marks it): a
Stop published while this worker's subscription was down still lands, a tick later.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from redis.exceptions import RedisError

from webapp.base.models import Lease
from webapp.base.processes import stop_task
from webapp.core.turns.recovery import OrphanRecovery
from webapp.storage.keys import TurnRef
from webapp.storage.store import Store

log = logging.getLogger("webapp.turns")


class LeaseKeeper:
    def __init__(self, store: Store, recovery: OrphanRecovery,
                 held: Callable[[], list[tuple[TurnRef, str]]], lost: Callable[[str], None],
                 cancelled: Callable[[str], None]) -> None:
        self.store = store
        self.recovery = recovery
        self.held = held  # (turn, session id) of every turn generating on this worker
        self.lost = lost  # called with a turn id whose lease could not be renewed
        self.cancelled = cancelled  # called with a turn id whose Stop was asked (the pub/sub may have missed it)
        self.interval = min(1.0, store.lease_ms / 3000)  # a slow host has most of the lease to spare
        self.finished: list[TurnRef] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="lease-keeper")

    def turn_ended(self, ref: TurnRef) -> None:
        self.finished.append(ref)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except RedisError as exc:
                log.warning("renewing turn leases failed (%s)", type(exc).__name__)
            except Exception:
                log.exception("renewing turn leases failed")
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        held = self.held()
        finished, self.finished = self.finished, []
        try:
            renewed = await self.store.renew_leases(held, finished)
        except BaseException:
            self.finished = finished + self.finished
            raise
        for lease, (ref, _) in zip(renewed, held):
            if lease is Lease.LOST:
                log.warning("turn %s: its lease lapsed (not renewed for %.0f s: Redis unreachable, or this host "
                            "stalled) and another host recovers it or another turn holds its conversation; "
                            "stopping it", ref.turn_id, self.store.lease_ms / 1000)
                self.lost(ref.turn_id)
            elif lease is Lease.CANCEL:
                self.cancelled(ref.turn_id)
        await self.sweep({ref.turn_id for ref, _ in held})

    async def sweep(self, own: set[str]) -> None:
        """Save the turns whose writer stopped renewing; forget those that ended."""
        done = []
        for ref in await self.store.lapsed_turns():
            if ref.turn_id in own:
                continue
            info = await self.recovery.recover(ref)
            if info is None or info.status != "running":
                done.append(ref)
        await self.store.forget_running(done)

    async def aclose(self) -> None:
        await stop_task(self.task)
        if self.finished:
            try:
                await self.store.renew_leases([], self.finished)
            except RedisError:
                pass
