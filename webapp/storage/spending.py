"""What replies cost in tokens: summed per user per month (by day and model), the users' token budgets,
and the budget lane (one reply at a time for a user with a budget: core/spending.py says why).

Distinct from usage.py, which measures the bytes a user's data takes for the storage quota.
Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

import time
from typing import Any

from webapp.base.models import Usage
from webapp.storage.base import StoreBase
from webapp.storage.keys import TurnRef

TOTAL = "t"  # the month hash's field of the month's tokens (in + out)

# Take the budget lane from a turn that holds it but no longer runs (its host died before giving it
# back, or another host's recovery saved it). A holder whose state is not written yet is starting, for
# LANE_STARTING_MS at most (a start writes it in its next round trip): after that its host died between
# the two, and the lane is free. KEYS lane, that turn's state hash; ARGV the new turn id, the lane's ms,
# the holder seen, LANE_STARTING_MS. 1: taken.
TAKE_LANE = """
local holder = redis.call('get', KEYS[1])
if holder and holder ~= ARGV[3] then return 0 end
if holder then
  local status = redis.call('hget', KEYS[2], 'status')
  if status == 'running' then return 0 end
  if not status then
    local left = redis.call('pttl', KEYS[1])
    if left > 0 and tonumber(ARGV[2]) - left < tonumber(ARGV[4]) then return 0 end  -- still starting
  end
end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
LANE_STARTING_MS = 10_000
RELEASE_LANE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def utc_day(at: float | None = None) -> str:
    """YYYY-MM-DD in UTC: the day a reply's tokens count on (its month is the first 7 characters)."""
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() if at is None else at))


def field_of(day: str, model: str, kind: str) -> str:
    """A month hash's field: day of month, model, kind (i in, o out, n replies, e estimated replies)."""
    return f"{day[8:10]}|{model}|{kind}"


def parse_field(name: str) -> tuple[str, str, str] | None:
    """(day of month, model, kind) of a month hash's field; None for the total."""
    if name == TOTAL or len(name) < 5 or name[2] != "|":
        return None
    model, _, kind = name[3:].rpartition("|")
    return name[:2], model, kind


class SpendingStore(StoreBase):
    """Token sums and budgets: the commands of their keys (see store.Store)."""

    def _count_spending(self, pipe: Any, uid: str, day: str, model: str, usage: Usage) -> None:
        """Add a saved reply's tokens to its user's month (inside the save's MULTI: no round trip)."""
        key = self.keys.spending(uid, day[:7])
        pipe.hincrby(key, TOTAL, usage.input_tokens + usage.output_tokens)
        pipe.hincrby(key, field_of(day, model, "i"), usage.input_tokens)
        pipe.hincrby(key, field_of(day, model, "o"), usage.output_tokens)
        pipe.hincrby(key, field_of(day, model, "n"), 1)
        if usage.estimated:
            pipe.hincrby(key, field_of(day, model, "e"), 1)
        pipe.expire(key, self.index_ttl)  # as long as the identity's other data: a 30-day window always reaches back

    def _read_budget(self, pipe: Any, uid: str, month: str, turn_id: str, lane_ms: int) -> None:
        """Inside a turn's lock round trip: the month's tokens, the user's own budget, and the budget lane
        (taken when free; then who holds it). Four replies, read by budget_replies()."""
        k = self.keys
        pipe.hget(k.spending(uid, month), TOTAL)
        pipe.get(k.budget(uid))
        pipe.set(k.budget_lane(uid), turn_id, nx=True, px=lane_ms)
        pipe.get(k.budget_lane(uid))

    @staticmethod
    def budget_replies(replies: list[Any]) -> tuple[int, int | None, bool, str]:
        """(tokens this month, the user's own budget or None, lane taken, the lane's holder)."""
        spent, budget, taken, holder = replies
        return int(spent or 0), (int(budget) if budget is not None else None), bool(taken), holder or ""

    async def take_stale_lane(self, uid: str, turn_id: str, holder: str, lane_ms: int) -> bool:
        """The lane from `holder` if that turn no longer runs (or from no one)."""
        k = self.keys
        return bool(await self.redis.eval(TAKE_LANE, 2, k.budget_lane(uid), k.turn(TurnRef(uid, holder)),
                                          turn_id, lane_ms, holder, LANE_STARTING_MS))

    async def release_lane(self, uid: str, turn_id: str) -> None:
        await self.redis.eval(RELEASE_LANE, 1, self.keys.budget_lane(uid), turn_id)

    def _release_lane(self, pipe: Any, uid: str, turn_id: str) -> None:
        pipe.eval(RELEASE_LANE, 1, self.keys.budget_lane(uid), turn_id)

    async def month_spending(self, uid: str, months: list[str]) -> list[dict[str, str]]:
        """The month hashes of `months` (YYYY-MM), in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for month in months:
                pipe.hgetall(self.keys.spending(uid, month))
            return list(await pipe.execute())

    async def month_totals(self, uids: list[str], month: str) -> list[tuple[int, int | None]]:
        """(tokens this month, own budget or None) of each user: one pipeline (Cluster: one per slot)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for uid in uids:
                pipe.hget(self.keys.spending(uid, month), TOTAL)
                pipe.get(self.keys.budget(uid))
            replies = await pipe.execute()
        return [(int(replies[i] or 0), int(replies[i + 1]) if replies[i + 1] is not None else None)
                for i in range(0, len(replies), 2)]

    async def set_budget(self, uid: str, tokens: int | None) -> None:
        """A user's own monthly budget (0: none), or None: the default again."""
        if tokens is None:
            await self.redis.delete(self.keys.budget(uid))
        else:
            await self.redis.set(self.keys.budget(uid), tokens)

    async def get_budget(self, uid: str) -> int | None:
        value = await self.redis.get(self.keys.budget(uid))
        return int(value) if value is not None else None
