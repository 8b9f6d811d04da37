"""Following turns that generate on another worker: one Redis connection per worker for all readers.

A reader whose turn runs on this worker is fed from memory (chat.TurnRun). A reader of
a turn running elsewhere, or one resuming after a reload, reads the turn's Redis Stream
instead. Rather than a blocking XREAD (and a Redis connection) per such reader, each
worker runs one task that blocks in a single XREAD over every followed turn's stream
plus the worker's own wake-up stream, and hands each reader the events past its place.
A reader that joins posts a wake-up, so that XREAD starts over with its stream in it.

On a Redis Cluster the streams live in many slots, and one XREAD may not span them. There
(ClusterFollower) each writer announces, once per flush, which turns it wrote on one
pub/sub channel; each worker's one pub/sub connection hears it, and one pipeline of
XRANGEs reads every announced turn it follows from its readers' place. A message lost
while a connection is replaced costs at most a second: every followed turn is also read
once a second regardless.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from webapp.base.models import TurnEvent, new_id
from webapp.base.processes import stop_task
from webapp.storage.keys import TurnRef
from webapp.storage.store import Store

log = logging.getLogger("webapp.followers")

REMOTE_BLOCK_MS = 5000


class Subscription:
    """One reader's place in a followed turn: the events past `position` wait here until read."""

    def __init__(self, position: int) -> None:
        self.position = position
        self.pending: list[TurnEvent] = []
        self.waiter: asyncio.Future[None] | None = None

    def feed(self, events: list[TurnEvent]) -> None:
        """Events that follow on from `position` (the caller makes sure there is no gap)."""
        fresh = [event for event in events if event.seq > self.position]
        if fresh:
            self.pending.extend(fresh)
            self.position = fresh[-1].seq
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

    async def next(self, timeout: float) -> list[TurnEvent]:
        """The events that came since the last call; waits up to `timeout` seconds for one."""
        if not self.pending:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait({self.waiter}, timeout=timeout)
            finally:
                self.waiter.cancel()
                self.waiter = None
        events, self.pending = self.pending, []
        return events


class StreamFollower:
    """This worker's one reader of turn streams; subscriptions say which turns, from where."""

    def __init__(self, store: Store, block_ms: int = REMOTE_BLOCK_MS) -> None:
        self.store = store
        self.block_ms = block_ms
        self.worker_id = new_id()
        self.subscriptions: dict[TurnRef, set[Subscription]] = {}
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    async def subscribe(self, turn_id: TurnRef, after: int) -> Subscription:
        """Follow a turn from seq `after`; pair with unsubscribe()."""
        subscription = Subscription(after)
        self.subscriptions.setdefault(turn_id, set()).add(subscription)
        if self.closed:
            return subscription  # shutting down: the reader times out and looks at the turn itself
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="stream-follower")
            return subscription
        try:
            await self.store.wake_follower(self.worker_id)
        except RedisError as exc:  # the running XREAD picks the new stream up when it next returns
            log.warning("could not wake the stream follower (%s)", type(exc).__name__)
        except BaseException:
            self.unsubscribe(turn_id, subscription)
            raise
        return subscription

    def unsubscribe(self, turn_id: TurnRef, subscription: Subscription) -> None:
        subscriptions = self.subscriptions.get(turn_id)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self.subscriptions[turn_id]

    def deliver(self, positions: dict[TurnRef, int], events: dict[TurnRef, list[TurnEvent]]) -> None:
        """Hand each subscription the events an XREAD read from `positions` brought.

        A subscription that joined while that XREAD ran, at a place before the one read
        from, gets nothing now: these events would leave a gap. The next XREAD starts
        from its place and brings it everything in order.
        """
        for turn_id, turn_events in events.items():
            read_from = positions[turn_id]
            for subscription in list(self.subscriptions.get(turn_id, ())):
                if subscription.position >= read_from:
                    subscription.feed(turn_events)

    async def _run(self) -> None:
        wake_seen = "0-0"
        backoff = 0.1
        while self.subscriptions:
            positions = {
                turn_id: min(subscription.position for subscription in subscriptions)
                for turn_id, subscriptions in self.subscriptions.items()
            }
            try:
                events, wake_seen = await self.store.read_turn_streams(
                    positions, worker_id=self.worker_id, wake_seen=wake_seen, block_ms=self.block_ms
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep following: readers rely on this task
                if isinstance(exc, RedisError):
                    log.warning("following turns from Redis failed (%s), retrying", type(exc).__name__)
                else:
                    log.exception("following turns from Redis failed, retrying")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            self.deliver(positions, events)

    async def aclose(self) -> None:
        self.closed = True
        await stop_task(self.task)


class ClusterFollower(StreamFollower):
    """Redis Cluster: wake-ups over one pub/sub channel, reads by pipelined XRANGE."""

    POLL_SECONDS = 1.0

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.dirty: set[TurnRef] = set()
        self.woken = asyncio.Event()
        self.listener: asyncio.Task[None] | None = None

    async def subscribe(self, turn_id: TurnRef, after: int) -> Subscription:
        subscription = Subscription(after)
        self.subscriptions.setdefault(turn_id, set()).add(subscription)
        if self.closed:
            return subscription
        if self.listener is None or self.listener.done():
            self.listener = asyncio.create_task(self._listen(), name="stream-follower-wakeups")
        self.dirty.add(turn_id)  # what was written before its wake-ups are heard
        self.woken.set()
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="stream-follower")
        return subscription

    async def _listen(self) -> None:
        """Mark the followed turns a flush announced; the reading loop does the rest."""
        while not self.closed:
            try:
                async for turn_ids in self.store.wake_ups():
                    if not self.subscriptions:
                        continue
                    followed = {ref.turn_id: ref for ref in self.subscriptions}
                    woken = [followed[turn_id] for turn_id in turn_ids if turn_id in followed]
                    if woken:
                        self.dirty.update(woken)
                        self.woken.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reads go on once a second meanwhile
                log.warning("turn wake-ups failed (%s), retrying", type(exc).__name__)
                await asyncio.sleep(0.5)

    async def _run(self) -> None:
        backoff = 0.1
        last_poll = time.monotonic()
        while self.subscriptions:
            now = time.monotonic()
            if now - last_poll >= self.POLL_SECONDS:
                self.dirty.update(self.subscriptions)
                last_poll = now
            dirty, self.dirty = self.dirty, set()
            positions = {
                ref: min(subscription.position for subscription in self.subscriptions[ref])
                for ref in dirty if ref in self.subscriptions
            }
            if positions:
                try:
                    events = await self.store.read_many_events(positions)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("following turns from Redis failed (%s), retrying", type(exc).__name__)
                    self.dirty.update(positions)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.1
                self.deliver(positions, events)
            if not self.dirty:
                self.woken.clear()
                try:
                    await asyncio.wait_for(self.woken.wait(), timeout=self.POLL_SECONDS)
                except TimeoutError:
                    pass

    async def aclose(self) -> None:
        await super().aclose()
        await stop_task(self.listener)


def make_follower(store: Store, block_ms: int = REMOTE_BLOCK_MS) -> StreamFollower:
    """One blocking XREAD on one Redis (or Sentinel's master); pub/sub wake-ups on a Cluster."""
    return ClusterFollower(store) if store.cluster else StreamFollower(store, block_ms)
