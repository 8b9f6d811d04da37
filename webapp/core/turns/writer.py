"""The writer of a turn: start it, generate the reply, save it, cancel it.

Generation runs as a server-side task that does not depend on any HTTP connection.
Its events are kept in memory for readers on this worker (turn_reader.py follows them
with no Redis round trip per reader per chunk) and written to a per-turn Redis Stream
in pipelined batches, so a reader on another worker, or one resuming with
Last-Event-ID after a reload, can follow the same reply. When the turn ends the whole
reply is saved to the history in the same MULTI that writes the final event, so `end`
always means "saved".

The rules of starting a turn live here, not in the store: ownership, one reply at a
time per conversation, the rate limit, the title a first message gives, the preview.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import AsyncIterator, Awaitable, Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from webapp.base.errors import (
    ConversationFull,
    MessageNotFound,
    NothingToRegenerate,
    SessionNotFound,
    TurnRunning,
    VersionLimit,
)
from webapp.base.i18n import Lang, t
from webapp.base.metrics import Metrics
from webapp.base.models import (
    TERMINAL,
    WELCOME,
    BranchState,
    Conversation,
    Message,
    TurnEvent,
    TurnInfo,
    TurnLock,
    new_id,
    new_message_id,
    now_iso,
)
from webapp.config import Settings
from webapp.core.context import build_context, validate_message
from webapp.core.limits import Limit, active, refuse_if_over
from webapp.core.roles import Role, RoleBook
from webapp.core.titles import make_preview, make_title
from webapp.core.turns.recovery import OrphanRecovery
from webapp.core.versions import TooManyVersions, fork
from webapp.llm.providers import Provider, UpstreamError
from webapp.storage.keys import TurnRef
from webapp.storage.store import Store

log = logging.getLogger("webapp.turns")

RATE_WINDOW_SECONDS = 60

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
            except (RedisConnectionError, RedisTimeoutError) as exc:
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


class TurnWriter:
    """Starts turns, runs their generation tasks, saves their replies and cancels them."""

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

    # starting -----------------------------------------------------------

    async def lock_conversation(self, session_id: str, user_id: str, holder: str, *,
                                hits: list[tuple[str, str, int, int]] | None = None,
                                request_id: str | None = None) -> TurnLock:
        """Take the conversation's lock for `holder` (a turn, or a version switch), checking ownership in the
        same round trip: 404 for a conversation that is not the user's, 409 while another holds it.
        The caller gives it back with store.release_lock(user_id, session_id, holder). A turn's
        `request_id` is claimed in that round trip too: RepeatedRequest when it repeats one."""
        lock = await self.store.lock_turn(user_id, session_id, turn_id=holder, hits=hits or [],
                                          request_id=request_id)
        if lock.earlier is not None:
            await self.store.undo_repeated_start(user_id, session_id, holder, locked=lock.locked, hits=hits or [])
            raise RepeatedRequest(lock.earlier)
        if not lock.meta or lock.meta.get("user_id") != user_id:
            if lock.locked:
                await self.store.release_lock(user_id, session_id, holder)
            raise SessionNotFound()
        if not lock.locked:
            raise TurnRunning()
        return lock

    async def start_turn(
        self, session_id: str, user_id: str, text: str | None, role_id: str | None, lang: Lang,
        client_ip: str = "", *, request_id: str | None = None,
    ) -> Started:
        """Save the user's message and start generating; `role_id` None keeps the conversation's role.

        Ownership is checked in the same round trip that takes the lock and counts the
        rate (404 for a conversation that is not the user's), so a turn costs no
        separate lookup: two round trips whatever the history length.
        """
        text = validate_message(text, self.settings.max_message_chars)
        requested = await self.roles.get(user_id, role_id) if role_id else None
        return await self._start(session_id, user_id, lang, client_ip, request_id, requested,
                                 lambda conversation, state: (None, text))

    async def regenerate(self, session_id: str, user_id: str, lang: Lang, client_ip: str = "", *,
                         request_id: str | None = None, reply_id: str | None = None) -> Started:
        """A new reply to the last user message; the reply it replaces (if any) stays as a version.

        Also the Retry after an error: when no reply was saved, the same message is answered
        again, never stored twice. `reply_id` (when given) must be the last reply.
        """
        return await self._start(session_id, user_id, lang, client_ip, request_id, None,
                                 self._regenerate_plan(reply_id), fork_last=True)

    async def edit(self, session_id: str, user_id: str, message_id: str, text: str | None, lang: Lang,
                   client_ip: str = "", *, request_id: str | None = None) -> Started:
        """Edit and resend a user message: its old version and everything after it stay as a version."""
        text = validate_message(text, self.settings.max_message_chars)

        async def locate(conversation: Conversation) -> int:
            # under the lock, after the request id is claimed: a repeat answers the first turn
            index = await self.store.find_message_index(conversation, message_id)
            if index is None:
                raise MessageNotFound()
            return index

        def plan(conversation: Conversation, state: BranchState | None) -> tuple[int | None, str | None]:
            assert state is not None
            edited = state.message(state.index)
            if edited is None or edited.id != message_id or edited.role != "user":
                raise MessageNotFound()
            return state.index, text

        return await self._start(session_id, user_id, lang, client_ip, request_id, None, plan, locate=locate)

    def _regenerate_plan(self, reply_id: str | None) -> Plan:
        def plan(conversation: Conversation, state: BranchState | None) -> tuple[int | None, str | None]:
            assert state is not None
            last = Message.from_json(state.messages[-1]) if state.messages else None
            if last is None or last.kind == WELCOME:
                raise NothingToRegenerate()
            if last.role == "user":  # no reply was saved: answer the same message again
                if reply_id:
                    raise NothingToRegenerate()
                return None, None
            if reply_id and last.id != reply_id:
                raise NothingToRegenerate()  # only the last reply can be regenerated
            if len(state.messages) < 2 or Message.from_json(state.messages[-2]).role != "user":
                raise NothingToRegenerate()
            return state.index + len(state.messages) - 1, None
        return plan

    async def _start(
        self, session_id: str, user_id: str, lang: Lang, client_ip: str, request_id: str | None,
        requested: Role | None, plan: Plan, *, locate: Callable[[Conversation], Awaitable[int]] | None = None,
        fork_last: bool = False,
    ) -> Started:
        turn_id = new_id()
        try:
            return await self._start_locked(session_id, user_id, lang, client_ip, requested, plan, turn_id,
                                            locate=locate, fork_last=fork_last, request_id=request_id)
        except RepeatedRequest as repeat:  # (its id is the first request's: not forgotten)
            return await self._duplicate(session_id, user_id, repeat.turn_id)
        except BaseException:
            if request_id:
                await self.store.forget_request(user_id, request_id)
            raise

    async def _duplicate(self, session_id: str, user_id: str, turn_id: str) -> Started:
        """A request already made: the turn it started (once that exists), and nothing new."""
        for _ in range(50):
            info = await self.store.get_turn(TurnRef(user_id, turn_id))
            if info is not None:
                if info.session_id != session_id:
                    raise SessionNotFound()
                conversation = await self.store.get_conversation(user_id, session_id)
                if conversation is None:
                    raise SessionNotFound()
                return Started(id=turn_id, conversation=conversation, user_message=None, duplicate=True)
            await asyncio.sleep(0.1)
        raise TurnRunning()

    async def _start_locked(
        self, session_id: str, user_id: str, lang: Lang, client_ip: str, requested: Role | None, plan: Plan,
        turn_id: str, *, locate: Callable[[Conversation], Awaitable[int]] | None, fork_last: bool,
        request_id: str | None = None,
    ) -> Started:
        now = time.time()
        checks = active((self.turns_per_user, user_id), (self.turns_per_ip, client_ip))
        lock = await self.lock_conversation(session_id, user_id, turn_id, request_id=request_id,
                                            hits=[limit.counter(key, now) for limit, key in checks])
        try:
            refuse_if_over(checks, lock.counts, now)
            conversation = Conversation.from_hash(session_id, lock.meta)
            conversation.message_count = lock.length  # (messages expire before the metadata does)
            if conversation.running_turn_id:  # the last turn's writer died: save its reply first
                await self.recovery.recover(TurnRef(user_id, conversation.running_turn_id), lock_taken=True)
                conversation.message_count = await self.store.message_count(conversation)
                conversation.running_turn_id = None
            self._check_room(conversation)
            state = None
            if fork_last:  # the last two messages decide what a regenerate does
                state = await self.store.read_branch(conversation, max(0, conversation.message_count - 2))
            elif locate is not None:
                state = await self.store.read_branch(conversation, await locate(conversation))
            fork_index, text = plan(conversation, state)
            if fork_index is not None:
                assert state is not None  # a plan forks only where the state it was given reaches
                before = state.message(fork_index - 1) or await self.store.message_at(conversation, fork_index - 1)
                try:
                    change = fork(state.from_index(fork_index))
                except TooManyVersions:
                    raise VersionLimit() from None
                conversation.preview = make_preview(before.content) if before else ""
                await self.store.write_branch(conversation, change, preview=conversation.preview)
                conversation.message_count = fork_index
            role = requested or (await self.roles.resolve(user_id, conversation.role)).role
            message = Message(id=new_message_id(), role="user", content=text, ts=now_iso()) if text else None
            conversation.role = role.id
            if message is not None:
                conversation.title = conversation.title or make_title(message.content)
                conversation.preview = make_preview(message.content)
                conversation.message_count += 1
            conversation.updated = time.time()
            conversation.running_turn_id = turn_id
            context = await self.store.save_turn_start(
                conversation, message, turn_id=turn_id, context_messages=self.settings.context_messages
            )
        except BaseException:
            await self.store.release_lock(user_id, session_id, turn_id)
            raise
        user_message = message or next((m for m in reversed(context) if m.role == "user"), None)
        messages = build_context(role, context, self.settings.context_chars)
        # the model the user picked for the conversation wins over the role's own, which wins over the default
        model = conversation.model or role.model
        run = TurnRun(id=turn_id, conversation=conversation, role=role, lang=lang, user_message=user_message,
                      model=model, first_exchange=message is not None and conversation.message_count == 2,
                      forked=fork_index is not None, asked=message is not None and fork_index is None)
        self.runs[turn_id] = run
        for hook in self.started_hooks:
            hook(run)
        run.task = asyncio.create_task(self._generate(run, messages), name=f"turn-{turn_id}")
        self.metrics.turn_started()
        return Started(id=turn_id, conversation=conversation, user_message=message)

    def _check_room(self, conversation: Conversation) -> None:
        """A conversation at MAX_MESSAGES_PER_CONVERSATION takes no more: nothing a user wrote is trimmed."""
        limit = self.settings.max_messages_per_conversation
        if limit and conversation.message_count + 2 > limit:
            raise ConversationFull(limit=limit)

    # generating ---------------------------------------------------------

    async def _generate(self, run: TurnRun, messages: list[dict[str, str]]) -> None:
        status, error_key = "complete", ""
        try:
            # a reply may take TURN_TIMEOUT_SECONDS at most (its lease is renewed until then)
            async with asyncio.timeout(max(1, self.settings.turn_timeout_seconds - 5)):
                async for delta in self.provider.stream(
                    messages, role_name=run.role.name(run.lang), lang=run.lang, model=run.model or None,
                    temperature=run.role.temperature,
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
        self.stream_writer.add(run.ref, event)

    async def _finish(self, run: TurnRun, status: str, error_key: str) -> None:
        if run.flush_handle is not None:
            run.flush_handle.cancel()
        self._emit_pending(run)
        content = "".join(run.text)
        reply = None
        if content or status == "complete":
            reply = Message(id=new_message_id(), role="assistant", content=content, ts=now_iso(), status=status,
                            role_id=run.role.id, role_name=run.role.name_zh if run.role.custom else "",
                            model=run.model or self.provider.model)
        if error_key:
            final = TurnEvent(seq=run.next_seq(), type="error", content=t(error_key, run.lang))
        else:
            final = TurnEvent(seq=run.next_seq(), type="end", message_id=reply.id if reply else "")
        if not await self._save(run, reply, final):
            # never `end` for text that is not in the history: the reader is told, the user
            # message stays, and the conversation is unlocked so Retry works
            final = TurnEvent(seq=final.seq, type="error", content=t("error.save_failed", run.lang))
            status = "error"
            await self._release_after_failed_save(run, final)
        elif reply is not None:
            for hook in self.saved_hooks:
                try:
                    hook(run, reply)
                except Exception:
                    log.exception("turn %s: a saved-reply hook failed", run.id)
        run.finished = True
        run.publish(final)
        self.runs.pop(run.id, None)
        self.ended(run.ref)
        duration = time.perf_counter() - run.started
        ttft = (run.first_token_at - run.started) if run.first_token_at else None
        self.metrics.turn_finished(status, duration)
        log.info(
            "turn id=%s session=%s status=%s provider=%s ttft_ms=%s total_ms=%.0f chars=%d events=%d",
            run.id, run.conversation.id, status, self.provider.name,
            f"{ttft * 1000:.0f}" if ttft is not None else "-", duration * 1000, len(content), final.seq,
        )

    async def _save(self, run: TurnRun, reply: Message | None, final: TurnEvent) -> bool:
        """Save the reply; a Redis outage is retried for as long as a turn may run. False: not saved.

        Only connection failures are retried, and a retry first asks whether the
        previous attempt was applied after all (its reply lost on the way back), so
        a reply is never saved twice. A conversation deleted while its reply was
        generating gets only the final event, not a new history.
        """
        deadline = time.monotonic() + self.settings.turn_timeout_seconds
        backoff = 0.1
        preview = make_preview(reply.content) if reply else ""
        unwritten: list[TurnEvent] | None = None
        # only a cancelled turn can have lost its conversation (deleting one stops its reply)
        exists = not run.cancel_reason or await self._conversation_exists(run)
        attempt = 0
        while True:
            attempt += 1
            try:
                unwritten = await self.stream_writer.take(run.ref) if unwritten is None else unwritten
                if (attempt > 1 or run.lease_lost) and await self.store.turn_saved(run.ref):
                    return True  # saved by the first attempt after all, or by another host's recovery
                await self.store.finish_turn(
                    run.conversation, turn_id=run.id, reply=reply, preview=preview,
                    final_event=final, unwritten=unwritten, conversation_exists=exists,
                )
                if reply is not None and exists:  # (what finish_turn wrote to the conversation)
                    before = run.conversation
                    run.saved = SavedReply(reply=reply, index=before.message_count, conversation=replace(
                        before, preview=preview, message_count=before.message_count + 1,
                        updated=time.time(), running_turn_id=None), before=run.user_message, forked=run.forked)
                return True
            except (RedisConnectionError, RedisTimeoutError) as exc:
                self.metrics.redis_error()
                if time.monotonic() > deadline:
                    log.error("turn %s: reply lost, Redis unreachable for %ss: %s", run.id,
                              self.settings.turn_timeout_seconds, type(exc).__name__)
                    return False
                log.warning("turn %s: saving failed (%s), retrying", run.id, type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except RedisError as exc:  # a command refused: retrying would not help
                self.metrics.redis_error()
                log.error("turn %s: saving failed: %s", run.id, exc)
                return False

    async def _release_after_failed_save(self, run: TurnRun, final: TurnEvent) -> None:
        """Best effort (Redis may be refusing writes): mark the turn failed, unlock the conversation."""
        try:
            await self.store.abandon_turn(run.conversation, run.id, final)
        except RedisError as exc:
            log.error("turn %s: could not release the conversation after a failed save: %s", run.id, exc)

    async def _conversation_exists(self, run: TurnRun) -> bool:
        try:
            return await self.store.get_conversation(run.conversation.user_id, run.conversation.id) is not None
        except RedisError:
            return True

    # cancelling ---------------------------------------------------------

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

    async def stop_reply(self, conversation: Conversation) -> None:
        """Stop the conversation's running reply, if any (what it wrote is kept)."""
        turn_id = conversation.running_turn_id
        if turn_id:
            await self.cancel(TurnInfo(id=turn_id, session_id=conversation.id, user_id=conversation.user_id,
                                       status="running"))

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
            except RedisError:
                await asyncio.sleep(1)
