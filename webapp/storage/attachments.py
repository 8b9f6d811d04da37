"""Attachments: files uploaded and not sent yet, the files of a conversation, their bytes and text.

One HASH per place, in the owner's slot: the user's uploads (`{uid}:uploads`) and a conversation's files
(`{uid}:s:{sid}:files`). Per file `{fid}` holds its record (JSON), `{fid}:d` its bytes in base64 (the client
decodes text: base64 is what a data URL sends anyway, and an export writes), `{fid}:t` a document's text
for the model. A turn moves its files from the uploads into the conversation's hash (ATTACH_FILES, one
script); deleting the conversation deletes the hash (keys.conversation_keys), a delete that can be
undone renames it beside the trash copy. Keys are named in keys.py and listed in store.py."""

from __future__ import annotations

from typing import Any

import orjson

from webapp.base.models import Attachment
from webapp.storage.base import StoreBase

UPLOAD_SECONDS = 3600  # files uploaded and not sent: kept this long after the last upload

# Move files from the uploads to a conversation: all or none. KEYS: uploads, files; ARGV: ttl, fid...
# Returns {1, record JSON...} in order, or {0, the first missing fid} (nothing moved).
ATTACH_FILES = """
local records = {1}
for i = 2, #ARGV do
  local record = redis.call('hget', KEYS[1], ARGV[i])
  if not record then
    record = redis.call('hget', KEYS[2], ARGV[i])
    if not record then return {0, ARGV[i]} end
  end
  records[#records + 1] = record
end
for i = 2, #ARGV do
  local fid = ARGV[i]
  local data = redis.call('hget', KEYS[1], fid .. ':d')
  if data then
    redis.call('hset', KEYS[2], fid, records[i], fid .. ':d', data,
               fid .. ':t', redis.call('hget', KEYS[1], fid .. ':t') or '')
    redis.call('hdel', KEYS[1], fid, fid .. ':d', fid .. ':t')
  end
end
redis.call('expire', KEYS[2], ARGV[1])
return records
"""

# Rename a files hash if it exists (a delete that can be undone, or its undo). KEYS: from, to; ARGV: ttl.
MOVE_FILES = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
redis.call('rename', KEYS[1], KEYS[2])
redis.call('expire', KEYS[2], ARGV[1])
return 1
"""


class AttachmentStore(StoreBase):
    """Attachments: the commands of their keys (see store.Store)."""

    async def save_upload(self, uid: str, attachment: Attachment, data_b64: str, text: str) -> None:
        """One file uploaded (not sent yet): its record, bytes and text in one HSET."""
        key = self.keys.uploads(uid)
        fid = attachment.id
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={fid: orjson.dumps(attachment.to_dict()).decode(), fid + ":d": data_b64,
                                    fid + ":t": text})
            pipe.expire(key, UPLOAD_SECONDS)
            await pipe.execute()

    async def drop_uploads(self, uid: str, fids: list[str]) -> None:
        """Files uploaded for a turn that did not start (the web form's own uploads)."""
        if fids:
            await self.redis.hdel(self.keys.uploads(uid), *[f + suffix for f in fids for suffix in ("", ":d", ":t")])

    async def upload_record(self, uid: str, fid: str) -> Attachment | None:
        raw = await self.redis.hget(self.keys.uploads(uid), fid)
        return Attachment.from_dict(orjson.loads(raw)) if raw else None

    async def file_records(self, uid: str, sid: str, fids: list[str]) -> list[Attachment] | str:
        """The records of files a turn names (an upload, or one the conversation holds), moving nothing; or the
        id of one that is neither: what a turn checks before it changes anything."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(k.uploads(uid), fids)
            pipe.hmget(k.files(uid, sid), fids)
            uploaded, held = await pipe.execute()
        records = []
        for fid, raw in zip(fids, [u or h for u, h in zip(uploaded, held)]):
            if not raw:
                return fid
            records.append(Attachment.from_dict(orjson.loads(raw)))
        return records

    async def attach_files(self, uid: str, sid: str, fids: list[str]) -> list[Attachment] | str:
        """Move uploaded files into the conversation (files it holds already stay: a resend); their records,
        or the id of one that is neither an upload nor the conversation's (nothing moved)."""
        k = self.keys
        result = await self.redis.eval(ATTACH_FILES, 2, k.uploads(uid), k.files(uid, sid), self.conversation_ttl,
                                       *fids)
        if not int(result[0]):
            return str(result[1])
        return [Attachment.from_dict(orjson.loads(raw)) for raw in result[1:]]

    async def file_contents(self, uid: str, sid: str, fids: list[str], *, data: bool) -> dict[str, tuple[str, str]]:
        """(bytes in base64, text) of a conversation's files by id (without `data`: "" for the bytes)."""
        if not fids:
            return {}
        fields = [f + ":t" for f in fids] + ([f + ":d" for f in fids] if data else [])
        values = await self.redis.hmget(self.keys.files(uid, sid), fields)
        texts = values[:len(fids)]
        datas = values[len(fids):] if data else [""] * len(fids)
        return {fid: (d or "", t or "") for fid, d, t in zip(fids, datas, texts) if t is not None}

    async def file_for_download(self, uid: str, sid: str, fid: str) -> tuple[Attachment, str] | None:
        """A conversation's file: its record and its bytes (base64)."""
        record, data = await self.redis.hmget(self.keys.files(uid, sid), [fid, fid + ":d"])
        if record is None or data is None:
            return None
        return Attachment.from_dict(orjson.loads(record)), data

    async def all_files(self, uid: str, sid: str) -> dict[str, str]:
        """The whole files hash (an export, a move to another identity)."""
        return await self.redis.hgetall(self.keys.files(uid, sid))

    def _write_files(self, pipe: Any, uid: str, sid: str, files: dict[str, str]) -> None:
        """(In a MULTI that writes a conversation: an import, a move, an undo.)"""
        if files:
            pipe.hset(self.keys.files(uid, sid), mapping=files)
            pipe.expire(self.keys.files(uid, sid), self.conversation_ttl)

    def _trash_files(self, pipe: Any, uid: str, sid: str, keep_seconds: int) -> None:
        pipe.eval(MOVE_FILES, 2, self.keys.files(uid, sid), self.keys.trashed_files(uid, sid), keep_seconds)

    def _untrash_files(self, pipe: Any, uid: str, sid: str) -> None:
        pipe.eval(MOVE_FILES, 2, self.keys.trashed_files(uid, sid), self.keys.files(uid, sid), self.conversation_ttl)
