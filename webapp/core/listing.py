"""Lists of a user's conversations: the sidebar (with its pinned and folder groups), the archive, a
folder, search results with their filters; and what acts on a batch of them. A part of
Conversations (conversations.py), kept apart to keep each class small."""

from __future__ import annotations

from dataclasses import dataclass, field

from webapp.base.errors import TooManyInBatch, UndoExpired
from webapp.base.ids import check_id
from webapp.base.models import Conversation
from webapp.core.pagination import format_cursor, parse_cursor
from webapp.core.quota import StorageQuota
from webapp.core.search import SearchIndex, indexable
from webapp.core.shelves import ARCHIVED, MAX_BATCH, SIDEBAR_PER_FOLDER, Folder, Shelves
from webapp.core.turns.writer import TurnWriter
from webapp.storage.store import Store

SEARCH_LIMIT = 30
UNDO_SECONDS = 600  # how long a deleted conversation can be put back


@dataclass
class ConversationList:
    """A page of the session list, or search results (then no further pages). On the sidebar's first
    page, its groups too: the pinned conversations and the folders (shelves.py). `archived` / `folder`:
    the list is the archive's / that folder's."""

    items: list[Conversation]
    next_cursor: str | None = None
    query: str = ""
    cursor: str | None = None
    pinned: list[Conversation] = field(default_factory=list)
    folders: list[Folder] = field(default_factory=list)
    archived: bool = False
    folder: Folder | None = None
    grouped: bool = False  # the sidebar's list: pinned and filed conversations are in their groups, not in it


@dataclass
class SearchFilters:
    archived: bool = False
    pinned: bool = False
    folder: str | None = None


def search_filters(query: str) -> tuple[str, SearchFilters]:
    """The words of a search, and its filters: `in:archived`, `is:pinned`, `folder:name` (a name with spaces in
    quotes: `folder:"my work"`). A bare word is a word: "pinned" alone finds conversations that say it."""
    filters, words = SearchFilters(), []
    rest = query
    while rest.strip():
        rest = rest.lstrip()
        if rest.lower().startswith('folder:"') and '"' in rest[8:]:
            end = rest.index('"', 8)
            filters.folder, rest = rest[8:end], rest[end + 1:]
            continue
        word, _, rest = rest.partition(" ")
        lower = word.lower()
        if lower == "in:archived":
            filters.archived = True
        elif lower == "is:pinned":
            filters.pinned = True
        elif lower.startswith("folder:") and len(word) > 7:
            filters.folder = word[7:]
        else:
            words.append(word)
    return " ".join(words), filters


class ConversationListing:
    """Browse a user's conversations; act on a batch of them."""

    store: Store
    search: SearchIndex
    shelves: Shelves
    writer: TurnWriter
    quota: StorageQuota

    async def browse(self, user_id: str, *, query: str = "", cursor: str | None = None,
                     limit: int = SEARCH_LIMIT, archived: bool = False, folder: str = "",
                     grouped: bool = False) -> ConversationList:
        """Newest activity first, a page at a time after `cursor`; or those matching `query`.

        Archived conversations are only in the archive (`archived`; newest archived first); `folder`: one
        folder's. `grouped` (the sidebar): pinned and filed conversations come on the first page in
        their groups, not in the list. A query may hold filters: `in:archived`, `is:pinned`, `folder:name`."""
        text, filters = search_filters(query)
        archived = archived or filters.archived
        shelf = await self.shelves.folder(user_id, folder) if folder else None
        if filters.folder is not None:
            shelf = await self.shelves.folder_named(user_id, filters.folder) or Folder(id="", name=filters.folder)
        if shelf is not None and not shelf.id:  # `folder:` naming no folder of the user's: nothing is in it
            return ConversationList(items=[], query=query, folder=shelf)
        if text.strip():
            if indexable(text):
                await self.search.flush()  # what this worker has queued, so a search finds it at once
                found = await self.search.search(user_id, text, limit=limit * 3)
            else:  # a single letter says too little for the index: look through the newest ones
                found = await self.store.search_conversations(user_id, text, limit=limit * 3)
            kept = [c for c in found if bool(c.archived) == archived and (not filters.pinned or c.pinned)
                    and (shelf is None or c.folder == shelf.id)]
            return ConversationList(items=kept[:limit], query=query, archived=archived, folder=shelf)
        if filters.pinned:
            page = await self.store.list_shelf(user_id, mode="main", limit=1, groups=1)
            items = [c for c in await self.store.load_conversations(user_id, page.pinned)
                     if shelf is None or c.folder == shelf.id]
            return ConversationList(items=items, query=query, archived=archived, folder=shelf)
        mode = ARCHIVED if archived else "folder" if shelf else "main" if grouped else "all"
        first = cursor is None and grouped and mode == "main"
        page = await self.store.list_shelf(user_id, mode=mode, folder=shelf.id if shelf else "",
                                           cursor=parse_cursor(cursor), limit=limit,
                                           groups=SIDEBAR_PER_FOLDER if first else 0)
        sids = [sid for sid, _ in page.rows]
        grouped_sids = page.pinned + [sid for _, _, _, inside in page.folders for sid in inside]
        loaded = {c.id: c for c in await self.store.load_conversations(user_id, sids + grouped_sids)}
        items = [loaded[sid] for sid in sids if sid in loaded]
        next_cursor = format_cursor(page.rows[-1][::-1]) if page.has_more and page.rows else None
        folders = sorted((Folder(id=fid, name=str(record.get("name", "")), count=count,
                                 items=[loaded[sid] for sid in inside if sid in loaded])
                          for fid, record, count, inside in page.folders), key=lambda f: f.name.casefold())
        return ConversationList(items=items, next_cursor=next_cursor, cursor=cursor, query=query,
                                pinned=[loaded[sid] for sid in page.pinned if sid in loaded], folders=folders,
                                archived=archived, folder=shelf, grouped=grouped and mode == "main")

    async def latest(self, user_id: str) -> Conversation | None:
        """The most recent conversation not archived."""
        page = await self.store.list_shelf(user_id, mode="all", limit=1)
        recent = await self.store.load_conversations(user_id, [sid for sid, _ in page.rows])
        return recent[0] if recent else None

    async def delete_batch(self, user_id: str, session_ids: list[str]) -> list[str]:
        """Delete the user's conversations among `session_ids` (others' and missing ones are skipped),
        each kept for UNDO_SECONDS: the ids deleted, which one undo (`undo_batch`) puts back."""
        if len(session_ids) > MAX_BATCH:
            raise TooManyInBatch(limit=MAX_BATCH)
        sids = [check_id(sid) for sid in dict.fromkeys(session_ids)]
        deleted = []
        for conversation in await self.store.load_conversations(user_id, sids):
            await self.writer.stop_reply(conversation, until_saved=True)
            await self._forget(conversation)
            await self.store.delete_undoably(conversation, keep_seconds=UNDO_SECONDS)
            deleted.append(conversation.id)
        if deleted:
            await self.quota.changed(user_id)
        return deleted

    async def undo_batch(self, user_id: str, session_ids: list[str]) -> list[Conversation]:
        """Put back what a batch deleted (those still kept); UndoExpired when none is."""
        if len(session_ids) > MAX_BATCH:
            raise TooManyInBatch(limit=MAX_BATCH)
        restored = []
        for sid in dict.fromkeys(session_ids):
            try:
                restored.append(await self.undo_delete(user_id, sid))
            except UndoExpired:
                continue
        if not restored:
            raise UndoExpired()
        return restored

    # Conversations' own (conversations.py): a batch does what a single delete and undo do
    async def undo_delete(self, user_id: str, session_id: str) -> Conversation:
        raise NotImplementedError

    async def _forget(self, conversation: Conversation) -> None:
        raise NotImplementedError
