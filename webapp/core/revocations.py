"""Open streams end when the credential they were opened with ends, on every worker of every host.

A stream (a page's channel, a turn's stream, the seed's stream) opened with a sign-in cookie or
an API token is registered here under that credential's hash (`watch`) for as long as it is
open. Ending a credential (sign-out, sign-out everywhere, a token deleted, and later a user
disabled) ends this worker's streams of it at once and announces the hashes on one Redis
pub/sub channel, which every worker listens to: theirs end within milliseconds. So a stream
costs nothing per event, and a worker one subscription.

What could slip through, and why it does not: a stream that registers after its credential's
announcement arrived (it was authorised a moment before) finds the hash among the recently
revoked ones and ends at once; announcements made while a worker's subscription was down are
found when it subscribes again, by checking every watched credential once (one pipeline).
A reconnect is refused by the credential check as any request is (401).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable


from webapp.storage.store import Store

log = logging.getLogger("webapp.revocations")

RECENT_SECONDS = 120.0  # far longer than a request takes from its credential check to its stream's start
RECENT_KEPT = 10_000

End = Callable[[], None]


class Revocations:
    """This worker's open streams by credential hash; ends them when the credential is revoked anywhere."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.watching: dict[str, set[End]] = {}
        self.recent: dict[str, float] = {}  # hash -> when its revocation was heard (monotonic), oldest first
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._listen(), name="revocations")

    async def aclose(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    def watch(self, credential: str, end: End) -> End | None:
        """Call `end` when `credential` is revoked; the returned function stops watching. None: it was
        revoked already (the stream should end now)."""
        if credential in self.recent:
            return None
        ends = self.watching.setdefault(credential, set())
        ends.add(end)

        def unwatch() -> None:
            ends.discard(end)
            if not ends and self.watching.get(credential) is ends:
                del self.watching[credential]

        return unwatch

    async def revoke(self, credentials: list[str]) -> None:
        """These credentials (hashes) were just removed from Redis: end their streams here and everywhere."""
        if not credentials:
            return
        self._ended(credentials)
        await self.store.announce_revoked(credentials)

    def _ended(self, credentials: list[str]) -> None:
        now = time.monotonic()
        while self.recent and (len(self.recent) >= RECENT_KEPT
                               or next(iter(self.recent.values())) < now - RECENT_SECONDS):
            del self.recent[next(iter(self.recent))]
        for credential in credentials:
            self.recent.pop(credential, None)
            self.recent[credential] = now
            for end in list(self.watching.pop(credential, ())):
                end()

    async def _listen(self) -> None:
        while True:
            try:
                async for credentials in self.store.revoked_credentials():
                    if credentials:
                        self._ended(credentials)
                    else:  # (re)subscribed: what was announced while the subscription was down
                        await self._check_watched()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # (a Cluster not up yet raises its own, not a RedisError): never die
                log.warning("revocation listener: %s; subscribing again", exc)
                await asyncio.sleep(1)

    async def _check_watched(self) -> None:
        watched = list(self.watching)
        if not watched:
            return
        valid = await self.store.credentials_valid(watched)
        self._ended([credential for credential, ok in zip(watched, valid) if not ok])
