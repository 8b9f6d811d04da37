"""Where a user keeps their conversations (issue 37): pinned, archived, in folders; and batches of them.

The rules (docs/organizing.md): at most MAX_PINS pinned, the newest pin on top; pinned and archived
exclude each other (pinning takes a conversation out of the archive, archiving unpins it); an archived
conversation leaves the sidebar and lives as long as the user's data (the index TTL, not the shorter
conversation TTL), and sending in it brings it back (core/turns/starting.py); at most MAX_FOLDERS
folders, a name of 1 to FOLDER_NAME_CHARS characters that no other folder of the user has (compared
case-folded); a conversation is in at most one folder; deleting a folder keeps its conversations.
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from webapp.base.errors import (
    BadFolderName,
    FolderNameTaken,
    FolderNotFound,
    TooManyFolders,
    TooManyInBatch,
    TooManyPins,
)
from webapp.base.ids import check_id
from webapp.base.models import Conversation, new_id
from webapp.core.context import check_text
from webapp.storage.store import Store

MAX_PINS = 100
MAX_FOLDERS = 50
FOLDER_NAME_CHARS = 40
SIDEBAR_PER_FOLDER = 5  # each folder in the sidebar shows its newest few; its own view lists them all
MAX_BATCH = 200  # conversations one batch action takes

PINNED, ARCHIVED, FOLDER = "pinned", "archived", "folder"


@dataclass
class Folder:
    """A user's folder as the sidebar shows it: its newest conversations and how many it holds."""

    id: str
    name: str
    count: int = 0
    items: list[Conversation] = field(default_factory=list)


def folder_name(name: str) -> str:
    """A folder's name as kept: NFC, control and format characters (NUL, ESC, RTL overrides, zero-width
    spaces) dropped, whitespace collapsed; BadFolderName when nothing visible is left or too long."""
    text = unicodedata.normalize("NFC", check_text(name))
    clean = " ".join("".join(char for char in text if unicodedata.category(char) not in ("Cc", "Cf")
                             or char in "\t\n\r").split())
    if not clean or len(clean) > FOLDER_NAME_CHARS:
        raise BadFolderName(limit=FOLDER_NAME_CHARS)
    return clean


def check_folder_id(value: str) -> str:
    """A folder id has a conversation id's shape (a UUID4 the app made): InvalidId otherwise."""
    return check_id(value)


class Shelves:
    """Pin, archive, file conversations and keep a user's folders; the rules above, the commands in
    storage/organization.py."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def keep(self, user_id: str, session_ids: list[str], what: str, on: bool | str) -> list[str]:
        """Pin (`what` PINNED), archive (ARCHIVED) or file into a folder (FOLDER, `on` its id; "" for none)
        the user's conversations `session_ids`, or undo it (`on` False): each atomically, all in one round
        trip. Another's or a missing conversation is skipped (routes of one conversation check ownership
        first: OwnedConversation). The ids of those changed (what a batch's undo takes)."""
        if len(session_ids) > MAX_BATCH:
            raise TooManyInBatch(limit=MAX_BATCH)
        sids = [check_id(sid) for sid in dict.fromkeys(session_ids)]
        if what == FOLDER:
            value = check_folder_id(on) if isinstance(on, str) and on else ""
        else:
            value = repr(time.time() * 1000) if on else ""
        outcomes = await self.store.shelve(user_id, sids, what, value, max_pins=MAX_PINS)
        if -3 in outcomes:
            raise FolderNotFound()
        if -1 in outcomes:
            raise TooManyPins(limit=MAX_PINS)
        return [sid for sid, outcome in zip(sids, outcomes) if outcome == 1]

    async def folders(self, user_id: str) -> list[Folder]:
        """The user's folders, by name."""
        found = await self.store.folders_of(user_id)
        return sorted((Folder(id=fid, name=str(record.get("name", ""))) for fid, record in found.items()),
                      key=lambda folder: folder.name.casefold())

    async def folder(self, user_id: str, folder_id: str) -> Folder:
        found = (await self.store.folders_of(user_id)).get(check_folder_id(folder_id))
        if found is None:
            raise FolderNotFound()
        return Folder(id=folder_id, name=str(found.get("name", "")))

    async def folder_named(self, user_id: str, name: str) -> Folder | None:
        """The user's folder of that name (case-folded), if any: the search's `folder:name`."""
        key = " ".join(name.split()).casefold()
        return next((f for f in await self.folders(user_id) if f.name.casefold() == key), None)

    async def create_folder(self, user_id: str, name: str) -> Folder:
        clean = folder_name(name)
        folder = Folder(id=new_id(), name=clean)
        await self._write(user_id, folder, new=True)
        return folder

    async def rename_folder(self, user_id: str, folder_id: str, name: str) -> Folder:
        folder = Folder(id=check_folder_id(folder_id), name=folder_name(name))
        await self._write(user_id, folder, new=False)
        return folder

    async def _write(self, user_id: str, folder: Folder, *, new: bool) -> None:
        record: dict[str, Any] = {"name": folder.name, "key": folder.name.casefold(), "created": time.time()}
        outcome = await self.store.write_folder(user_id, folder.id, record, new=new, max_folders=MAX_FOLDERS)
        if outcome == -1:
            raise FolderNameTaken()
        if outcome == -2:
            raise TooManyFolders(limit=MAX_FOLDERS)
        if outcome == 0:
            raise FolderNotFound()

    async def delete_folder(self, user_id: str, folder_id: str) -> None:
        """Delete a folder; its conversations stay (in no folder)."""
        if not await self.store.delete_folder(user_id, check_folder_id(folder_id)):
            raise FolderNotFound()
