"""A turn as it runs on this worker (`TurnRun`), the records a start and a save return, and the
writer of every run's events to Redis (`EventWriter`)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from redis.exceptions import RedisError

from webapp.base.i18n import Lang
from webapp.base.models import TERMINAL, BranchState, Conversation, Message, TurnEvent, Usage
from webapp.core.roles import Role
from webapp.storage.failures import PASSING
from webapp.storage.keys import TurnRef
from webapp.storage.store import Store

log = logging.getLogger("webapp.turns")

RATE_WINDOW_SECONDS = 60

# The most text one event carries (at most 64 KB of UTF-8): a model may send a huge delta in one piece,
# and one SSE line of a megabyte is past what clients read (aiohttp's default limit is 512 KiB).
MAX_EVENT_CHARS = 16384

# what a start does, decided under the lock: (list index to fork at, or None; the new user message, or None)
Plan = Callable[[Conversation, "BranchState | None"], tuple["int | None", "str | None"]]


class RepeatedRequest(Exception):
    """The request repeats one (same request id) that started `turn_id`: nothing new is started."""

    def __init__(self, turn_id: str) -> None:
        super().__init__(turn_id)
        self.turn_id = turn_id


@dataclass
class Started:
    """A turn a request started (or, for a repeated request id, the one it started before)."""

    id: str
    conversation: Conversation
    user_message: Message | None  # the message this request stored; None for a retry or a repeat
    duplicate: bool = False


@dataclass
class SavedReply:
    """A reply as its turn saved it (store.finish_turn), kept for this worker's readers."""

    reply: Message
    index: int  # its position in the conversation's list
    conversation: Conversation  # the conversation's metadata as the save left it
    before: Message | None  # the user message it answers
    forked: bool  # it started a new version (its bubble shows version arrows: read them)


@dataclass
class TurnRun:
    """A turn generating on this worker; its events stay in memory for local readers."""

    id: str
    conversation: Conversation
    role: Role
    lang: Lang
    user_message: Message
    events: list[TurnEvent] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    finished: bool = False
    task: asyncio.Task[None] | None = None
    cancel_reason: str = ""
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    last_emit: float = 0.0
    flush_handle: asyncio.TimerHandle | None = None
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    lease_lost: bool = False
    model: str = ""  # the model asked ("" = the provider's default)
    first_exchange: bool = False  # the conversation's first message: its title may be written after
    forked: bool = False  # a regenerate or an edit: the reply starts a new version of the branch
    asked: bool = False  # this turn stored a new user message (not a retry, regenerate or edit)
    saved: "SavedReply | None" = None  # once saved: what the page's final bubble shows, without a read
    kept: bool = False  # its reply is in its conversation's history (not deleted meanwhile): the saved hooks run
    usage: Usage = field(default_factory=lambda: Usage(estimated=True))  # the model's counts, else estimated
    lane: bool = False  # it holds its user's budget lane (core/spending.py): given back when saved

    @property
    def ref(self) -> TurnRef:
        return TurnRef(self.conversation.user_id, self.id)

    def publish(self, event: TurnEvent) -> None:
        """Append an event and wake the readers waiting for one (a future per waiting reader,
        not an Event per publish: most events find exactly one reader, or none)."""
        self.events.append(event)
        if self.waiters:
            for waiter in self.waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self.waiters.clear()

    def next_seq(self) -> int:
        return len(self.events) + 1

    async def follow(self, after: int) -> AsyncIterator[list[TurnEvent]]:
        """Yield batches of events after seq `after` until the terminal event."""
        index = max(0, after)
        while True:
            if len(self.events) > index:
                batch = self.events[index:]
                index = len(self.events)
                yield batch
                if batch[-1].type in TERMINAL:
                    return
            elif self.finished:
                return
            else:
                waiter = asyncio.get_running_loop().create_future()
                self.waiters.append(waiter)
                await waiter


class EventWriter:
    """Writes the chunk events of all running turns to Redis, batched in time.

    Every `interval` seconds one pipeline carries one stream entry per turn with the
    chunks since the last flush. Readers on this worker never wait for it (they are
    fed from memory); readers on another worker, or resuming, see the reply at that
    granularity. A turn's last chunks go out with its final event (`take`).
    """

    def __init__(self, store: Store, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.pending: dict[TurnRef, list[TurnEvent]] = {}
        self.wakeup = asyncio.Event()
        self.inflight: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="event-writer")

    def add(self, ref: TurnRef, event: TurnEvent) -> None:
        events = self.pending.get(ref)
        if events is None:
            self.pending[ref] = [event]
            self.wakeup.set()
        else:
            events.append(event)

    async def take(self, ref: TurnRef) -> list[TurnEvent]:
        """The turn's unwritten events, once any write of its earlier ones has finished."""
        events = self.pending.pop(ref, [])
        if self.inflight is not None and not self.inflight.done():
            await asyncio.shield(self.inflight)
            # a failed write puts its events back: they come first
            events = self.pending.pop(ref, []) + events
        return events

    async def _run(self) -> None:
        backoff = self.interval
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            await asyncio.sleep(self.interval)
            if not self.pending:
                continue
            batch, self.pending = self.pending, {}
            self.inflight = asyncio.get_running_loop().create_future()
            try:
                await self.store.append_events(batch.items())
                backoff = self.interval
            except PASSING as exc:
                log.warning("event write failed (%s), retrying", type(exc).__name__)
                for ref, events in batch.items():
                    self.pending[ref] = events + self.pending.get(ref, [])
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                self.wakeup.set()
            finally:
                self.inflight.set_result(None)

    async def aclose(self) -> None:
        if self.task:
            self.task.cancel()
        if self.pending:
            try:
                await self.store.append_events(self.pending.items())
            except RedisError:
                log.error("event writer could not flush before shutdown")
            self.pending = {}
