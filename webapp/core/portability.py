"""Export and import: a conversation as Markdown or JSON, and all of a user's data as one JSON file.

An export holds each conversation's active branch (the versions kept aside by regenerate
and edit are not part of it), the user's own roles, and what each reply was answered by.
Importing that file gives the caller new conversations with new ids, whoever exported it:
nothing of anyone else is touched, and ids in the file are only used to link a
conversation to a role of the same file. The file is validated as a whole (export_format.
ExportFile) and checked against the caller's limits before anything is written, so an
import is all or nothing as far as validation and limits go.

Attachments travel in the JSON file: a conversation's `files` (each record with its bytes in base64,
`data`, and a document's text) and a message's `attachments` (their ids). An import checks them again
(an image must be the JPEG or PNG the app stores), and their size counts as the file's.
"""

from __future__ import annotations

import base64
import time
from datetime import datetime, timezone
from typing import Any

import orjson

from webapp.base.errors import ImportsLimited, ImportTooBig, InvalidImport
from webapp.base.i18n import Lang, t
from webapp.base.ids import check_id
from webapp.base.models import WELCOME, Attachment, Conversation, Message, Usage, new_id, new_message_id
from webapp.core.attachments import clean_name
from webapp.core.export_format import ExportAttachment, ExportConversation, ExportFile
from webapp.core.limits import Limit, Limits
from webapp.core.quota import StorageQuota
from webapp.core.roles import BUILTIN_ROLES, DEFAULT_ROLE, RoleBook, answered_by, custom_role
from webapp.core.search import SearchIndex, terms_of
from webapp.core.shelves import MAX_FOLDERS, MAX_PINS, Shelves, folder_name
from webapp.core.titles import clean_title, make_preview
from webapp.storage.store import Store

FORMAT = "chat-export"
VERSION = 1


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


def message_record(message: Message) -> dict[str, Any]:
    record = {"role": message.role, "content": message.content, "ts": message.ts, "status": message.status,
              "kind": message.kind, "role_id": message.role_id, "role_name": message.role_name,
              "model": message.model}
    if message.usage:
        record["usage"] = {"input_tokens": message.usage.input_tokens, "output_tokens": message.usage.output_tokens,
                           "estimated": message.usage.estimated, "ttft_ms": message.usage.ttft_ms,
                           "duration_ms": message.usage.duration_ms}
    if message.attachments:
        record["attachments"] = [a.id for a in message.attachments]
    return record


def conversation_record(conversation: Conversation, messages: list[Message],
                        folder_names: dict[str, str] | None = None, files: dict[str, str] | None = None) -> dict[str, Any]:
    """A conversation in the file; where the user kept it (pinned, archived, its folder by name: folder
    ids are the exporter's) too; its files (the files hash, storage/attachments.py) as records with their
    bytes in base64 (`data`) and a document's text."""
    record = {"id": conversation.id, "title": conversation.title, "role": conversation.role,
              "model": conversation.model, "created_at": _iso(conversation.created),
              "updated_at": _iso(conversation.updated), "messages": [message_record(m) for m in messages]}
    if conversation.pinned:
        record["pinned"] = True
    if conversation.archived:
        record["archived"] = True
    if folder_names and conversation.folder in folder_names:
        record["folder"] = folder_names[conversation.folder]
    if files:
        record["files"] = [{**orjson.loads(raw), "data": files.get(fid + ":d", ""), "text": files.get(fid + ":t", "")}
                           for fid, raw in files.items() if ":" not in fid]
    return record


def imported_files(files: list[ExportAttachment]) -> tuple[dict[str, Attachment], dict[str, str]]:
    """A file's records as the files hash holds them, checked again: an image must be the JPEG or PNG the app
    stores (an export can be edited), anything else is served as a download."""
    records: dict[str, Attachment] = {}
    stored: dict[str, str] = {}
    for item in files:
        head = base64.b64decode(item.data[:16] + "=" * (-len(item.data[:16]) % 4))
        if item.kind == "image":
            kind_type = "image/png" if head.startswith(b"\x89PNG") else "image/jpeg" if head.startswith(b"\xff\xd8") else ""
            if not kind_type:
                raise InvalidImport()
        else:
            kind_type = "application/pdf" if item.kind == "pdf" else "text/plain; charset=utf-8"
        record = Attachment(id=item.id, name=clean_name(item.name), kind=item.kind, type=kind_type,
                            size=len(item.data) * 3 // 4, width=item.width, height=item.height, chars=item.chars,
                            kept=item.kept, pages=item.pages, read=item.read)
        records[item.id] = record
        stored.update({item.id: orjson.dumps(record.to_dict()).decode(), item.id + ":d": item.data,
                       item.id + ":t": item.text})
    return records, stored


def to_markdown(conversation: Conversation, messages: list[Message], role_name: str, lang: Lang) -> str:
    title = conversation.title or t("ui.untitled", lang)
    lines = [f"# {title}", "", f"- {t('ui.role', lang)}: {role_name}"]
    if conversation.model:
        lines.append(f"- {t('ui.model', lang)}: {conversation.model}")
    lines.append(f"- {t('ui.exported', lang)}: {_iso(datetime.now(timezone.utc).timestamp())}")
    for message in messages:
        who = t("ui.you", lang) if message.role == "user" else answered_by(message, lang)
        text = t("welcome", lang) if message.kind == WELCOME else message.content
        lines += ["", "---", "", f"**{who}** · {message.ts}", "", text]
        lines += [f"- 📎 {a.name}" for a in message.attachments]
        if message.status != "complete":
            lines += ["", f"*({message.status})*"]
    return "\n".join(lines) + "\n"


class Portability:
    def __init__(self, store: Store, roles: RoleBook, search: SearchIndex, *, max_conversations: int,
                 max_messages: int, models: Any, limits: Limits | None = None, imports_per_hour: int = 0,
                 import_bytes_per_hour: int = 0, max_message_chars: int = 0,
                 quota: StorageQuota | None = None) -> None:
        self.store = store
        self.roles = roles
        self.search = search
        self.max_conversations = max_conversations
        self.max_messages = max_messages
        self.max_message_chars = max_message_chars  # MAX_IMPORT_MESSAGE_CHARS (0: the file format's own)
        self.models = models  # async () -> the models offered
        self.limits = limits or Limits(store)
        self.quota = quota or StorageQuota(store, 0)
        self.shelves = Shelves(store)
        hour = 3600
        self.imports_per_hour = Limit("imports-user", imports_per_hour, hour, ImportsLimited)
        # counted in kilobytes: a sliding window's counts stay under a million (storage/base.py COUNT_HIT)
        self.import_kb_per_hour = Limit("import-kb-user", -(-import_bytes_per_hour // 1024), hour, ImportsLimited)

    async def conversation(self, conversation: Conversation) -> dict[str, Any]:
        messages = await self.store.all_messages(conversation)
        files = await self.store.all_files(conversation.user_id, conversation.id)
        return {"format": "chat-conversation", "version": VERSION,
                **conversation_record(conversation, messages, files)}

    async def markdown(self, conversation: Conversation, lang: Lang) -> str:
        resolved = await self.roles.resolve(conversation.user_id, conversation.role)
        return to_markdown(conversation, await self.store.all_messages(conversation), resolved.role.name(lang), lang)

    async def everything(self, user_id: str, session_ids: list[str] | None = None) -> dict[str, Any]:
        """All of the user's data; or (`session_ids`: a batch export) those conversations, with the roles
        and folders."""
        roles = [{"id": r.id, "name": r.name_zh, "description": r.description_zh, "system_prompt": r.system_prompt,
                  "model": r.model, "temperature": r.temperature} for r in await self.roles.own(user_id)]
        folder_names = {fid: str(record.get("name", ""))
                        for fid, record in (await self.store.folders_of(user_id)).items()}
        conversations = []
        sids = [check_id(sid) for sid in dict.fromkeys(session_ids)] if session_ids is not None else \
            await self.store.session_ids(user_id)
        for start in range(0, len(sids), 50):
            for conversation in await self.store.load_conversations(user_id, sids[start : start + 50]):
                conversations.append(conversation_record(conversation, await self.store.all_messages(conversation),
                                                         folder_names,
                                                         await self.store.all_files(user_id, conversation.id)))
        conversations.sort(key=lambda c: c["updated_at"])  # oldest first: importing keeps the order
        return {"format": FORMAT, "version": VERSION, "exported_at": _iso(datetime.now(timezone.utc).timestamp()),
                "roles": roles, "folders": [{"name": name} for name in sorted(folder_names.values())],
                "conversations": conversations}

    async def import_(self, user_id: str, data: ExportFile, size: int = 0) -> tuple[list[str], int]:
        """Write the file's roles and conversations as the caller's, with new ids: (conversation ids, roles).
        `size`: the file's bytes, counted toward IMPORT_BYTES_PER_HOUR (with IMPORTS_PER_HOUR) once the file
        is known to fit every other limit; nothing is written when it does not."""
        if self.max_message_chars and any(len(message.content) > self.max_message_chars
                                          for conversation in data.conversations for message in conversation.messages):
            raise ImportTooBig(what="characters per message", limit=self.max_message_chars)
        existing_roles = await self.roles.own(user_id)
        if self.roles.max_per_user and len(existing_roles) + len(data.roles) > self.roles.max_per_user:
            raise ImportTooBig(what="roles", limit=self.roles.max_per_user)
        if self.max_conversations and (await self.store.count_conversations(user_id) + len(data.conversations)
                                       > self.max_conversations):
            raise ImportTooBig(what="conversations", limit=self.max_conversations)
        too_long = next((c for c in data.conversations if self.max_messages and len(c.messages) > self.max_messages),
                        None)
        if too_long is not None:
            raise ImportTooBig(what="messages", limit=self.max_messages)
        folders = await self._folders_for(user_id, data)
        await self.quota.check_room(user_id, adding=size)
        kilobytes = max(1, -(-size // 1024))
        await self.limits.hit((self.imports_per_hour, user_id), (self.import_kb_per_hour, user_id),
                              amounts=(1, kilobytes), refund_refused=True)  # (refused: nothing imported)
        offered = set(await self.models())
        new_role_ids: dict[str, str] = {}
        for item in data.roles:
            role = custom_role(item.name.strip(), item.description.strip(), item.system_prompt,
                               item.model if item.model in offered else "", item.temperature)
            await self.roles.create(user_id, role)
            new_role_ids[item.id] = role.id
        for key, (name, fid) in folders.items():
            if fid is None:
                folders[key] = (name, (await self.shelves.create_folder(user_id, name)).id)
        pins = MAX_PINS - len((await self.store.list_shelf(user_id, mode="main", limit=1, groups=1)).pinned)
        ids = []
        for record in data.conversations:
            pinned = record.pinned and not record.archived and pins > 0
            pins -= pinned
            folder = folders[folder_name(record.folder).casefold()][1] or "" if record.folder else ""
            ids.append(await self._import_conversation(user_id, record, new_role_ids, offered, folder, pinned))
        await self.quota.changed(user_id)
        return ids, len(data.roles)

    async def _folders_for(self, user_id: str, data: ExportFile) -> dict[str, tuple[str, str | None]]:
        """The file's folders by case-folded name: (the name, the caller's folder of that name or None: made
        by the import); BadFolderName for a blank one, ImportTooBig when they would be more than
        MAX_FOLDERS: checked before anything is written. (Over MAX_PINS, the rest come unpinned.)"""
        names = [folder_name(f.name) for f in data.folders] + [folder_name(c.folder) for c in data.conversations
                                                                if c.folder]
        existing = {f.name.casefold(): f.id for f in await self.shelves.folders(user_id)}
        found: dict[str, tuple[str, str | None]] = {}
        for name in names:
            found.setdefault(name.casefold(), (name, existing.get(name.casefold())))
        if len(existing) + sum(1 for _, fid in found.values() if fid is None) > MAX_FOLDERS:
            raise ImportTooBig(what="folders", limit=MAX_FOLDERS)
        return found

    async def _import_conversation(self, user_id: str, item: ExportConversation, new_role_ids: dict[str, str],
                                   offered: set[str], folder: str = "", pinned: bool = False) -> str:
        messages = []
        files, stored = imported_files(item.files)
        for record in item.messages:
            role_id = new_role_ids.get(record.role_id, record.role_id if record.role_id in BUILTIN_ROLES else "")
            messages.append(Message(id=new_message_id(), role=record.role, content=record.content, ts=record.ts,
                                    status=record.status, kind=record.kind, role_id=role_id,
                                    role_name=record.role_name, model=record.model,
                                    usage=Usage(**record.usage.model_dump()) if record.usage else None,
                                    attachments=[files[f] for f in record.attachments if f in files]))
        role = new_role_ids.get(item.role) or (item.role if item.role in BUILTIN_ROLES else DEFAULT_ROLE)
        last = next((m for m in reversed(messages)), None)
        conversation = Conversation(
            id=new_id(), user_id=user_id, title=clean_title(item.title), role=role,
            preview=make_preview(last.content) if last else "", message_count=len(messages),
            created=item.created_at.timestamp(), updated=item.updated_at.timestamp(),
            model=item.model if item.model in offered else "", title_by="user" if item.title else "",
            tokens=sum(m.usage.input_tokens + m.usage.output_tokens for m in messages if m.usage),
            pinned=time.time() * 1000 if pinned else 0, archived=time.time() * 1000 if item.archived else 0,
            folder=folder,
        )
        terms = terms_of(conversation.title)
        for message in messages:
            if message.kind != WELCOME:
                terms |= terms_of(message.content)
        await self.store.import_conversation(conversation, messages, terms, stored)
        return conversation.id
