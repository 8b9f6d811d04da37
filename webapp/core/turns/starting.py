"""Starting a turn: ownership, one reply at a time per conversation (the lock), the rate limits, a
repeated request, the plan of a regenerate or an edit, the title and preview a first message gives."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from webapp.base.errors import (
    AttachmentNotFound,
    ConversationFull,
    ImagesNotSupported,
    MessageNotFound,
    NothingToRegenerate,
    SessionNotFound,
    TooManyAttachments,
    TurnRunning,
    VersionLimit,
)
from webapp.base.i18n import Lang
from webapp.base.models import (
    WELCOME,
    Attachment,
    BranchState,
    Conversation,
    Message,
    TurnLock,
    new_id,
    new_message_id,
    now_iso,
)
from webapp.core.attachments import FILE_ID, is_vision_model
from webapp.core.context import build_context, validate_message
from webapp.core.limits import active, refuse_if_over
from webapp.core.roles import Role
from webapp.core.titles import make_preview, make_title
from webapp.core.turns.run import Plan, RepeatedRequest, Started, TurnRun
from webapp.core.turns.writer_state import WriterState
from webapp.core.versions import TooManyVersions, fork
from webapp.storage.keys import TurnRef


class TurnStarting(WriterState):
    """Starting a turn: a part of TurnWriter (writer.py)."""

    async def lock_conversation(self, session_id: str, user_id: str, holder: str, *,
                                hits: list[tuple[str, str, int, int]] | None = None,
                                request_id: str | None = None, budget_month: str = "") -> TurnLock:
        """Take the conversation's lock for `holder` (a turn, or a version switch), checking ownership in the
        same round trip: 404 for a conversation that is not the user's, 409 while another holds it.
        The caller gives it back with store.release_lock(user_id, session_id, holder). A turn's
        `request_id` is claimed in that round trip too: RepeatedRequest when it repeats one."""
        lock = await self.store.lock_turn(user_id, session_id, turn_id=holder, hits=hits or [],
                                          request_id=request_id, budget_month=budget_month)
        if lock.budget is not None and lock.budget[2] and (lock.earlier is not None or not lock.locked
                                                           or lock.meta.get("user_id") != user_id):
            await self.store.release_lane(user_id, holder)  # (a turn that will not start gives its lane back)
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
        client_ip: str = "", *, request_id: str | None = None, attachments: list[str] | None = None,
    ) -> Started:
        """Save the user's message and start generating; `role_id` None keeps the conversation's role.

        Ownership is checked in the same round trip that takes the lock and counts the
        rate (404 for a conversation that is not the user's), so a turn costs no
        separate lookup: two round trips whatever the history length. Files uploaded before
        (`attachments`, their ids) cost one more, and one to read them back for the model.
        """
        text = validate_message(text, self.settings.max_message_chars, with_files=bool(attachments))
        requested = await self.roles.get(user_id, role_id) if role_id else None
        return await self._start(session_id, user_id, lang, client_ip, request_id, requested,
                                 lambda conversation, state: (None, text), attachments=attachments)

    async def regenerate(self, session_id: str, user_id: str, lang: Lang, client_ip: str = "", *,
                         request_id: str | None = None, reply_id: str | None = None) -> Started:
        """A new reply to the last user message; the reply it replaces (if any) stays as a version.

        Also the Retry after an error: when no reply was saved, the same message is answered
        again, never stored twice. `reply_id` (when given) must be the last reply.
        """
        return await self._start(session_id, user_id, lang, client_ip, request_id, None,
                                 self._regenerate_plan(reply_id), fork_last=True)

    async def edit(self, session_id: str, user_id: str, message_id: str, text: str | None, lang: Lang,
                   client_ip: str = "", *, request_id: str | None = None,
                   attachments: list[str] | None = None) -> Started:
        """Edit and resend a user message: its old version and everything after it stay as a version.
        Its files go with it, unless `attachments` (file ids: kept ones and new uploads) says otherwise."""
        # (empty text is refused below, under the lock, unless the message carries files)
        text = validate_message(text, self.settings.max_message_chars,
                                with_files=attachments is None or bool(attachments))
        carried: list[str] = []  # the edited message's files, filled in under the lock (the plan), then attached

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
            if attachments is None:
                carried.extend(a.id for a in edited.attachments)
            if not text and not (attachments or carried):
                validate_message(text, self.settings.max_message_chars)  # (raises: nothing to send)
            return state.index, text

        return await self._start(session_id, user_id, lang, client_ip, request_id, None, plan, locate=locate,
                                 attachments=carried if attachments is None else attachments)

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
        fork_last: bool = False, attachments: list[str] | None = None,
    ) -> Started:
        turn_id = new_id()
        try:
            return await self._start_locked(session_id, user_id, lang, client_ip, requested, plan, turn_id,
                                            locate=locate, fork_last=fork_last, request_id=request_id,
                                            attachments=attachments)
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
        request_id: str | None = None, attachments: list[str] | None = None,
    ) -> Started:
        now = time.time()
        checks = active((self.turns_per_user, user_id), (self.turns_per_ip, client_ip))
        lock = await self.lock_conversation(session_id, user_id, turn_id, request_id=request_id,
                                            hits=[limit.counter(key, now) for limit, key in checks],
                                            budget_month=self.spending.budget_month())
        lane = bool(lock.budget and lock.budget[2])
        try:
            refuse_if_over(checks, lock.counts, now)
            lane = await self.spending.check_start(user_id, turn_id, lock.budget)  # before the model is called
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
            role = requested or (await self.roles.resolve(user_id, conversation.role)).role
            model = conversation.model or role.model
            if attachments:  # refused (unknown, too many, images for a model without vision) before any change
                await self._check_attachments(conversation, attachments, model)
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
            files = await self._attach(conversation, attachments) if attachments else []
            message = Message(id=new_message_id(), role="user", content=text or "", ts=now_iso(),
                              attachments=files) if text or files else None
            conversation.role = role.id
            if message is not None:
                conversation.title = conversation.title or make_title(message.content or files[0].name)
                conversation.preview = make_preview(message.content)
                conversation.message_count += 1
            conversation.updated = time.time()
            conversation.running_turn_id = turn_id
            unarchive = bool(conversation.archived)  # sending in an archived conversation brings it back
            conversation.archived = 0
            context = await self.store.save_turn_start(
                conversation, message, turn_id=turn_id, context_messages=self.settings.context_messages,
                unarchive=unarchive,
            )
            if context is None:  # deleted since the lock was taken: the start wrote nothing
                if fork_index is not None or files:  # (but an edit's branch, or files moved in, came before)
                    await self.store.drop_ownerless(user_id, session_id)
                raise SessionNotFound()
        except BaseException:
            try:
                await self.store.release_lock(user_id, session_id, turn_id)
            finally:
                if lane:
                    await self.store.release_lane(user_id, turn_id)
            raise
        user_message = message or next((m for m in reversed(context) if m.role == "user"), None)
        # the model the user picked for the conversation wins over the role's own, which wins over the default
        vision = is_vision_model(model or self.provider.model, self.settings.openai_vision_models)
        contents = None
        if any(m.attachments for m in context):  # (a turn with none reads nothing more)
            contents = await self.store.file_contents(
                user_id, session_id, [a.id for m in context for a in m.attachments],
                data=vision and any(a.kind == "image" for m in context for a in m.attachments))
        messages = build_context(role, context, self.settings.context_chars, contents, vision=vision)
        run = TurnRun(id=turn_id, conversation=conversation, role=role, lang=lang, user_message=user_message,
                      model=model, first_exchange=message is not None and conversation.message_count == 2,
                      forked=fork_index is not None, asked=message is not None and fork_index is None, lane=lane)
        self.runs[turn_id] = run
        for hook in self.started_hooks:
            hook(run)
        run.task = asyncio.create_task(self._generate(run, messages), name=f"turn-{turn_id}")
        self.metrics.turn_started()
        return Started(id=turn_id, conversation=conversation, user_message=message)

    async def _check_attachments(self, conversation: Conversation, ids: list[str], model: str) -> None:
        """The turn's files exist (uploads, or the conversation's own: an edit keeps them), are not too many,
        and images go only to a model that takes them: checked before the turn changes anything (an edit's
        fork, a file's move), so a refusal leaves the conversation as it was."""
        ids = list(dict.fromkeys(ids))
        if len(ids) > self.settings.max_attachments:
            raise TooManyAttachments(limit=self.settings.max_attachments)
        if not all(FILE_ID.fullmatch(fid) for fid in ids):
            raise AttachmentNotFound()
        files = await self.store.file_records(conversation.user_id, conversation.id, ids)
        if isinstance(files, str):
            raise AttachmentNotFound()
        model = model or self.provider.model
        if any(f.kind == "image" for f in files) and not is_vision_model(model, self.settings.openai_vision_models):
            raise ImagesNotSupported(model=model)

    async def _attach(self, conversation: Conversation, ids: list[str]) -> list[Attachment]:
        """The turn's files (checked: _check_attachments), moved from the user's uploads into the conversation
        (one script)."""
        files = await self.store.attach_files(conversation.user_id, conversation.id, list(dict.fromkeys(ids)))
        if isinstance(files, str):  # (an upload that expired in the moment since the check)
            raise AttachmentNotFound()
        return files

    def _check_room(self, conversation: Conversation) -> None:
        """A conversation at MAX_MESSAGES_PER_CONVERSATION takes no more: nothing a user wrote is trimmed."""
        limit = self.settings.max_messages_per_conversation
        if limit and conversation.message_count + 2 > limit:
            raise ConversationFull(limit=limit)
