"""Titles written by the model after a conversation's first exchange.

A conversation is titled from its first message at once (titles.make_title), so the
sidebar never waits. Once the first reply is saved, a small separate call asks the
model for a short title and, when it answers, replaces that first title — unless the
user renamed the conversation meanwhile: the store replaces a title only while it is
still the one made from the first message and no rename was made (one script), so a
rename always wins, before or after. Off with AUTO_TITLE=false, and in demo mode.

At most TITLE_WRITERS titles per worker are asked for at once; the rest wait in a queue of plain
records. A burst of new conversations (a class opening the app together) would otherwise
send the model one title call per reply still streaming, each holding a connection, a
response and its task: with 1000 new conversations, 600 at once, ~3 MB of the app's peak
and as many extra requests against the API's rate limit while replies still stream
(bench/README.md, issue 19). A title is a nicety: under a burst it comes a little later,
and past TITLE_BACKLOG waiting the oldest is dropped (its first message stays the title).

Titles also yield to replies: while more than TITLE_QUIET_TURNS replies are being written on this
worker, a title waits (at most TITLE_MAX_WAIT seconds after its reply), so under load the model's and
the worker's time goes to the replies users are watching, and the titles follow in the next lull.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Callable, NamedTuple

from redis.exceptions import RedisError

from webapp.base.models import Message
from webapp.core.search import SearchIndex
from webapp.core.titles import TITLE_CHARS, clean_title
from webapp.llm.providers import Provider, UpstreamError
from webapp.storage.store import Store

log = logging.getLogger("webapp.titles")

TITLE_PROMPT = (
    "Write a short title (at most 8 words, or 16 Chinese characters) for the conversation below, in the "
    "language of the user's message. Reply with the title only: no quotes, no punctuation at the end."
)
QUESTION_CHARS = 1000
ANSWER_CHARS = 1000
TITLE_WRITERS = 8  # title calls to the model at once
TITLE_BACKLOG = 1000  # titles waiting for a writer (at most ~4 MB); past it the oldest is dropped
TITLE_QUIET_TURNS = 4  # replies being written on this worker at most, for a title to be asked for now
TITLE_MAX_WAIT = 30.0  # seconds a title waits for a lull at most, after its reply was saved
TITLE_POLL_SECONDS = 0.25


def tidy_title(text: str) -> str:
    """The model's answer as a title: one line, without quotes or a label, at most TITLE_CHARS."""
    line = next((line for line in text.strip().splitlines() if line.strip()), "")
    for label in ("title:", "标题：", "标题:"):
        if line.lower().startswith(label):
            line = line[len(label):]
    line = line.strip().strip("\"'“”‘’「」《》*#").strip().rstrip("。.")
    title = clean_title(line)
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"


class TitleJob(NamedTuple):
    """A title to ask for: what TitleWriter.write needs, and nothing that holds a connection."""

    user_id: str
    session_id: str
    first_title: str
    question: str
    answer: str
    model: str | None
    saved_at: float  # (the event loop's clock) when its reply was saved


class TitleWriter:
    def __init__(self, store: Store, provider: Provider, search: SearchIndex, *, enabled: bool,
                 writers: int = TITLE_WRITERS, backlog: int = TITLE_BACKLOG,
                 busy: Callable[[], int] = lambda: 0, quiet_turns: int = TITLE_QUIET_TURNS,
                 max_wait: float = TITLE_MAX_WAIT) -> None:
        self.store = store
        self.provider = provider
        self.search = search
        self.enabled = enabled
        self.writers = writers
        self.waiting: deque[TitleJob] = deque(maxlen=backlog)
        self.tasks: set[asyncio.Task[None]] = set()
        self.dropping = False
        self.busy, self.quiet_turns, self.max_wait = busy, quiet_turns, max_wait  # busy(): replies being written

    def reply_saved(self, run: Any, reply: Message) -> None:
        """The turn writer's hook: after a first exchange that ended well, title it in the background."""
        if not self.enabled or not run.first_exchange or reply.status != "complete" or run.user_message is None:
            return
        if run.conversation.title_by == "user":
            return
        if len(self.waiting) == self.waiting.maxlen and not self.dropping:  # (said once per overload)
            log.warning("title backlog full (%d): the oldest waiting conversations keep their first titles",
                        len(self.waiting))
        self.dropping = len(self.waiting) == self.waiting.maxlen
        self.waiting.append(TitleJob(run.conversation.user_id, run.conversation.id, run.conversation.title,
                                     run.user_message.content[:QUESTION_CHARS], reply.content[:ANSWER_CHARS],
                                     run.model or None, asyncio.get_running_loop().time()))
        if len(self.tasks) < self.writers:
            self.tasks.add(asyncio.create_task(self._drain()))

    async def _drain(self) -> None:
        """One writer: titles from the queue until it is empty. It leaves the set itself, in the
        same step as it finds the queue empty, so a title queued right after always finds a writer."""
        try:
            while self.waiting:
                job = self.waiting.popleft()
                try:
                    await self._until_quiet(job.saved_at)
                    await self.write(job.user_id, job.session_id, job.first_title, job.question, job.answer, job.model)
                except Exception:  # one title's surprise must not leave the others waiting for a writer
                    log.exception("title for %s failed", job.session_id)
        finally:
            self.tasks.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _until_quiet(self, saved_at: float) -> None:
        """Until at most `quiet_turns` replies are being written here, or `max_wait` after the reply."""
        loop = asyncio.get_running_loop()
        while self.busy() > self.quiet_turns and loop.time() - saved_at < self.max_wait:
            await asyncio.sleep(TITLE_POLL_SECONDS)

    async def write(self, user_id: str, session_id: str, first_title: str, question: str, answer: str,
                    model: str | None) -> str | None:
        messages = [
            {"role": "system", "content": TITLE_PROMPT},
            {"role": "user", "content": f"{question[:QUESTION_CHARS]}\n\n---\n\n{answer[:ANSWER_CHARS]}"},
        ]
        try:
            title = tidy_title(await self.provider.complete(messages, model=model))
            if not title or title == first_title:
                return None
            if await self.store.set_generated_title(user_id, session_id, expected=first_title, title=title):
                conversation = await self.store.get_conversation(user_id, session_id)
                if conversation is not None:
                    self.search.add(conversation, title)
                return title
        except (UpstreamError, RedisError) as exc:  # the first message's title stays
            log.info("no generated title for %s: %s", session_id, type(exc).__name__)
        return None

    async def aclose(self) -> None:
        self.waiting.clear()  # titles not asked for yet: their conversations keep their first titles
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=2)
