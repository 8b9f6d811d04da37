"""What a conversation is called and how the session list previews it."""

from __future__ import annotations

TITLE_CHARS = 40  # a title made from the first message
TITLE_MAX_CHARS = 200  # a title a user typed
PREVIEW_CHARS = 50  # the seed's 50-char preview


def make_title(text: str, limit: int = TITLE_CHARS) -> str:
    """First user message, whitespace collapsed and trimmed to `limit` chars."""
    title = " ".join(text.split())
    return title if len(title) <= limit else title[: limit - 1] + "…"


def clean_title(text: str, limit: int = TITLE_MAX_CHARS) -> str:
    """A title a user typed: whitespace collapsed (no newlines), at most `limit` chars; may be empty."""
    return " ".join(text.split())[:limit]


def make_preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """The latest message, on one line, cut to the seed's 50 characters."""
    return " ".join(text.split())[:limit]
