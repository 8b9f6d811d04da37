"""What a turn writer holds (its runs, the event writer, the limits, its hooks), and stopping turns:
Stop, a lapsed lease, a shutdown."""

from __future__ import annotations

import asyncio
from typing import Callable

from redis.exceptions import RedisError

from webapp.base.metrics import Metrics
from webapp.base.models import Conversation, Message, TurnInfo
from webapp.config import Settings
from webapp.core.limits import Limit
from webapp.core.roles import RoleBook
from webapp.core.spending import Spending
from webapp.core.turns.recovery import OrphanRecovery
from webapp.core.turns.run import RATE_WINDOW_SECONDS, EventWriter, TurnRun, log
from webapp.llm.providers import Provider
from webapp.storage.keys import TurnRef
from webapp.storage.store import Store

STOP_SAVE_SECONDS = 5.0  # how long deleting a conversation waits for its stopped reply's save


class WriterState:
    """What a turn writer holds, and stopping turns: a part of TurnWriter (writer.py)."""

    def __init__(self, store: Store, provider: Provider, settings: Settings, metrics: Metrics) -> None:
        self.store = store
        self.provider = provider
        self.settings = settings
        self.metrics = metrics
        self.runs: dict[str, TurnRun] = {}
        self.recovery = OrphanRecovery(store)
        self.ended: Callable[[TurnRef], None] = lambda ref: None  # the lease keeper's, once it runs
        self.stream_writer = EventWriter(store, settings.stream_flush_ms / 1000)
        self.coalesce = settings.stream_coalesce_ms / 1000
        self.turns_per_user = Limit("turns-user", settings.rate_limit_per_minute, RATE_WINDOW_SECONDS)
        self.turns_per_ip = Limit("turns-ip", settings.turns_per_ip_per_minute, RATE_WINDOW_SECONDS)
        self._cancel_listener: asyncio.Task[None] | None = None
        self.roles = RoleBook(store, settings.max_roles_per_user)
        self.spending = Spending(store, settings)
        # told of every turn once its user message is saved, and of every reply once it is saved
        # (the search index, the title writer); they queue work, they must not block
        self.started_hooks: list[Callable[[TurnRun], None]] = []
        self.saved_hooks: list[Callable[[TurnRun, Message], None]] = []

    def start(self) -> None:
        self.stream_writer.start()
        self._cancel_listener = asyncio.create_task(self._listen_for_cancels(), name="cancel-listener")

    async def aclose(self) -> None:
        """Interrupt running turns and save what they have, then flush the writer."""
        if self._cancel_listener:
            self._cancel_listener.cancel()
        runs = list(self.runs.values())
        for run in runs:
            self._cancel_run(run, "shutdown")
        tasks = [run.task for run in runs if run.task]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        await self.stream_writer.aclose()

    def local_run(self, turn_id: str) -> TurnRun | None:
        """The turn if it generates on this worker (its events are in memory)."""
        return self.runs.get(turn_id)

    def started_since(self, user_id: str, session_id: str, since: float) -> list[TurnRun]:
        """The conversation's turns started on this worker at or after `since` (time.perf_counter())."""
        return sorted((run for run in self.runs.values() if run.started >= since and run.conversation.id == session_id
                       and run.conversation.user_id == user_id), key=lambda run: run.started)

    def held_leases(self) -> list[tuple[TurnRef, str]]:
        """(turn, session id) of each turn generating here: the leases to renew."""
        return [(run.ref, run.conversation.id) for run in self.runs.values() if not run.finished]

    def lease_lost(self, turn_id: str) -> None:
        """Its lease lapsed: another host may already have saved it as interrupted. Stop it."""
        run = self.runs.get(turn_id)
        if run is not None:
            run.lease_lost = True
            self._cancel_run(run, "lease")

    def _cancel_run(self, run: TurnRun, reason: str) -> None:
        if run.task and not run.task.done() and not run.cancel_reason:
            run.cancel_reason = reason
            run.task.cancel()

    async def cancel(self, turn: TurnInfo) -> None:
        """Stop a turn the caller owns, on whichever worker it runs; what it wrote is kept."""
        if turn.id in self.runs:
            self.cancel_requested(turn.id)
        elif turn.status == "running":
            await self.store.request_cancel(TurnRef(turn.user_id, turn.id))

    async def stop_reply(self, conversation: Conversation, *, until_saved: bool = False) -> None:
        """Stop the conversation's running reply, if any (what it wrote is kept). `until_saved` (deleting the
        conversation): return once the stopped reply is saved, here or on another host, so that a deletion
        comes after the save's writes and none of them (its message, the metadata) outlives it."""
        turn_id = conversation.running_turn_id
        if not turn_id:
            return
        await self.cancel(TurnInfo(id=turn_id, session_id=conversation.id, user_id=conversation.user_id,
                                   status="running"))
        if not until_saved:
            return
        run = self.runs.get(turn_id)
        if run is not None and run.task is not None:
            await asyncio.wait({run.task}, timeout=STOP_SAVE_SECONDS)  # (the task ends after its save)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_SAVE_SECONDS
        while loop.time() < deadline:
            info = await self.store.get_turn(TurnRef(conversation.user_id, turn_id))
            if info is None or info.status != "running":
                return
            await asyncio.sleep(0.05)

    def cancel_requested(self, turn_id: str) -> None:
        """Stop was asked for a turn, on any worker: stop it if it generates here."""
        run = self.runs.get(turn_id)
        if run is not None:
            self._cancel_run(run, "user")

    async def _listen_for_cancels(self) -> None:
        """Cancel requests for turns that run on this worker, published by any worker (one missed
        while the subscription is down reaches the lease keeper instead: store.request_cancel)."""
        while True:
            try:
                async for turn_id in self.store.cancel_requests():
                    self.cancel_requested(turn_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never die: a Stop asked on another worker would then wait for a lease tick
                if not isinstance(exc, RedisError):
                    log.exception("listening for Stop requests failed, retrying")
                await asyncio.sleep(1)
