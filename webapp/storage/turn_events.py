"""A turn's event stream: appending events, reading them, waking followers, cancel requests.

Keys are named in keys.py and listed, with type and TTL, in store.py."""

from __future__ import annotations

import logging
from typing import AsyncIterator, Iterable

from redis.exceptions import RedisError

from webapp.base.models import TurnEvent
from webapp.storage.base import StoreBase
from webapp.storage.failures import PASSING
from webapp.storage.keys import TurnRef

log = logging.getLogger("webapp.store")

STREAM_MAXLEN = 20000

STREAM_RETENTION_SECONDS = 3600

FOLLOWER_WAKE_TTL_SECONDS = 60  # a worker that is gone leaves nothing behind for long

# Mark a running turn to be stopped (1), so its writer finds the request at its next lease renewal
# even when it missed the pub/sub message; nothing is written for a turn that is over or gone (0).
# KEYS: turn.
MARK_CANCEL = """
if redis.call('hget', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('hset', KEYS[1], 'cancel', '1')
return 1
"""


class TurnEventStore(StoreBase):
    """A turn's event stream: the commands of their keys (see store.Store)."""

    async def append_events(self, batch: Iterable[tuple[TurnRef, list[TurnEvent]]]) -> None:
        """Write the chunk events of many turns in one pipeline, one stream entry per turn.

        Consecutive chunks of a turn share an entry whose id is the last seq; its `f`
        (first seq) and `n` (lengths) let a reader resuming mid-entry take just the
        chunks it lacks. Not a transaction: the order per key holds, and one bad
        entry must not fail the others. On a Cluster each entry is also announced on
        its turn's wake-up channel (followers.ClusterFollower).
        """
        k = self.keys
        refs = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for ref, events in batch:
                refs.append(ref)
                pipe.xadd(k.events(ref), entry_fields(events), id=f"0-{events[-1].seq}",
                          maxlen=STREAM_MAXLEN, approximate=True)
                if events[0].seq == 1:  # later entries need no EXPIRE of their own: finish_turn sets the last one
                    pipe.expire(k.events(ref), STREAM_RETENTION_SECONDS + self.turn_timeout)
            results = await pipe.execute(raise_on_error=False)
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            passing = [e for e in errors if isinstance(e, PASSING)]  # (a restart, a failover: written again)
            if passing:
                raise passing[0]
            # "ID equal or smaller": a resent pipeline whose first run was applied; the entries are there
            log.warning("event write refused: %s", errors[0])
        if self.cluster:
            await self._wake_readers(refs)

    async def _wake_readers(self, refs: list[TurnRef]) -> None:
        """Cluster: tell followers on other hosts which turns have new events: one message per flush,
        on one channel every worker listens to (best effort: they also look once a second)."""
        if not refs:
            return
        try:
            await self.redis.publish(self.keys.wake_channel, " ".join(ref.turn_id for ref in refs))
        except RedisError as exc:
            log.debug("wake-up not published: %s", exc)

    async def read_events(self, ref: TurnRef, after: int) -> list[TurnEvent]:
        """The turn's events after seq `after`, as its stream holds them now."""
        rows = await self.redis.xrange(self.keys.events(ref), min=f"(0-{after}", max="+")
        return events_after(rows, after)

    async def read_many_events(self, positions: dict[TurnRef, int]) -> dict[TurnRef, list[TurnEvent]]:
        """Each turn's events after its position: one pipeline of XRANGEs (any slots)."""
        refs = list(positions)
        async with self.redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.xrange(self.keys.events(ref), min=f"(0-{positions[ref]}", max="+")
            replies = await pipe.execute()
        return {ref: events_after(rows, positions[ref]) for ref, rows in zip(refs, replies) if rows}

    async def read_turn_streams(
        self, positions: dict[TurnRef, int], *, worker_id: str, wake_seen: str, block_ms: int
    ) -> tuple[dict[TurnRef, list[TurnEvent]], str]:
        """One XREAD BLOCK over many turns' event streams and a worker's wake-up stream (one Redis only:
        on a Cluster the streams are in many slots, and followers.ClusterFollower is used instead).

        `positions` maps a turn -> the last seq already had. Returns the new events per
        turn, and the id of the newest wake-up seen (to pass back next time).
        """
        wake_key = self.keys.follower_wake(worker_id)
        turn_of_key = {self.keys.events(ref): ref for ref in positions}
        streams = {wake_key: wake_seen, **{key: f"0-{positions[ref]}" for key, ref in turn_of_key.items()}}
        reply = await self.blocking_redis.xread(streams, block=block_ms, count=1000)
        events: dict[TurnRef, list[TurnEvent]] = {}
        for key, rows in reply or []:
            if key == wake_key:
                wake_seen = rows[-1][0]
                continue
            ref = turn_of_key[key]
            events[ref] = events_after(rows, positions[ref])
        return events, wake_seen

    async def wake_follower(self, worker_id: str) -> None:
        """End a worker's blocking XREAD now, so that it starts over with a new stream in it."""
        key = self.keys.follower_wake(worker_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, {"w": "1"}, maxlen=1, approximate=False)
            pipe.expire(key, FOLLOWER_WAKE_TTL_SECONDS)
            await pipe.execute()

    async def wake_ups(self) -> AsyncIterator[list[str]]:
        """Cluster: the turn ids of each flush any worker announced."""
        pubsub = self.blocking_redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.keys.wake_channel)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield message["data"].split()
        finally:
            await pubsub.aclose()

    async def request_cancel(self, ref: TurnRef) -> None:
        """Ask whichever worker generates the turn to stop it: at once by pub/sub, and within a lease
        renewal (renew_leases) from the mark on the turn, if that worker's subscription was down."""
        if await self.redis.eval(MARK_CANCEL, 1, self.keys.turn(ref)):
            await self.redis.publish(self.keys.cancel_channel, ref.turn_id)

    async def cancel_requests(self) -> AsyncIterator[str]:
        """Ids of the turns whose cancellation any worker published."""
        pubsub = self.blocking_redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.keys.cancel_channel)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield message["data"]
        finally:
            await pubsub.aclose()


def event_fields(event: TurnEvent) -> dict[str, str]:
    fields = {"t": event.type, "c": event.content}
    if event.message_id:
        fields["m"] = event.message_id
    return fields


def entry_fields(events: list[TurnEvent]) -> dict[str, str]:
    """One stream entry for consecutive events of a turn (chunks), or for a single event."""
    if len(events) == 1:
        return event_fields(events[0])
    return {
        "t": "chunk",
        "c": "".join(e.content for e in events),
        "f": str(events[0].seq),
        "n": ",".join(str(len(e.content)) for e in events),
    }


def events_after(rows: list[tuple[str, dict[str, str]]], after: int) -> list[TurnEvent]:
    """The events of stream entries past seq `after` (an entry may start before it)."""
    return [event for entry_id, fields in rows for event in parse_entry(entry_id, fields) if event.seq > after]


def parse_entry(entry_id: str, fields: dict[str, str]) -> list[TurnEvent]:
    last = int(entry_id.split("-", 1)[1])
    if "n" not in fields:
        return [TurnEvent(seq=last, type=fields.get("t", "chunk"), content=fields.get("c", ""),
                          message_id=fields.get("m", ""))]
    content, first, events, offset = fields.get("c", ""), int(fields["f"]), [], 0
    for index, size in enumerate(int(n) for n in fields["n"].split(",")):
        events.append(TurnEvent(seq=first + index, type="chunk", content=content[offset : offset + size]))
        offset += size
    return events
