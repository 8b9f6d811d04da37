"""Conversation list cursors `{score}_{session_id}` (webapp/pagination.py)."""

from __future__ import annotations

import pytest

from webapp.base.errors import InvalidCursor
from webapp.core.pagination import format_cursor, parse_cursor

SID = "0f1e2d3c-4b5a-4968-8776-655443322110"


@pytest.mark.parametrize("score", [1718000000123.0, 1718000000123.456, 0.0, -1.5, 1e16])
def test_a_formatted_cursor_parses_back_to_the_same_score_and_id(score: float) -> None:
    cursor = format_cursor((score, SID))
    assert cursor is not None
    assert parse_cursor(cursor) == (score, SID)


def test_no_cursor_means_the_first_page() -> None:
    assert parse_cursor(None) is None
    assert parse_cursor("") is None
    assert format_cursor(None) is None


@pytest.mark.parametrize(
    "cursor",
    [
        f"nan_{SID}",
        f"NaN_{SID}",
        f"inf_{SID}",
        f"-inf_{SID}",
        f"1e400_{SID}",  # overflows to inf
        f"abc_{SID}",
        f"_{SID}",
        "1718000000123.0",  # no underscore
        "1718000000123.0_",
        "1718000000123.0_not-a-uuid",
        f"1718000000123.0_{SID.upper()}",
        f"1718000000123.0_{SID}_extra",
    ],
)
def test_a_malformed_cursor_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        parse_cursor(cursor)
