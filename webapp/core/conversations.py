"""Conversations: the one home of their rules, for pages, the JSON API and the seed API alike.

Routes read their input, call one method here, and render what it returns. The rules:
every conversation starts with the welcome message; before a user's first one exists,
the home page shows a draft that is stored nowhere, and its first send creates the
conversation (a visit by a crawler or curl writes nothing); "new chat" reuses the newest
conversation while it is untouched (no piles of empty ones); only the owner ever sees
a conversation (someone else's looks exactly like a missing one); a deleted
conversation stops its reply first; what a conversation pane offers after a reply
(nothing, Retry, or "send again" when no reply came) follows from its last messages.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from webapp.base.errors import (
    EmptyTitle,
    MessageNotFound,
    NoSuchVersion,
    SessionNotFound,
    TooManyConversations,
    UndoExpired,
    UnknownModel,
    VersionLimit,
)
from webapp.base.i18n import Lang, t
from webapp.base.ids import check_id
from webapp.base.models import (
    WELCOME,
    Conversation,
    Creation,
    Message,
    TurnEvent,
    mark_welcome,
    new_id,
    new_message_id,
    now_iso,
)
from webapp.core.context import check_text, validate_message
from webapp.core.limits import Limit, refuse_if_over
from webapp.core.quota import StorageQuota
from webapp.core.roles import Role, RoleBook, role_or_default
from webapp.core.listing import SEARCH_LIMIT, UNDO_SECONDS, ConversationList, ConversationListing
from webapp.core.search import SearchIndex
from webapp.core.shelves import ARCHIVED, FOLDER, PINNED, Shelves
from webapp.core.sharing import share_digest
from webapp.core.titles import clean_title, make_preview
from webapp.core.turns.reader import TurnReader
from webapp.core.turns.run import SavedReply, Started
from webapp.core.turns.writer import TurnWriter
from webapp.core.versions import TooManyVersions, parse_label, switch
from webapp.storage.store import Store

DRAFT_ID = "new"  # stands for the draft's id in its forms' paths (/c/new/messages): it is no conversation's
_FIRST_SEND = uuid.UUID("5d0f1c2e-8a4b-4f51-9c7e-2b6f3a1d9e40")  # namespace of ids made from a first send


@dataclass
class Streaming:
    """A reply still being written when a page is rendered: follow it from `after`."""

    turn_id: str
    after: int
    text: str


@dataclass
class ConversationView:
    """What a conversation pane shows: a page of messages, the reply being written, what to offer."""

    conversation: Conversation
    role: Role
    messages: list[Message]
    first_index: int
    streaming: Streaming | None = None
    no_reply_text: str = ""  # the last message got no reply: offer to send it again
    retry_text: str = ""  # the last reply failed or was stopped: offer Retry with this text
    retry_for: str = ""  # ...for this reply
    is_empty: bool = False  # nothing written by the user yet: the page shows suggestions
    latest: bool = True  # the newest page (not one scrolled back to)
    versions: dict[int, tuple[int, int]] = field(default_factory=dict)  # list index -> (shown, count)
    role_missing: bool = False  # its custom role was deleted: it answers as the default role now


@dataclass
class FirstSend:
    """The draft's first send (Conversations.start_first): the turn it started, and what the page
    shows next when this request made the conversation (nothing to read back)."""

    started: Started
    pane: ConversationView | None  # the new conversation's pane; None when it was made before (a repeat)
    only_one: bool  # the new conversation is its owner's only one: the sidebar's list is it alone


@dataclass
class TurnOutcome:
    """How a finished turn ends in the page: its saved reply, or what went wrong, with Retry."""

    reply: Message | None
    error_text: str
    retry_text: str
    reply_index: int = 0
    versions: dict[int, tuple[int, int]] = field(default_factory=dict)
    conversation: Conversation | None = None  # as the turn left it (the sidebar's item); None if deleted


async def write_new(store: Store, conversation: Conversation, welcome: Message, *, max_per_user: int, rate: Limit,
                    quota: StorageQuota, now: float) -> Creation:
    """Write a new conversation in the one script that also checks the owner's count, creation rate and
    storage (storage/conversations.py): RateLimited or StorageFull when one is passed. A "full" figure is
    measured afresh before it refuses (and the write tried once more when there is room now)."""
    user_id = conversation.user_id
    for _ in range(2):
        creation = await store.create_conversation(
            conversation, welcome, limit=max_per_user,
            rate=(rate.counter(user_id, now), rate.per_window, rate.weight_of_previous(now)), quota=quota.quota_bytes)
        if not creation.storage_full:
            break
        await quota.check_room(user_id)
    if creation.storage_used is None and creation.earlier:
        # (a user's first conversation is all they have, a welcome message: nothing to measure yet; the
        # next creation measures, so what goes unmeasured is one conversation at most)
        quota.measure_soon(user_id)
    if creation.storage_full:
        quota.refuse_full(creation.storage_used or 0)
    if creation.rate_limited:  # (the script took the refused one back: it made nothing)
        refuse_if_over([(rate, user_id)], [creation.rate_counts], now, counted=False)
    return creation


class Conversations(ConversationListing):
    """Create, find, change and delete a user's conversations; build what their pages show."""

    def __init__(self, store: Store, writer: TurnWriter, reader: TurnReader, max_per_user: int = 0,
                 search: SearchIndex | None = None, per_minute: int = 0, quota: StorageQuota | None = None) -> None:
        self.store = store
        self.writer = writer
        self.reader = reader
        self.max_per_user = max_per_user
        # conversations made per user per minute (CONVERSATIONS_PER_MINUTE), counted in the creating script
        self.made_per_minute = Limit("conversations-user", per_minute, 60)
        self.quota = quota or StorageQuota(store, 0)
        self.roles: RoleBook = writer.roles
        self.search = search or SearchIndex(store)
        self.shelves = Shelves(store)

    # finding ------------------------------------------------------------

    async def owned(self, session_id: str, user_id: str) -> Conversation:
        """The conversation if the user owns it; 404 for an unknown one and someone else's alike."""
        conversation = await self.store.get_conversation(user_id, check_id(session_id))
        if conversation is None:
            raise SessionNotFound()
        return conversation

    async def of_message(self, message_id: str, user_id: str) -> Conversation:
        """The conversation of a user message, if the user owns it; 404 otherwise."""
        session_id = await self.store.session_of_message(user_id, message_id) if message_id.startswith("m_") else None
        if session_id is None:
            raise MessageNotFound()
        return await self.owned(session_id, user_id)

    async def versions_of(self, conversation: Conversation) -> dict[int, tuple[int, int]]:
        """(shown, count) by list index, where a message has versions."""
        return _versions(await self.store.version_labels(conversation))

    async def switch_version(self, conversation: Conversation, index: int, version: int) -> Conversation:
        """Show version `version` (1-based) of the message at list `index`; later turns see that branch."""
        holder = "switch-" + new_id()
        await self.writer.lock_conversation(conversation.id, conversation.user_id, holder)
        try:
            state = await self.store.read_branch(conversation, index)
            if index not in state.forks:
                raise NoSuchVersion()
            try:
                change = switch(state, version - 1)
            except IndexError:
                raise NoSuchVersion() from None
            except TooManyVersions:
                raise VersionLimit() from None
            if change is not None:
                last = Message.from_json(change.messages[-1]) if change.messages else \
                    await self.store.message_at(conversation, index - 1)
                await self.store.write_branch(conversation, change, preview=make_preview(last.content) if last else "")
        finally:
            await self.store.release_lock(conversation.user_id, conversation.id, holder)
        return await self.store.get_conversation(conversation.user_id, conversation.id) or conversation

    async def user_message_at(self, conversation: Conversation, index: int) -> Message:
        """The user message at list `index` of the active branch (what an edit form starts from)."""
        message = await self.store.message_at(conversation, index)
        if message is None or message.role != "user":
            raise MessageNotFound()
        return message

    async def message_page(self, conversation: Conversation, *, limit: int,
                           before: int | None = None) -> tuple[list[Message], int, int]:
        """Messages ending just before list index `before` (default: the newest): (messages, first index, total)."""
        messages, first_index, total = await self.store.message_page(conversation, limit=limit, before=before)
        return mark_welcome(messages, first_index), first_index, total

    async def history(self, conversation: Conversation) -> list[Message]:
        """Every message, oldest first (the seed's /chat/history)."""
        return mark_welcome(await self.store.all_messages(conversation), 0)

    # creating -----------------------------------------------------------

    async def create(self, user_id: str, *, role_id: str | None = None, title: str = "") -> Conversation:
        """A new conversation with its welcome message (stored in the seed's Chinese, shown in the reader's language)."""
        conversation, _, _ = await self._create(user_id, await self.roles.get(user_id, role_id), title=title)
        return conversation

    async def _create(self, user_id: str, role: Role, *, title: str = "",
                      conversation_id: str | None = None) -> tuple[Conversation, Message, Creation]:
        """The new conversation and its welcome as written, and what the store did. When
        `conversation_id` existed already (`Creation.existed`) nothing was written, and of what
        comes back only the id is true; TooManyConversations at the limit."""
        now = time.time()
        welcome = Message(id=new_message_id(), role="assistant", content=t("welcome", "zh"), ts=now_iso(),
                          kind=WELCOME)
        conversation = Conversation(
            id=conversation_id or new_id(), user_id=user_id, title=clean_title(check_text(title)),
            preview=make_preview(welcome.content),
            role=role.id, message_count=1, created=now, updated=now, title_by="user" if title.strip() else "",
        )
        creation = await write_new(self.store, conversation, welcome, max_per_user=self.max_per_user,
                                   rate=self.made_per_minute, quota=self.quota, now=now)
        if not creation.written and not creation.existed:
            raise TooManyConversations(limit=self.max_per_user)
        if creation.written and conversation.title:
            self.search.add(conversation, conversation.title)
        return conversation, welcome, creation

    def draft(self, user_id: str) -> ConversationView:
        """What the home page shows before a user has a conversation: a new one's pane (the welcome
        message, the suggestions), stored nowhere. Its forms post to /c/new/...: the first send
        (`start_first`) or a choice of role creates the conversation."""
        role = role_or_default(None)
        now = time.time()
        welcome = Message(id=new_message_id(), role="assistant", content=t("welcome", "zh"), ts=now_iso(),
                          kind=WELCOME)
        conversation = Conversation(id=DRAFT_ID, user_id=user_id, title="", preview="", role=role.id,
                                    message_count=1, created=now, updated=now)
        return ConversationView(conversation=conversation, role=role, messages=[welcome], first_index=0,
                                is_empty=True)

    async def start_first(self, user_id: str, text: str | None, lang: Lang, client_ip: str = "", *,
                          request_id: str | None = None, attachments: list[str] | None = None) -> FirstSend:
        """The draft's first send: create the conversation, then start its turn.

        A message the writer would refuse (empty, too long) creates nothing. With a request id the
        conversation's id is made from it, so the same form sent twice (a double click without
        JavaScript) finds the conversation the first one made, and the writer answers the repeat
        as a repeat instead of a second conversation being made. (Conversations are filed under
        their owner: no one else's is ever found.)

        What this request wrote is all the new conversation's pane shows, so it comes back with
        the turn (FirstSend.pane) rather than read back: a first send costs three round trips.
        """
        validate_message(text, self.writer.settings.max_message_chars, with_files=bool(attachments))
        conversation_id = str(uuid.uuid5(_FIRST_SEND, f"{user_id}:{request_id}")) if request_id else None
        role = role_or_default(None)
        conversation, welcome, creation = await self._create(user_id, role, conversation_id=conversation_id)
        run = await self.writer.start_turn(conversation.id, user_id, text, None, lang, client_ip,
                                           request_id=request_id, attachments=attachments)
        pane = None
        if creation.written and not run.duplicate and run.user_message is not None:
            pane = ConversationView(conversation=run.conversation, role=role, first_index=0,
                                    messages=[welcome, run.user_message],
                                    streaming=Streaming(turn_id=run.id, after=0, text=""))
        return FirstSend(started=run, pane=pane, only_one=creation.written and creation.earlier == 0)

    async def listed_after_first(self, first: FirstSend, query: str = "") -> ConversationList:
        """The sidebar's list (or search results) once the first send has made its conversation:
        the owner's only one needs no lookup."""
        conversation = first.started.conversation
        if first.only_one and not query.strip():
            return ConversationList(items=[conversation])
        return await self.browse(conversation.user_id, query=query, limit=SEARCH_LIMIT, grouped=True)

    async def first_with_role(self, user_id: str, role_id: str) -> Conversation:
        """The draft's role chosen: the conversation it stands for, made now with that role (an
        untouched newest one, e.g. from a second click, is reused)."""
        await self.roles.get(user_id, role_id)  # an unknown role is refused before anything is made
        return await self.update(await self.fresh(user_id), role_id=role_id)

    async def latest_or_new(self, user_id: str) -> Conversation:
        """What the home page opens: the most recent conversation, or a new one."""
        return await self.latest(user_id) or await self.create(user_id)

    async def fresh(self, user_id: str) -> Conversation:
        """"New chat": a new conversation, unless the newest one is still untouched; then that one."""
        latest = await self.latest(user_id)
        if latest is not None and latest.untouched:
            return latest
        return await self.create(user_id)

    # changing -----------------------------------------------------------

    async def update(self, conversation: Conversation, *, title: str | None = None,
                     role_id: str | None = None, model: str | None = None, pinned: bool | None = None,
                     archived: bool | None = None, folder_id: str | None = None) -> Conversation:
        """Rename, switch the role and/or the model ("" = back to the role's or the app's); a title
        that is empty once cleaned is refused. A rename is the user's: no generated title replaces it.
        Pin, archive, move into a folder (`folder_id`; "": out of any), as shelves.py rules, before
        anything else is written (a refusal there leaves the rest unchanged)."""
        clean = clean_title(check_text(title)) if title is not None else None
        if clean is not None and not clean:
            raise EmptyTitle()
        role = (await self.roles.get(conversation.user_id, role_id)).id if role_id is not None else None
        if model is not None and model and model not in await self.writer.provider.models():
            raise UnknownModel()
        shelved = False
        for what, on in ((ARCHIVED, archived), (PINNED, pinned), (FOLDER, folder_id)):
            if on is not None:
                await self.shelves.keep(conversation.user_id, [conversation.id], what, on)
                shelved = True
        if shelved:
            conversation = await self.owned(conversation.id, conversation.user_id)
        await self.store.update_conversation(conversation, title=None, role=role)
        if clean is not None:
            await self.store.rename_conversation(conversation, clean)
            conversation.title, conversation.title_by = clean, "user"
            self.search.add(conversation, clean)
        if role is not None:
            conversation.role = role
        if model is not None:
            await self.store.set_conversation_model(conversation, model)
            conversation.model = model
        return conversation

    async def models(self) -> list[str]:
        """The models a conversation may be switched to, the default first."""
        return await self.writer.provider.models()

    async def delete(self, conversation: Conversation) -> None:
        """Delete for good; a reply still being written is stopped first."""
        await self.writer.stop_reply(conversation, until_saved=True)
        await self.store.delete_conversation(conversation)
        await self._forget(conversation)  # (after: terms queued meanwhile find no conversation to index)
        await self.quota.changed(conversation.user_id)  # (room made: a "full" figure is measured again)

    async def delete_undoably(self, conversation: Conversation) -> None:
        """Delete, keeping a copy for UNDO_SECONDS so the web UI's Undo can put it back."""
        await self.writer.stop_reply(conversation, until_saved=True)
        await self.store.delete_undoably(conversation, keep_seconds=UNDO_SECONDS)
        await self._forget(conversation)
        await self.quota.changed(conversation.user_id)

    async def _forget(self, conversation: Conversation) -> None:
        """What a deleted conversation leaves elsewhere: its read-only link and its search entries."""

        await self.store.remove_share(conversation.user_id, conversation.id, share_digest)
        await self.search.remove(conversation)

    async def undo_delete(self, user_id: str, session_id: str) -> Conversation:
        conversation = await self.store.undo_delete(user_id, check_id(session_id))
        if conversation is None:
            raise UndoExpired()
        await self.search.index_now(conversation, await self.store.all_messages(conversation))
        return conversation

    async def after_deleting(self, user_id: str) -> Conversation:
        """What opens when the open conversation was deleted: the next most recent, or a fresh one."""
        return await self.latest_or_new(user_id)

    # what pages show ----------------------------------------------------

    async def view(self, conversation: Conversation, *, limit: int, before: int | None = None) -> ConversationView:
        """The latest page of messages (or the page before `before`), the reply still being written,
        and what to offer after the last message."""
        messages, first_index, _ = await self.message_page(conversation, limit=limit, before=before)
        streaming = None
        if conversation.running_turn_id and before is None:
            text, seq, finished = await self.reader.progress(conversation.user_id, conversation.running_turn_id)
            # the save's MULTI writes the reply and clears the metadata's running turn at once, and the run on
            # this worker hears of it a step later: the metadata read after the messages says whether they hold it
            current = await self.store.get_conversation(conversation.user_id, conversation.id)
            if finished or current is None or current.running_turn_id != conversation.running_turn_id:
                # it ended between reading the metadata and now: show the saved reply
                conversation = current or conversation
                messages, first_index, _ = await self.message_page(conversation, limit=limit)
            else:
                streaming = Streaming(turn_id=conversation.running_turn_id, after=seq, text=text)
        resolved = await self.roles.resolve(conversation.user_id, conversation.role)
        view = ConversationView(conversation=conversation, role=resolved.role, role_missing=resolved.missing,
                                messages=messages, first_index=first_index, streaming=streaming,
                                versions=await self.versions_of(conversation), latest=before is None)
        view.is_empty = before is None and streaming is None and not any(m.role == "user" for m in messages)
        if before is None and streaming is None and messages:
            last = messages[-1]
            if last.role == "user":
                view.no_reply_text = last.content
            elif last.status != "complete" and len(messages) > 1 and messages[-2].role == "user":
                view.retry_text, view.retry_for = messages[-2].content, last.id
        return view

    async def turn_outcome(self, user_id: str, session_id: str, turn_id: str, final: TurnEvent | None,
                           lang: str, saved: SavedReply | None = None) -> TurnOutcome:
        """The bubble that replaces a streaming one: the saved reply, or the error (or "stopped") with Retry,
        and the conversation as the turn left it (None if it was deleted meanwhile), all read at once.

        `saved`: the reply as this worker's writer saved it, when the reader followed it here. A reply
        that starts no new version then needs no read: it is the last message, with no versions, and
        the conversation is as the save left it (every web UI turn ends here: issue 19)."""
        if (saved is not None and not saved.forked and final is not None and final.type == "end"
                and final.message_id == saved.reply.id):
            before = saved.before
            return TurnOutcome(reply=saved.reply, error_text="", reply_index=saved.index,
                               retry_text=before.content if before else "", conversation=saved.conversation)
        message_id = await self.reader.saved_reply_id(user_id, turn_id, final)
        messages, first_index, labels, fresh = await self.store.turn_end_state(user_id, session_id, tail=4)
        reply = next((m for m in messages if message_id and m.id == message_id), None)
        last_user = next((m for m in reversed(messages) if m.role == "user"), None)
        if final is not None and final.type == "error":
            error_text = final.content
        elif reply is None:
            error_text = t("ui.stopped" if final is not None else "ui.no_reply", lang)  # type: ignore[arg-type]
        else:
            error_text = ""
        reply_index = first_index + messages.index(reply) if reply is not None else 0
        return TurnOutcome(reply=reply, error_text=error_text, retry_text=last_user.content if last_user else "",
                           reply_index=reply_index, versions=_versions(labels), conversation=fresh)


def _versions(labels: dict[int, str]) -> dict[int, tuple[int, int]]:
    return {index: parse_label(label) for index, label in labels.items()}

