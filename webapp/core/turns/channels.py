"""Conversation channels: the web UI's one event stream per open conversation page.

A page opens one SSE stream for its conversation and keeps it; every turn that starts on
this worker in that conversation is handed to the page's channel, which streams the
user's bubble, the reply and its final bubble. A web UI turn is then one request (the
composer's post), as an API turn is, instead of a post plus a stream of its own: the
second request per turn was the largest share of what a browser's turn cost more than
an API turn (issue 19, bench/README.md).

The composer names its page's channel. When that channel is open on this worker, the
post answers with no bubbles (the channel brings them); when it is not (the page's
stream is on another host, or reconnecting), the post answers as before: the bubbles
and a stream of the turn's own. A channel that reconnects compares the newest turn it
saw with the conversation's (`Conversation.last_turn_id`) and shows the list again when
it missed one. So nothing here is needed for correctness across workers or hosts; it is the
fast path when the page's stream and its posts reach the same worker: always with one worker
per host and one host, about one post in N with N workers behind a balancer.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections import deque
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from webapp.core.turns.run import TurnRun

CHANNEL_ID_MAX = 64
CHANNEL_ID = re.compile(rf"^[0-9A-Za-z_-]{{1,{CHANNEL_ID_MAX}}}$")  # (anchored: a Query pattern is searched, not matched)


def new_channel_id() -> str:
    """A page's channel id: it names its stream in the composer's posts (only its own user's are looked at)."""
    return secrets.token_hex(8)


def channel_id_or_none(value: str) -> str:
    """A channel id as a page sent it, or "" for anything that is not one."""
    return value if CHANNEL_ID.fullmatch(value) else ""


def missed(newest: str | None, seen_id: str | None, seen_seq: int, all_seen: int) -> str:
    """What a channel that (re)connects owes its page: "sync" (the page misses a turn: the list again),
    "resume" (the rest of the newest turn, after `seen_seq`) or "" (nothing). `newest`: the
    conversation's running or last turn; `seen_id`/`seen_seq`: the newest turn the page shows and its
    last event shown (`all_seen` or more: all of it)."""
    if not newest:
        return ""
    if newest != seen_id:
        return "sync"
    return "resume" if seen_seq < all_seen else ""


class Channel:
    """One open page's stream: the turns started here since it opened, waiting to be streamed."""

    def __init__(self, channel_id: str, user_id: str, session_id: str) -> None:
        self.id = channel_id
        self.user_id = user_id
        self.session_id = session_id
        self.started: deque[TurnRun] = deque()
        self.waiter: asyncio.Future[None] | None = None

    def hand(self, run: "TurnRun") -> None:
        """A turn that started in the conversation: streamed once the one before it has ended."""
        self.started.append(run)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def next_turn(self) -> "TurnRun":
        """The next turn that started in the conversation; waits as long as it takes (the
        response's end cancels the wait; pings keep the idle connection open meanwhile)."""
        while not self.started:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.started.popleft()


class ConversationChannels:
    """This worker's open channels by (user, conversation); told of every turn that starts here.

    `started_since(user, conversation, t)`: the turns of a conversation started here at or after
    time.perf_counter() `t` (the turn writer's), for a channel that opens after its page was read.
    """

    ANSWERED_KEPT = 256

    def __init__(self, started_since: Callable[[str, str, float], list["TurnRun"]] | None = None) -> None:
        self.open: dict[tuple[str, str], list[Channel]] = {}
        self.started_since = started_since or (lambda user_id, session_id, since: [])
        # turn id -> the channel whose page the post answered with the bubbles (its channel was not open
        # yet): that channel, opening a moment later, must not show the turn a second time
        self.answered: dict[str, str] = {}

    def open_channel(self, channel_id: str, user_id: str, session_id: str, *, read_at: float | None = None,
                     shown_turn: str | None = None) -> Channel:
        """Register a page's channel. `read_at`: when the conversation was read to decide what the page
        missed (`shown_turn`: the turn that read found running); a turn started here since then is
        handed to the channel now, as the start hook would have."""
        channel = Channel(channel_id, user_id, session_id)
        self.open.setdefault((user_id, session_id), []).append(channel)
        if read_at is not None:
            for run in self.started_since(user_id, session_id, read_at):
                if run.id != shown_turn:
                    channel.hand(run)
        return channel

    def close(self, channel: Channel) -> None:
        key = (channel.user_id, channel.session_id)
        channels = self.open.get(key)
        if channels is not None and channel in channels:
            channels.remove(channel)
            if not channels:
                del self.open[key]

    def is_open(self, channel_id: str, user_id: str, session_id: str) -> bool:
        """Whether the page that named `channel_id` has its stream open here (its user's only)."""
        return bool(channel_id) and any(
            channel.id == channel_id for channel in self.open.get((user_id, session_id), ()))

    def answered_without(self, channel_id: str, turn_id: str) -> None:
        """The post of `turn_id` answered with the bubbles, its page's channel `channel_id` not open here."""
        if channel_id:
            self.answered[turn_id] = channel_id
            while len(self.answered) > self.ANSWERED_KEPT:
                del self.answered[next(iter(self.answered))]

    def shows_already(self, channel: Channel, turn_id: str) -> bool:
        """Whether the channel's page got the turn's bubbles from its post (see answered_without)."""
        return self.answered.get(turn_id) == channel.id

    def turn_started(self, run: "TurnRun") -> None:
        """The turn writer's start hook: every page open on the conversation here shows the turn."""
        for channel in self.open.get((run.conversation.user_id, run.conversation.id), ()):
            channel.hand(run)
