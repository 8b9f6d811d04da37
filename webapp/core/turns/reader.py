"""The reader of a turn: who may read it, following it live, resuming, replaying, recovering orphans.

A turn generating on this worker is followed from memory (run.TurnRun). Any
other (generating on another worker, or already ended) is read from its Redis Stream:
what the stream holds now at once, then the rest through the worker's one
StreamFollower (followers.py), which shares a single XREAD BLOCK among all readers.
When a stream has expired the saved reply is replayed from the history; when the
worker writing a turn has died, the first reader that notices saves what it streamed
as an interrupted reply.
"""

from __future__ import annotations

import logging
from typing import AsyncIterator, Callable

from webapp.base.errors import TooManyStreams, TurnNotFound
from webapp.base.i18n import t
from webapp.base.metrics import Metrics
from webapp.base.models import TERMINAL, TurnEvent, TurnInfo
from webapp.core.turns.followers import REMOTE_BLOCK_MS, Subscription, make_follower
from webapp.core.turns.recovery import OrphanRecovery
from webapp.core.turns.run import MAX_EVENT_CHARS, TurnRun
from webapp.storage.keys import TurnRef
from webapp.storage.store import Store

log = logging.getLogger("webapp.turns")


class TurnReader:
    """Serves a turn's events to any number of readers, from any event id."""

    def __init__(self, store: Store, local_run: Callable[[str], TurnRun | None], metrics: Metrics,
                 max_streams_per_user: int = 0, recovery: OrphanRecovery | None = None) -> None:
        self.store = store
        self.local_run = local_run
        self.metrics = metrics
        self.follower = make_follower(store)
        self.recovery = recovery or OrphanRecovery(store)
        self.max_streams_per_user = max_streams_per_user
        self.open_streams: dict[str, int] = {}  # per user, on this worker

    def check_stream_slot(self, user_id: str) -> None:
        """Refuse one more open stream for a user who has MAX_STREAMS_PER_USER open on this worker."""
        if self.max_streams_per_user and self.open_streams.get(user_id, 0) >= self.max_streams_per_user:
            raise TooManyStreams()

    async def aclose(self) -> None:
        await self.follower.aclose()

    # who may read -------------------------------------------------------

    def running_here(self, turn_id: str, user_id: str, session_id: str) -> TurnRun | None:
        """The turn if it is generating on this worker, the user's and of `session_id`: ownership
        proven with no read (a page's channel connecting to the reply it shows)."""
        run = self.local_run(turn_id)
        if run is None or run.finished or run.conversation.user_id != user_id or run.conversation.id != session_id:
            return None
        return run

    async def owned_turn(self, turn_id: str, user_id: str, session_id: str | None = None) -> TurnInfo:
        """The turn if the user owns it (and it belongs to `session_id`, when given); 404 otherwise."""
        run = self.local_run(turn_id)
        if run is not None:
            info = TurnInfo(id=run.id, session_id=run.conversation.id, user_id=run.conversation.user_id,
                            status="running")
        else:
            info = await self.store.get_turn(TurnRef(user_id, turn_id))
        if info is None or info.user_id != user_id or (session_id is not None and info.session_id != session_id):
            raise TurnNotFound()
        return info

    async def resumable(self, turn_id: str, user_id: str, after: int, session_id: str | None = None) -> TurnInfo | None:
        """The turn to follow from seq `after`, or None when the reader has already seen its end."""
        turn = await self.owned_turn(turn_id, user_id, session_id)
        if turn.status != "running" and after > 0 and not await self.store.read_events(_ref(turn), after):
            return None
        return turn

    # following ----------------------------------------------------------

    def stream_opened(self, user_id: str) -> None:
        """Count an open stream against the user's MAX_STREAMS_PER_USER here; pair with stream_closed()."""
        self.metrics.active_streams.inc()
        self.open_streams[user_id] = self.open_streams.get(user_id, 0) + 1

    def stream_closed(self, user_id: str) -> None:
        self.metrics.active_streams.dec()
        left = self.open_streams.pop(user_id, 1) - 1
        if left > 0:
            self.open_streams[user_id] = left

    async def follow(self, turn: TurnInfo, after: int = 0, *, counted: bool = True) -> AsyncIterator[list[TurnEvent]]:
        """Batches of the turn's events after seq `after`, until its end or error event.
        `counted`: the stream counts as open while it follows (a page's channel counts for its whole life)."""
        if counted:
            self.stream_opened(turn.user_id)
        try:
            run = self.local_run(turn.id)
            if run is not None:
                async for batch in run.follow(after):
                    yield batch
                return
            async for batch in self._follow_stored(turn, after):
                yield batch
        finally:
            if counted:
                self.stream_closed(turn.user_id)

    async def _follow_stored(self, turn: TurnInfo, after: int) -> AsyncIterator[list[TurnEvent]]:
        """Follow a turn through its Redis Stream: it runs on another worker, or already ended.

        A turn silent for REMOTE_BLOCK_MS is checked: ended (its stream expired: replay
        the saved reply), or orphaned by a worker that died (save it).
        """
        ref = _ref(turn)
        events = await self.store.read_events(ref, after)
        subscription: Subscription | None = None
        try:
            while True:
                if events:
                    yield events
                    after = events[-1].seq
                    if events[-1].type in TERMINAL:
                        return
                else:
                    info = await self.store.get_turn(ref)
                    if info is not None and info.status == "running" and self.local_run(turn.id) is None:
                        info = await self.recovery.recover(ref)  # saved as interrupted if its writer died
                    if info is None or info.status != "running":
                        # its last events (or the interruption a recovery just wrote), else the saved reply
                        events = await self.store.read_events(ref, after)
                        if events:
                            continue
                        async for batch in self._replay_from_history(info or turn, after):
                            yield batch
                        return
                if subscription is None:
                    subscription = await self.follower.subscribe(ref, after)
                # (a direct read above may have run ahead of the subscription)
                events = [event for event in await subscription.next(REMOTE_BLOCK_MS / 1000) if event.seq > after]
        finally:
            if subscription is not None:
                self.follower.unsubscribe(ref, subscription)

    async def _replay_from_history(self, turn: TurnInfo, after: int) -> AsyncIterator[list[TurnEvent]]:
        """The event stream has expired: rebuild the reply from the saved message."""
        message = await self.store.find_message(turn.user_id, turn.session_id, turn.message_id) if turn.message_id else None
        failed = turn.status == "error" or (message is not None and message.status == "error")
        if after == 0 and message is not None:
            text = message.content
            chunks = [TurnEvent(seq=n + 1, type="chunk", content=text[start : start + MAX_EVENT_CHARS])
                      for n, start in enumerate(range(0, max(len(text), 1), MAX_EVENT_CHARS))]
            last = len(chunks) + 1
            final = TurnEvent(seq=last, type="error", content=t("error.upstream")) if failed else \
                TurnEvent(seq=last, type="end", message_id=message.id)
            yield [*chunks, final]
        elif after == 0:
            yield [TurnEvent(seq=1, type="error", content=t("error.upstream")) if failed else TurnEvent(seq=1, type="end")]

    # what a page shows --------------------------------------------------

    async def progress(self, user_id: str, turn_id: str) -> tuple[str, int, bool]:
        """What a page rendered now shows of a reply: its text so far, the last seq, and whether it ended.

        A reader that then follows from that seq sees each chunk exactly once.
        """
        run = self.local_run(turn_id)
        events = list(run.events) if run is not None else await self.store.read_events(TurnRef(user_id, turn_id), 0)
        text = "".join(event.content for event in events if event.type == "chunk")
        last = events[-1] if events else None
        return text, last.seq if last else 0, bool(last and last.type in TERMINAL)

    async def saved_reply_id(self, user_id: str, turn_id: str, final: TurnEvent | None) -> str:
        """The id of the message a turn saved: from its final event, else from its stored state."""
        if final is not None and final.message_id:
            return final.message_id
        info = await self.store.get_turn(TurnRef(user_id, turn_id)) if turn_id else None
        return info.message_id if info else ""


def _ref(turn: TurnInfo) -> TurnRef:
    return TurnRef(turn.user_id, turn.id)
