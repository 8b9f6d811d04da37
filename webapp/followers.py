"""Following turns that generate on another worker: one XREAD BLOCK per worker for all readers.

A reader whose turn runs on this worker is fed from memory (chat.TurnRun). A reader of
a turn running elsewhere, or one resuming after a reload, reads the turn's Redis Stream
instead. Rather than a blocking XREAD (and a Redis connection) per such reader, each
worker runs one task that blocks in a single XREAD over every followed turn's stream
plus the worker's own wake-up stream, and hands each reader the events past its place.
A reader that joins posts a wake-up, so that XREAD starts over with its stream in it.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from .models import TurnEvent, new_id
from .store import Store

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
        self.subscriptions: dict[str, set[Subscription]] = {}
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    async def subscribe(self, turn_id: str, after: int) -> Subscription:
        """Follow `turn_id` from seq `after`; pair with unsubscribe()."""
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

    def unsubscribe(self, turn_id: str, subscription: Subscription) -> None:
        subscriptions = self.subscriptions.get(turn_id)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self.subscriptions[turn_id]

    def deliver(self, positions: dict[str, int], events: dict[str, list[TurnEvent]]) -> None:
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
        if self.task is not None and not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
