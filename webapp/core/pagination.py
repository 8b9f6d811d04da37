"""Cursors of the conversation list: `{score}_{session_id}` of the previous page's last item.

A (score, id) pair, not an offset, so conversations that share an activity time are
neither skipped nor repeated, and a page stays right while new activity reorders the list.
"""

from __future__ import annotations

from webapp.base.errors import InvalidCursor
from webapp.base.ids import ID_PATTERN

Cursor = tuple[float, str]

MAX_INDEX = 10**9  # the largest list position or event seq taken from a client: far past any
                   # conversation or reply, well inside Redis's integer range


def parse_cursor(cursor: str | None) -> Cursor | None:
    """The (score, id) a `next_cursor` stands for; InvalidCursor for anything else."""
    if not cursor:
        return None
    score, _, session_id = cursor.partition("_")
    try:
        value = float(score)
    except ValueError:
        raise InvalidCursor() from None
    if value != value or value in (float("inf"), float("-inf")) or not ID_PATTERN.fullmatch(session_id):
        raise InvalidCursor()
    return value, session_id


def format_cursor(cursor: Cursor | None) -> str | None:
    return f"{cursor[0]!r}_{cursor[1]}" if cursor else None
