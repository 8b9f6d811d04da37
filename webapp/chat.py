"""A turn: the context window, the generation task, and the event stream readers follow.

Generation runs as a server-side task that does not depend on any HTTP connection.
Its events are kept in memory for readers on this worker (no Redis round trip per
reader per chunk) and written to a per-turn Redis Stream in pipelined batches, so a
reader on another worker, or one resuming with Last-Event-ID after a reload, can
follow the same reply. When the turn ends the whole reply is saved to the history in
the same MULTI that writes the final event, so `end` always means "saved".
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .config import Settings
from .errors import EmptyMessage, MessageTooLong, TurnNotFound
from .followers import REMOTE_BLOCK_MS, StreamFollower, Subscription
from .i18n import Lang, t
from .llm import Provider, UpstreamError
from .metrics import Metrics
from .roles import Role, get_role
from .store import Conversation, Message, Store, TurnEvent, TurnInfo, new_id, new_message_id, now_iso

log = logging.getLogger("webapp.chat")

TERMINAL = ("end", "error")


def validate_message(text: str | None, max_chars: int) -> str:
    """The message as it will be saved, or a domain error: empty, or too long."""
    if text is None or not text.strip():
        raise EmptyMessage()
    if len(text) > max_chars:
        raise MessageTooLong(limit=max_chars)
    return text


def build_context(role: Role, window: list[Message], budget_chars: int) -> list[dict[str, str]]:
    """System prompt + the window, trimmed oldest-first to the char budget; the newest message always stays."""
    kept: list[Message] = []
    used = 0
    for index, message in enumerate(reversed(window)):
        if not message.content:
            continue
        size = len(message.content)
        if index > 0 and used + size > budget_chars:
            break
        kept.append(message)
        used += size
    kept.reverse()
    return [{"role": "system", "content": role.system_prompt}] + [
        {"role": m.role, "content": m.content} for m in kept
    ]


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
        self.pending: dict[str, list[TurnEvent]] = {}
        self.wakeup = asyncio.Event()
        self.inflight: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="event-writer")

    def add(self, turn_id: str, event: TurnEvent) -> None:
        events = self.pending.get(turn_id)
        if events is None:
            self.pending[turn_id] = [event]
            self.wakeup.set()
        else:
            events.append(event)

    async def take(self, turn_id: str) -> list[TurnEvent]:
        """The turn's unwritten events, once any write of its earlier ones has finished."""
        events = self.pending.pop(turn_id, [])
        if self.inflight is not None and not self.inflight.done():
            await asyncio.shield(self.inflight)
            # a failed write puts its events back: they come first
            events = self.pending.pop(turn_id, []) + events
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
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning("event write failed (%s), retrying", type(exc).__name__)
                for turn_id, events in batch.items():
                    self.pending[turn_id] = events + self.pending.get(turn_id, [])
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


class TurnManager:
    """Starts turns, runs their generation tasks and serves their events to readers."""

    def __init__(self, store: Store, provider: Provider, settings: Settings, metrics: Metrics) -> None:
        self.store = store
        self.provider = provider
        self.settings = settings
        self.metrics = metrics
        self.runs: dict[str, TurnRun] = {}
        self.writer = EventWriter(store, settings.stream_flush_ms / 1000)
        self.follower = StreamFollower(store)
        self.coalesce = settings.stream_coalesce_ms / 1000
        self._cancel_listener: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.writer.start()
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
        await self.writer.aclose()
        await self.follower.aclose()

    # starting -----------------------------------------------------------

    async def start_turn(
        self, session_id: str, user_id: str, text: str | None, role: Role | None, lang: Lang
    ) -> TurnRun:
        """Save the user's message and start generating; `role` None keeps the conversation's role.

        Ownership is checked in the same round trip that takes the lock (404 for a
        conversation that is not the user's), so a turn costs no separate lookup.
        """
        text = validate_message(text, self.settings.max_message_chars)
        turn_id = new_id()
        started = await self.store.begin_turn(
            session_id,
            user_id,
            turn_id=turn_id,
            text=text,
            role=role.id if role else None,
            context_messages=self.settings.context_messages,
            rate_limit=self.settings.rate_limit_per_minute,
        )
        conversation = started.conversation
        role = role or get_role(conversation.role)
        messages = build_context(role, started.context, self.settings.context_chars)
        run = TurnRun(id=turn_id, conversation=conversation, role=role, lang=lang, user_message=started.user_message)
        self.runs[turn_id] = run
        run.task = asyncio.create_task(self._generate(run, messages), name=f"turn-{turn_id}")
        self.metrics.turn_started()
        return run

    # generating ---------------------------------------------------------

    async def _generate(self, run: TurnRun, messages: list[dict[str, str]]) -> None:
        status, error_key = "complete", ""
        try:
            # the conversation's lock lasts TURN_TIMEOUT_SECONDS: the reply must end before it does
            async with asyncio.timeout(max(1, self.settings.turn_timeout_seconds - 5)):
                async for delta in self.provider.stream(
                    messages, role_name=run.role.name(run.lang), lang=run.lang
                ):
                    self._add_text(run, delta)
        except TimeoutError:
            status, error_key = "error", "error.reply_too_long"
        except asyncio.CancelledError:
            status = "interrupted"
            error_key = "" if run.cancel_reason == "user" else "error.interrupted"
        except UpstreamError as exc:
            status, error_key = "error", exc.key
            self.metrics.upstream_error()
        except Exception:
            log.exception("turn %s failed", run.id)
            status, error_key = "error", "error.upstream"
            self.metrics.upstream_error()
        await asyncio.shield(self._finish(run, status, error_key))

    def _add_text(self, run: TurnRun, delta: str) -> None:
        """Queue a delta; emit at once if the last event is older than the coalescing window."""
        if run.first_token_at is None:
            run.first_token_at = time.perf_counter()
            self.metrics.observe_ttft(run.first_token_at - run.started)
        run.text.append(delta)
        run.pending.append(delta)
        if run.flush_handle is not None:
            return
        loop = asyncio.get_running_loop()
        due = run.last_emit + self.coalesce
        now = loop.time()
        if now >= due:
            self._emit_pending(run)
        else:
            run.flush_handle = loop.call_at(due, self._emit_pending, run)

    def _emit_pending(self, run: TurnRun) -> None:
        run.flush_handle = None
        if not run.pending or run.finished:
            return
        event = TurnEvent(seq=run.next_seq(), type="chunk", content="".join(run.pending))
        run.pending.clear()
        run.last_emit = asyncio.get_running_loop().time()
        run.publish(event)
        self.writer.add(run.id, event)

    async def _finish(self, run: TurnRun, status: str, error_key: str) -> None:
        if run.flush_handle is not None:
            run.flush_handle.cancel()
        self._emit_pending(run)
        content = "".join(run.text)
        reply = None
        if content or status == "complete":
            reply = Message(id=new_message_id(), role="assistant", content=content, ts=now_iso(), status=status)
        if error_key:
            final = TurnEvent(seq=run.next_seq(), type="error", content=t(error_key, run.lang))
        else:
            final = TurnEvent(seq=run.next_seq(), type="end", message_id=reply.id if reply else "")
        await self._save(run, reply, final)
        run.finished = True
        run.publish(final)
        self.runs.pop(run.id, None)
        duration = time.perf_counter() - run.started
        ttft = (run.first_token_at - run.started) if run.first_token_at else None
        self.metrics.turn_finished(status, duration)
        log.info(
            "turn id=%s session=%s status=%s provider=%s ttft_ms=%s total_ms=%.0f chars=%d events=%d",
            run.id, run.conversation.id, status, self.provider.name,
            f"{ttft * 1000:.0f}" if ttft is not None else "-", duration * 1000, len(content), final.seq,
        )

    async def _save(self, run: TurnRun, reply: Message | None, final: TurnEvent) -> None:
        """Save the reply; a Redis outage is retried for as long as a turn may run.

        Only connection failures are retried, and a retry first asks whether the
        previous attempt was applied after all (its reply lost on the way back), so
        a reply is never saved twice. A conversation deleted while its reply was
        generating gets only the final event, not a new history.
        """
        deadline = time.monotonic() + self.settings.turn_timeout_seconds
        backoff = 0.1
        unwritten: list[TurnEvent] | None = None
        # only a cancelled turn can have lost its conversation (deleting one stops its reply)
        exists = not run.cancel_reason or await self._conversation_exists(run)
        attempt = 0
        while True:
            attempt += 1
            try:
                unwritten = await self.writer.take(run.id) if unwritten is None else unwritten
                if attempt > 1 and await self.store.turn_saved(run.id):
                    return
                await self.store.finish_turn(
                    run.conversation, turn_id=run.id, reply=reply, final_event=final, unwritten=unwritten,
                    conversation_exists=exists,
                )
                return
            except (RedisConnectionError, RedisTimeoutError) as exc:
                self.metrics.redis_error()
                if time.monotonic() > deadline:
                    log.error("turn %s: reply lost, Redis unreachable for %ss: %s", run.id,
                              self.settings.turn_timeout_seconds, type(exc).__name__)
                    return
                log.warning("turn %s: saving failed (%s), retrying", run.id, type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except RedisError as exc:  # a command refused: retrying would not help
                self.metrics.redis_error()
                log.error("turn %s: saving failed: %s", run.id, exc)
                return

    async def _conversation_exists(self, run: TurnRun) -> bool:
        try:
            return await self.store.get_conversation(run.conversation.id) is not None
        except RedisError:
            return True

    # cancelling ---------------------------------------------------------

    def _cancel_run(self, run: TurnRun, reason: str) -> None:
        if run.task and not run.task.done() and not run.cancel_reason:
            run.cancel_reason = reason
            run.task.cancel()

    async def cancel(self, turn: TurnInfo) -> None:
        run = self.runs.get(turn.id)
        if run is not None:
            self._cancel_run(run, "user")
        elif turn.status == "running":
            await self.store.request_cancel(turn.id)

    async def stop_reply(self, conversation: Conversation) -> None:
        """Stop the conversation's running reply, if any (what it wrote is kept)."""
        if conversation.running_turn_id:
            try:
                await self.cancel(await self.turn_for(conversation.running_turn_id, conversation.user_id))
            except TurnNotFound:
                pass

    async def _listen_for_cancels(self) -> None:
        """Cancel requests for turns that run on this worker, published by any worker."""
        while True:
            try:
                async for turn_id in self.store.cancel_requests():
                    run = self.runs.get(turn_id)
                    if run is not None:
                        self._cancel_run(run, "user")
            except asyncio.CancelledError:
                raise
            except RedisError:
                await asyncio.sleep(1)

    # reading ------------------------------------------------------------

    async def turn_for(self, turn_id: str, user_id: str) -> TurnInfo:
        """The turn if the user owns it; 404 otherwise (never reveal another user's turn)."""
        run = self.runs.get(turn_id)
        if run is not None:
            if run.conversation.user_id != user_id:
                raise TurnNotFound()
            return TurnInfo(id=run.id, session_id=run.conversation.id, user_id=user_id, status="running")
        info = await self.store.get_turn(turn_id)
        if info is None or info.user_id != user_id:
            raise TurnNotFound()
        return info

    async def follow(self, turn: TurnInfo, after: int = 0) -> AsyncIterator[list[TurnEvent]]:
        """Batches of the turn's events after seq `after`, until its end or error event."""
        run = self.runs.get(turn.id)
        if run is not None:
            async for batch in run.follow(after):
                yield batch
            return
        async for batch in self._follow_stored(turn, after):
            yield batch

    async def _follow_stored(self, turn: TurnInfo, after: int) -> AsyncIterator[list[TurnEvent]]:
        """Follow a turn through its Redis Stream: it runs on another worker, or already ended.

        What the stream holds now is read at once; then the worker's StreamFollower
        brings the rest. A turn silent for REMOTE_BLOCK_MS is checked: ended (its stream
        expired: replay the saved reply), or orphaned by a worker that died (save it).
        """
        events = await self.store.read_events(turn.id, after)
        subscription: Subscription | None = None
        try:
            while True:
                if events:
                    yield events
                    after = events[-1].seq
                    if events[-1].type in TERMINAL:
                        return
                else:
                    info = await self.store.get_turn(turn.id)
                    if info is not None and info.status == "running" and turn.id not in self.runs:
                        if await self.store.lock_holder(info.session_id) != turn.id:
                            info = await self._recover_orphan(info)
                    if info is None or info.status != "running":
                        # its last events (or the interruption a recovery just wrote), else the saved reply
                        events = await self.store.read_events(turn.id, after)
                        if events:
                            continue
                        async for batch in self._replay_from_history(info or turn, after):
                            yield batch
                        return
                if subscription is None:
                    subscription = await self.follower.subscribe(turn.id, after)
                # (a direct read above may have run ahead of the subscription)
                events = [event for event in await subscription.next(REMOTE_BLOCK_MS / 1000) if event.seq > after]
        finally:
            if subscription is not None:
                self.follower.unsubscribe(turn.id, subscription)

    async def _recover_orphan(self, turn: TurnInfo) -> TurnInfo | None:
        """A turn whose worker died: save what its event stream holds as an interrupted reply."""
        conversation = await self.store.get_conversation(turn.session_id)
        if conversation is None:
            return None
        if not await self.store.claim_recovery(turn.id):
            return await self.store.get_turn(turn.id)  # another reader is saving it
        events = await self.store.read_events(turn.id, 0)
        if events and events[-1].type in TERMINAL:
            return await self.store.get_turn(turn.id)
        content = "".join(e.content for e in events if e.type == "chunk")
        reply = None
        if content:
            reply = Message(id=new_message_id(), role="assistant", content=content, ts=now_iso(), status="interrupted")
        final = TurnEvent(seq=len(events) + 1, type="error", content=t("error.interrupted"))
        # the lock is no longer this turn's (that is how it was found orphaned): leave it alone
        await self.store.finish_turn(conversation, turn_id=turn.id, reply=reply, final_event=final, release_lock=False)
        log.warning("turn %s: its worker is gone; saved %d chars as interrupted", turn.id, len(content))
        return await self.store.get_turn(turn.id)

    async def _replay_from_history(self, turn: TurnInfo, after: int) -> AsyncIterator[list[TurnEvent]]:
        """The event stream has expired: rebuild the reply from the saved message."""
        message = await self.store.find_message(turn.session_id, turn.message_id) if turn.message_id else None
        if after == 0 and message is not None:
            yield [TurnEvent(seq=1, type="chunk", content=message.content),
                   TurnEvent(seq=2, type="end", message_id=message.id)]
        elif after == 0:
            yield [TurnEvent(seq=1, type="end")]

    async def progress(self, turn_id: str) -> tuple[str, int, bool]:
        """What a page rendered now shows of a reply: its text so far, the last seq, and whether it ended.

        A reader that then follows from that seq sees each chunk exactly once.
        """
        run = self.runs.get(turn_id)
        events = list(run.events) if run is not None else await self.store.read_events(turn_id, 0)
        text = "".join(event.content for event in events if event.type == "chunk")
        last = events[-1] if events else None
        return text, last.seq if last else 0, bool(last and last.type in TERMINAL)
