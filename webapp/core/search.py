"""Search over every conversation of a user: an inverted index kept in Redis.

Redis has no full-text search without modules, and scanning a user's conversations
stops scaling long before MAX_CONVERSATIONS_PER_USER. So each conversation's title and
messages are cut into terms as they are saved, and each term keeps the set of
conversations holding it (storage/search.py: `{uid}:w:{term}`, all in the owner's slot). A query
is the intersection of its terms' sets with the session index, newest activity first,
in one MULTI whatever the number of conversations.

Terms: Latin-script words (letters and digits, case-folded), and for Chinese, Japanese
and Korean text every single character and every pair of neighbouring characters
(bigrams), since those scripts have no spaces between words. A query's last Latin word
also matches longer words it starts (typing "pyth" finds "python"); a longer CJK query
matches conversations holding all of its bigrams.

Writes stay off the reply's path: the turn writer hands each saved exchange to
`SearchIndex.add`, which queues it; a background task writes it at once when idle, and under
load everything queued in one pipeline at most every FLUSH_SECONDS. Users whose conversations predate the index (or
came from another identity) get theirs indexed on their first search.
"""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
from typing import Any, Iterable

from redis.exceptions import RedisError

from webapp.base.models import Conversation, Message
from webapp.base.processes import stop_task
from webapp.storage.store import Store

log = logging.getLogger("webapp.search")

FLUSH_SECONDS = 0.2
MAX_TERM_CHARS = 40
MAX_QUERY_TERMS = 100  # (more would only be dropped: a query is at most 200 characters)
MAX_TEXT_CHARS = 20_000  # of one message: the rest of a very long reply is not indexed
# Chinese, Japanese (kana) and Korean: text with no spaces between words
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f"
# a run of CJK letters (group 1), or a word of other letters and digits: split by the regex engine,
# not character by character in Python (a reply is cut into terms on every turn). Letters and digits
# only, in both: punctuation and unassigned code points inside the CJK blocks (・, U+3040) are no terms.
_RUN = re.compile(f"((?:(?=[{_CJK}])[^\\W_])+)|(?:(?![{_CJK}])[^\\W_])+", re.UNICODE)
_CJK_CHAR = re.compile(f"[{_CJK}]")


def _is_cjk(char: str) -> bool:
    return _CJK_CHAR.match(char) is not None


def _runs(text: str) -> Iterable[tuple[bool, str]]:
    """(is CJK, run) for each word or CJK run of the text, in order."""
    text = unicodedata.normalize("NFKC", text[:MAX_TEXT_CHARS]).casefold()
    for match in _RUN.finditer(text):
        yield match.group(1) is not None, match.group()


def terms_of(text: str) -> set[str]:
    """The index terms of a text: words, and CJK characters and bigrams."""
    found: set[str] = set()
    for cjk, run in _runs(text):
        if cjk:
            found.update(run)
            found.update(run[i : i + 2] for i in range(len(run) - 1))
        elif len(run) <= MAX_TERM_CHARS:
            found.add(run)
    return found


def query_terms(query: str) -> tuple[list[str], str]:
    """(terms every match must hold, a prefix the last Latin word may be the start of)."""
    terms: list[str] = []
    prefix = ""
    runs = list(_runs(query))
    for position, (cjk, run) in enumerate(runs):
        if cjk:
            terms.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
        elif position == len(runs) - 1 and len(run) >= 2 and query.rstrip() == query:
            prefix = run[:MAX_TERM_CHARS]  # still being typed: any word it starts
        else:
            terms.append(run[:MAX_TERM_CHARS])
    unique = list(dict.fromkeys(terms))[:MAX_QUERY_TERMS]
    return unique, prefix


def indexable(query: str) -> bool:
    """Whether the index can answer `query`: not when it is only single Latin letters or digits, which
    say too little (the caller looks through the newest conversations instead)."""
    terms, prefix = query_terms(query)
    return bool(prefix) or any(len(term) > 1 or _is_cjk(term) for term in terms)


class SearchIndex:
    """Keeps the index as conversations change, and answers queries from it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue: list[tuple[str, str, set[str]]] = []
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="search-index")

    async def aclose(self) -> None:
        await stop_task(self.task)
        await self.flush()

    # keeping it -------------------------------------------------------------

    def add(self, conversation: Conversation, *texts: str) -> None:
        """Queue the terms of new text of a conversation (written within FLUSH_SECONDS)."""
        terms: set[str] = set()
        for text in texts:
            terms |= terms_of(text)
        if terms:
            self.queue.append((conversation.user_id, conversation.id, terms))
            self.wake.set()

    def turn_started(self, run: Any) -> None:
        """The turn writer's hook: the user message (and the title it gave) are searchable at once."""
        self.add(run.conversation, run.conversation.title, run.user_message.content if run.user_message else "")

    def reply_saved(self, run: Any, reply: Message) -> None:
        """The turn writer's hook: the reply, once saved."""
        self.add(run.conversation, reply.content)

    async def flush(self) -> None:
        batch, self.queue = self.queue, []
        if not batch:
            return
        try:
            await self.store.index_terms(batch)
        except RedisError as exc:  # search misses these until the user's index is rebuilt
            log.warning("search index write failed (%d entries): %s", len(batch), exc)

    async def _run(self) -> None:
        """Write at once when idle; under load, at most once per FLUSH_SECONDS (what arrived meanwhile
        goes in the same pipeline)."""
        loop = asyncio.get_running_loop()
        last = -FLUSH_SECONDS
        while True:
            await self.wake.wait()
            self.wake.clear()
            delay = last + FLUSH_SECONDS - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            last = loop.time()
            await self.flush()

    async def index_now(self, conversation: Conversation, messages: list[Message]) -> None:
        """Index a whole conversation at once (put back after a delete, imported, rebuilt)."""
        terms = terms_of(conversation.title)
        for message in messages:
            if message.kind != "welcome":
                terms |= terms_of(message.content)
        if terms:
            await self.store.index_terms([(conversation.user_id, conversation.id, terms)], renew=True)

    async def remove(self, conversation: Conversation) -> None:
        await self.store.unindex_conversation(conversation.user_id, conversation.id)

    async def rebuild(self, user_id: str) -> int:
        """Index every conversation of a user (those from before the index existed); returns how many."""
        sids = await self.store.session_ids(user_id)
        for start in range(0, len(sids), 50):
            for conversation in await self.store.load_conversations(user_id, sids[start : start + 50]):
                await self.index_now(conversation, await self.store.all_messages(conversation))
        await self.store.mark_search_index_ready(user_id)
        return len(sids)

    # asking it --------------------------------------------------------------

    async def search(self, user_id: str, query: str, *, limit: int) -> list[Conversation]:
        """The user's conversations matching every word of `query`, newest activity first."""
        terms, prefix = query_terms(query)
        if not terms and not prefix:
            return []
        if not await self.store.search_index_ready(user_id):
            await self.rebuild(user_id)
        sids = await self.store.search_ids(user_id, terms, prefix, limit=limit)
        return await self.store.load_conversations(user_id, sids)
