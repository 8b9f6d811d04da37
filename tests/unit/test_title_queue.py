"""The queue of generated titles (webapp/auto_title.py): a bounded number asked for at once, a bounded
backlog, and a writer that outlives one title's failure. The model and the store are stand-ins that
record what they are asked; the real ones are tested over HTTP in tests/test_share_export.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from webapp.base.models import Message
from webapp.core.auto_title import TitleWriter


class SlowModel:
    """Answers each title call when the test lets it; counts how many are open at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.open = self.most_open = 0
        self.asked: list[str] = []

    async def complete(self, messages: list[dict[str, str]], *, model: str | None = None) -> str:
        self.asked.append(messages[1]["content"].split("\n")[0])
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.release.wait()
            if "boom" in messages[1]["content"]:
                raise RuntimeError("a surprise")
            return "A title"
        finally:
            self.open -= 1


class Titles:
    """The store's part: every title is set."""

    def __init__(self) -> None:
        self.set: list[str] = []

    async def set_generated_title(self, user_id: str, session_id: str, *, expected: str, title: str) -> bool:
        self.set.append(session_id)
        return True

    async def get_conversation(self, user_id: str, session_id: str) -> None:
        return None


def writer_of(**limits: int) -> tuple[SlowModel, Titles, TitleWriter]:
    """A title writer over a slow stand-in model and store (the search index's part does nothing)."""
    model, store = SlowModel(), Titles()
    return model, store, TitleWriter(store, model, SimpleNamespace(add=lambda *_: None), enabled=True, **limits)


async def writers_done(writer: TitleWriter) -> None:
    """Until every writer has left (the queue drained), at most a second."""
    for _ in range(100):
        if not writer.tasks:
            return
        await asyncio.sleep(0.01)


def first_exchange(number: int, question: str = "") -> tuple[Any, Message]:
    conversation = SimpleNamespace(user_id="u", id=f"s{number}", title=f"first {number}", title_by="first_message")
    run = SimpleNamespace(first_exchange=True, conversation=conversation, model="",
                          user_message=Message(id="m1", role="user", content=question or f"question {number}", ts=""))
    return run, Message(id="m2", role="assistant", content="answer", ts="")


def test_at_most_writers_titles_are_asked_for_at_once_and_every_queued_one_is_written() -> None:
    async def main() -> None:
        model, store, writer = writer_of(writers=3)
        for number in range(10):
            writer.reply_saved(*first_exchange(number))
        await asyncio.sleep(0.05)
        assert model.open == 3 and len(writer.tasks) == 3 and len(writer.waiting) == 7
        model.release.set()
        await writers_done(writer)
        assert sorted(store.set) == sorted(f"s{number}" for number in range(10)) and model.most_open == 3
        assert not writer.tasks and not writer.waiting
        writer.reply_saved(*first_exchange(10))  # after the writers left: a new one starts
        await asyncio.sleep(0.05)
        assert "s10" in store.set

    asyncio.run(main())


def test_past_the_backlog_the_oldest_waiting_title_is_dropped_and_a_failure_stops_no_writer() -> None:
    async def main() -> None:
        model, store, writer = writer_of(writers=1, backlog=2)
        writer.reply_saved(*first_exchange(0, "boom"))  # asked for at once, and it fails
        await asyncio.sleep(0.01)
        for number in (1, 2, 3):
            writer.reply_saved(*first_exchange(number))
        assert [job.session_id for job in writer.waiting] == ["s2", "s3"]  # s1 dropped: it keeps its first title
        model.release.set()
        await writers_done(writer)
        assert store.set == ["s2", "s3"] and model.asked == ["boom", "question 2", "question 3"]

    asyncio.run(main())


def test_closing_drops_the_waiting_titles_and_cancels_the_writers() -> None:
    async def main() -> None:
        model, store, writer = writer_of(writers=2)
        for number in range(5):
            writer.reply_saved(*first_exchange(number))
        await asyncio.sleep(0.01)
        await writer.aclose()
        assert not writer.waiting and not writer.tasks and not store.set

    asyncio.run(main())


def test_titles_wait_while_replies_are_being_written_and_go_in_the_lull() -> None:
    async def main() -> None:
        replies_being_written = [10]
        model, store, writer = writer_of()
        writer.busy, writer.quiet_turns = (lambda: replies_being_written[0]), 4
        model.release.set()
        writer.reply_saved(*first_exchange(1))
        await asyncio.sleep(0.6)
        assert model.asked == [] and store.set == []  # ten replies streaming: the title waits
        replies_being_written[0] = 3
        await writers_done(writer)
        assert model.asked == ["question 1"] and store.set == ["s1"]

    asyncio.run(main())


def test_a_title_waits_for_a_lull_at_most_max_wait_after_its_reply() -> None:
    async def main() -> None:
        model, store, writer = writer_of()
        writer.busy, writer.quiet_turns, writer.max_wait = (lambda: 1000), 4, 0.3
        model.release.set()
        writer.reply_saved(*first_exchange(1))
        await writers_done(writer)
        assert store.set == ["s1"]  # written under load all the same, once it had waited long enough

    asyncio.run(main())
