"""The turn stream's entry codec: many chunks in one XADD entry, read back whole or from mid-entry.

Exercises store.py's private helpers directly: they are the part of the stream format
that a Redis round trip would only test slowly.
"""

from __future__ import annotations

from webapp.base.models import TurnEvent
from webapp.storage.turn_events import entry_fields, events_after, parse_entry

CHUNKS = [
    TurnEvent(4, "chunk", "Hel"),
    TurnEvent(5, "chunk", "lo, "),
    TurnEvent(6, "chunk", ""),
    TurnEvent(7, "chunk", "世界"),
]


def entry(events: list[TurnEvent]) -> tuple[str, dict[str, str]]:
    """A stream row as XRANGE returns it: the entry id is the last seq."""
    return f"0-{events[-1].seq}", entry_fields(events)


def test_a_multi_chunk_entry_holds_the_text_once_with_first_seq_and_lengths() -> None:
    assert entry_fields(CHUNKS) == {"t": "chunk", "c": "Hello, 世界", "f": "4", "n": "3,4,0,2"}


def test_a_multi_chunk_entry_reads_back_as_the_same_chunks() -> None:
    assert parse_entry(*entry(CHUNKS)) == CHUNKS


def test_resuming_after_a_seq_inside_an_entry_gives_only_the_later_chunks() -> None:
    rows = [entry(CHUNKS)]
    assert events_after(rows, 5) == CHUNKS[2:]
    assert events_after(rows, 3) == CHUNKS
    assert events_after(rows, 7) == []


def test_events_after_spans_several_entries_in_order() -> None:
    first = [TurnEvent(1, "chunk", "a"), TurnEvent(2, "chunk", "b")]
    end = [TurnEvent(8, "end", message_id="m_0123456789abcdef")]
    rows = [entry(first), entry(CHUNKS), entry(end)]
    assert events_after(rows, 1) == [first[1], *CHUNKS, end[0]]


def test_an_end_entry_keeps_its_message_id() -> None:
    end = TurnEvent(12, "end", message_id="m_0123456789abcdef")
    fields = entry_fields([end])
    assert fields == {"t": "end", "c": "", "m": "m_0123456789abcdef"}
    assert parse_entry("0-12", fields) == [end]


def test_an_error_entry_keeps_its_text_and_has_no_message_id() -> None:
    error = TurnEvent(3, "error", "AI服务暂时不可用，请稍后重试")
    fields = entry_fields([error])
    assert "m" not in fields
    assert parse_entry("0-3", fields) == [error]


def test_a_single_chunk_entry_round_trips_without_lengths() -> None:
    chunk = TurnEvent(1, "chunk", "only")
    fields = entry_fields([chunk])
    assert "n" not in fields
    assert parse_entry("0-1", fields) == [chunk]
