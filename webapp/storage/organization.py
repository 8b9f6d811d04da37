"""How a user keeps their conversations (issue 37): pins, the archive, folders; the sidebar's groups.

Each fact is stored twice, written by one script so the two never disagree: on the metadata hash
(`pinned`, `archived`, `folder`: what a conversation's own page and the API read) and in a set of the
owner's (`{uid}:pinned`, `{uid}:archived`, `{uid}:filed`: what a list reads). Every key is under the
owner's hash tag: each script touches one slot (Cluster). No policy here: the core (core/shelves.py)
says how many pins and folders, what a name may be, what archiving does to a pin.

Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from webapp.storage.base import StoreBase

# One page of a list of a user's conversations, and (on a sidebar's first page) its groups. KEYS: index,
# pinned, archived, folders, filed. ARGV: mode ("main": neither archived, pinned nor filed; "all": not
# archived; "archived": the archive, newest archived first; "folder": the folder ARGV[2]'s, not archived),
# folder id, the cursor's score ("" on the first page) and id, the page's size, the index TTL, how many
# of each folder's conversations the sidebar shows (0: no groups). Newest first by the list's score; equal
# scores in descending id order (as ZREVRANGEBYSCORE gives them), so a (score, id) cursor neither skips
# nor repeats. A filing into a folder that is gone counts as none. The organisation's four keys live as
# long as the index when listed (their TTL renewed here: listing is what keeps them); and on a sidebar's
# first page (groups), once a day (KEYS[6], a marker written only for a user who has archived something: a
# first visit stores nothing), the archived conversations' ids come back too, for their keys' TTL.
# Returns {rows: {sid, score, ...}, has_more, pinned: {sid, ...}, folders: {fid, json, count, {sid, ...}, ...},
# archived due for renewal: {sid, ...}}.
LIST_SHELF = """
local mode, folder, limit, groups = ARGV[1], ARGV[2], tonumber(ARGV[5]), tonumber(ARGV[7])
local cur_score, cur_id = tonumber(ARGV[3]), ARGV[4]
for i = 2, 5 do redis.call('expire', KEYS[i], ARGV[6]) end
local due = {}
if groups > 0 and redis.call('exists', KEYS[3]) == 1 and redis.call('set', KEYS[6], '1', 'NX', 'EX', 86400) then
  due = redis.call('zrange', KEYS[3], 0, -1)
end
local folders = {}
local filed = {}
if mode == 'main' or mode == 'folder' or groups > 0 then  -- (the others need no filing: a home visit's list)
  local raw = redis.call('hgetall', KEYS[5])
  for i = 1, #raw, 2 do filed[raw[i]] = raw[i + 1] end
  raw = redis.call('hgetall', KEYS[4])
  for i = 1, #raw, 2 do folders[raw[i]] = raw[i + 1] end
end
local function filing(sid)
  local fid = filed[sid]
  if fid and folders[fid] then return fid end
  return nil
end
local function after(score, sid)
  if not cur_score then return true end
  return score < cur_score or (score == cur_score and sid < cur_id)
end
local rows, more = {}, 0
local function take(sid, score)
  if #rows >= 2 * limit then more = 1 return false end
  rows[#rows + 1] = sid
  rows[#rows + 1] = score
  return true
end
if mode == 'folder' then
  local found = {}
  for sid, fid in pairs(filed) do
    if fid == folder and not redis.call('zscore', KEYS[3], sid) then
      local score = redis.call('zscore', KEYS[1], sid)
      if score and after(tonumber(score), sid) then found[#found + 1] = {tonumber(score), sid, score} end
    end
  end
  table.sort(found, function(a, b) if a[1] ~= b[1] then return a[1] > b[1] end return a[2] > b[2] end)
  for _, item in ipairs(found) do if not take(item[2], item[3]) then break end end
else
  local key = mode == 'archived' and KEYS[3] or KEYS[1]
  local top = cur_score and ARGV[3] or '+inf'
  local offset, batch, going = 0, math.min(200, limit + 8), true  -- (a home visit asks for 1: reads 9)
  while going do
    local page = redis.call('zrevrangebyscore', key, top, '-inf', 'WITHSCORES', 'LIMIT', offset, batch)
    for i = 1, #page, 2 do
      local sid, score = page[i], page[i + 1]
      local keep = after(tonumber(score), sid)
      if keep and mode ~= 'archived' then
        keep = not redis.call('zscore', KEYS[3], sid)
        if keep and mode == 'main' then keep = not redis.call('zscore', KEYS[2], sid) and not filing(sid) end
      end
      if keep and not take(sid, score) then going = false break end
    end
    if #page < 2 * batch then going = false end
    offset = offset + batch
    batch = math.min(500, batch * 2)
  end
end
local pinned, shelves = {}, {}
if groups > 0 then
  pinned = redis.call('zrevrange', KEYS[2], 0, -1)
  local members = {}
  for sid, _ in pairs(filed) do
    local fid = filing(sid)
    if fid and not redis.call('zscore', KEYS[2], sid) and not redis.call('zscore', KEYS[3], sid) then
      local score = redis.call('zscore', KEYS[1], sid)
      if score then
        members[fid] = members[fid] or {}
        table.insert(members[fid], {tonumber(score), sid})
      end
    end
  end
  for fid, value in pairs(folders) do
    local list, sids = members[fid] or {}, {}
    table.sort(list, function(a, b) if a[1] ~= b[1] then return a[1] > b[1] end return a[2] > b[2] end)
    for i = 1, math.min(#list, groups) do sids[i] = list[i][2] end
    shelves[#shelves + 1] = fid
    shelves[#shelves + 1] = value
    shelves[#shelves + 1] = #list
    shelves[#shelves + 1] = sids
  end
end
return {rows, more, pinned, shelves, due}
"""

# Keep a conversation somewhere: ARGV[2] "pinned", "archived" or "folder" set to ARGV[3] ("": taken away).
# Pinned and archived exclude each other: pinning takes a conversation out of the archive, archiving
# unpins it. An archived conversation's keys take the index TTL (it lives as long as the user's data;
# docs/organizing.md); out of the archive they take the conversation TTL again. -2: not the owner's
# (or gone); -1: the pins are at ARGV[5]; -3: no such folder; 1: done. KEYS: meta, pinned, archived,
# folders, filed, messages, versions, forks, files. ARGV: uid, field, value, session id, max pins, index TTL,
# conversation TTL.
SHELVE = """
if redis.call('hget', KEYS[1], 'user_id') ~= ARGV[1] then return -2 end
local field, value, sid = ARGV[2], ARGV[3], ARGV[4]
local function unarchive()
  if redis.call('zrem', KEYS[3], sid) == 1 then
    for i = 6, 9 do redis.call('expire', KEYS[i], ARGV[7]) end
  end
  redis.call('hdel', KEYS[1], 'archived')
end
if field == 'pinned' then
  if value == '' then
    redis.call('zrem', KEYS[2], sid)
    redis.call('hdel', KEYS[1], 'pinned')
  else
    if not redis.call('zscore', KEYS[2], sid) then
      if redis.call('zcard', KEYS[2]) >= tonumber(ARGV[5]) then return -1 end
      redis.call('zadd', KEYS[2], value, sid)
      redis.call('hset', KEYS[1], 'pinned', value)
    end
    unarchive()
  end
  redis.call('expire', KEYS[2], ARGV[6])
elseif field == 'archived' then
  if value == '' then
    unarchive()
  else
    redis.call('zadd', KEYS[3], value, sid)
    redis.call('hset', KEYS[1], 'archived', value)
    redis.call('zrem', KEYS[2], sid)
    redis.call('hdel', KEYS[1], 'pinned')
    redis.call('expire', KEYS[1], ARGV[6])
    for i = 6, 9 do redis.call('expire', KEYS[i], ARGV[6]) end
  end
  redis.call('expire', KEYS[3], ARGV[6])
else
  if value == '' then
    redis.call('hdel', KEYS[5], sid)
    redis.call('hdel', KEYS[1], 'folder')
  else
    if redis.call('hexists', KEYS[4], value) == 0 then return -3 end
    redis.call('hset', KEYS[5], sid, value)
    redis.call('hset', KEYS[1], 'folder', value)
  end
  redis.call('expire', KEYS[5], ARGV[6])
end
return 1
"""

# Write a folder (new, or renamed) unless another of the user's folders has its name (-1, compared by
# the `key` in their JSON: the name folded by the core) or, for a new one, the user has ARGV[4] already
# (-2); a rename of a folder that is gone is 0. KEYS: folders. ARGV: folder id, JSON, key, max folders,
# "new" or "rename", index TTL.
WRITE_FOLDER = """
local exists = redis.call('hexists', KEYS[1], ARGV[1]) == 1
if ARGV[5] == 'rename' and not exists then return 0 end
local raw = redis.call('hgetall', KEYS[1])
for i = 1, #raw, 2 do
  if raw[i] ~= ARGV[1] and cjson.decode(raw[i + 1])['key'] == ARGV[3] then return -1 end
end
if ARGV[5] == 'new' and not exists and #raw / 2 >= tonumber(ARGV[4]) then return -2 end
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('expire', KEYS[1], ARGV[6])
return 1
"""


@dataclass
class ShelfPage:
    """What LIST_SHELF found: a page of (session id, score), whether more follow, and on a sidebar's
    first page its groups: the pinned ids (newest pin first) and each folder (id, its JSON, how many
    conversations it holds, the ids of its newest few)."""

    rows: list[tuple[str, float]]
    has_more: bool
    pinned: list[str]
    folders: list[tuple[str, dict[str, Any], int, list[str]]]


class OrganizationStore(StoreBase):
    """Pins, the archive, folders: the commands of their keys (see store.Store)."""

    def _shelf_keys(self, uid: str, sid: str) -> tuple[str, ...]:
        k = self.keys
        pinned, archived, folders, filed = k.shelves(uid)
        return (k.meta(uid, sid), pinned, archived, folders, filed, k.messages(uid, sid), k.versions(uid, sid),
                k.forks(uid, sid), k.files(uid, sid))

    async def list_shelf(self, uid: str, *, mode: str, folder: str = "", cursor: tuple[float, str] | None = None,
                         limit: int = 20, groups: int = 0) -> ShelfPage:
        """A page of the user's conversations as LIST_SHELF lists them (one round trip)."""
        k = self.keys
        score, last_id = (repr(cursor[0]), cursor[1]) if cursor else ("", "")
        rows, more, pinned, shelves, due = await self.redis.eval(
            LIST_SHELF, 6, k.index(uid), *k.shelves(uid), k.archive_renewed(uid),
            mode, folder, score, last_id, limit, self.index_ttl, groups)
        if due:  # archived conversations live as long as the user's data: their keys' TTL, once a day
            async with self.redis.pipeline(transaction=False) as pipe:
                for sid in due:
                    for key in k.conversation_keys(uid, sid):
                        pipe.expire(key, self.index_ttl)
                await pipe.execute()
        pairs = [(str(rows[i]), float(rows[i + 1])) for i in range(0, len(rows), 2)]
        folders = [(str(shelves[i]), orjson.loads(shelves[i + 1]), int(shelves[i + 2]),
                    [str(sid) for sid in shelves[i + 3]]) for i in range(0, len(shelves), 4)]
        return ShelfPage(rows=pairs, has_more=bool(more), pinned=[str(s) for s in pinned], folders=folders)

    async def shelve(self, uid: str, sids: list[str], field: str, value: str, *, max_pins: int) -> list[int]:
        """Set (or with "" clear) `field` of each conversation, each one atomically (SHELVE), all in one
        pipeline: its outcome per conversation."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.eval(SHELVE, 9, *self._shelf_keys(uid, sid), uid, field, value, sid, max_pins, self.index_ttl,
                          self.conversation_ttl)
            return [int(result) for result in await pipe.execute()]

    async def folders_of(self, uid: str) -> dict[str, dict[str, Any]]:
        """The user's folders by id (their JSON: name, key, created)."""
        raw = await self.redis.hgetall(self.keys.folders(uid))
        return {fid: orjson.loads(value) for fid, value in raw.items()}

    async def write_folder(self, uid: str, fid: str, record: dict[str, Any], *, new: bool, max_folders: int) -> int:
        """Create or rename a folder (WRITE_FOLDER's outcome)."""
        return int(await self.redis.eval(WRITE_FOLDER, 1, self.keys.folders(uid), fid, orjson.dumps(record),
                                          record["key"], max_folders, "new" if new else "rename", self.index_ttl))

    async def delete_folder(self, uid: str, fid: str) -> bool:
        """Delete a folder; its conversations stay, in no folder. (A conversation filed into it meanwhile
        keeps a filing to a folder that is gone, which every list reads as none.)"""
        k = self.keys
        filed = await self.redis.hgetall(k.filed(uid))
        inside = [sid for sid, folder in filed.items() if folder == fid]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(k.folders(uid), fid)
            if inside:
                pipe.hdel(k.filed(uid), *inside)
            for sid in inside:
                pipe.hdel(k.meta(uid, sid), "folder")
            removed, *_ = await pipe.execute()
        return bool(removed)
