"""What the model is sent with a turn, and what a user may send: pure functions, no I/O.

Kept apart from the turn machinery so that the rules (the message limit, the context
window and its char budget) are tested in-process in milliseconds (tests/unit/).
"""

from __future__ import annotations

from webapp.base.errors import EmptyMessage, MessageTooLong, UndecodableText
from webapp.base.models import Message
from webapp.core.roles import Role


def check_text(text: str) -> str:
    """`text` if it is valid Unicode; JSON can carry lone surrogates ("\\ud800") that no store can keep."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UndecodableText() from None
    return text


def validate_message(text: str | None, max_chars: int) -> str:
    """The message as it will be saved, or a domain error: empty, too long, or not valid Unicode."""
    if text is None or not text.strip():
        raise EmptyMessage()
    if len(text) > max_chars:
        raise MessageTooLong(limit=max_chars)
    return check_text(text)


def build_context(role: Role, window: list[Message], budget_chars: int) -> list[dict[str, str]]:
    """System prompt + the window, trimmed oldest-first to the char budget; the newest message always stays."""
    kept: list[Message] = []
    used = 0
    for message in reversed(window):
        if not message.content:
            continue
        size = len(message.content)
        if kept and used + size > budget_chars:
            break
        kept.append(message)
        used += size
    kept.reverse()
    return [{"role": "system", "content": role.system_prompt}] + [
        {"role": m.role, "content": m.content} for m in kept
    ]
