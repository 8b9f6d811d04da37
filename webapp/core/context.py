"""What the model is sent with a turn, and what a user may send: pure functions, no I/O.

Kept apart from the turn machinery so that the rules (the message limit, the context
window and its char budget) are tested in-process in milliseconds (tests/unit/).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from webapp.base.errors import EmptyMessage, MessageTooLong, UndecodableText
from webapp.base.models import Message
from webapp.core.attachments import document_block, image_part
from webapp.core.roles import Role

IMAGE_CHARS = 1000  # what an image counts for against the char budget (its tokens are the provider's)


def check_text(text: str) -> str:
    """`text` if it is valid Unicode; JSON can carry lone surrogates ("\\ud800") that no store can keep."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UndecodableText() from None
    return text


def validate_message(text: str | None, max_chars: int, *, with_files: bool = False) -> str:
    """The message as it will be saved, or a domain error: empty (unless it carries files), too long, or not
    valid Unicode."""
    if with_files and (text is None or not text.strip()):
        return ""
    if text is None or not text.strip():
        raise EmptyMessage()
    if len(text) > max_chars:
        raise MessageTooLong(limit=max_chars)
    return check_text(text)


def build_context(role: Role, window: list[Message], budget_chars: int,
                  files: dict[str, tuple[str, str]] | None = None, *, vision: bool = False) -> list[dict[str, Any]]:
    """System prompt + the window, trimmed oldest-first to the char budget; the newest message always stays.

    A message with attachments (`files`: id -> (bytes in base64, text), storage/attachments.py) carries its
    documents' text after its own, and, for a `vision` model, its images as `image_url` content parts (an
    image in the window of a model that takes none is named in the text instead)."""
    files = files or {}
    kept: list[Message] = []
    used = 0
    for message in reversed(window):
        if not message.content and not message.attachments:
            continue
        size = len(message.content) + sum(
            IMAGE_CHARS if a.kind == "image" else len(files.get(a.id, ("", ""))[1]) for a in message.attachments)
        if kept and used + size > budget_chars:
            break
        kept.append(message)
        used += size
    kept.reverse()
    # the newest message always goes, but its documents only as far as the budget reaches (the cut is said)
    newest = kept[-1] if kept else None
    room = None
    if newest is not None and used > budget_chars:
        documents = [a for a in newest.attachments if a.kind != "image"]
        images = len(newest.attachments) - len(documents)
        room = max(0, budget_chars - len(newest.content) - images * IMAGE_CHARS) // max(1, len(documents))
    return [{"role": "system", "content": role.system_prompt}] + [
        {"role": m.role, "content": _content(m, files, vision, room if m is newest else None) if m.attachments
         else m.content} for m in kept
    ]


def _content(message: Message, files: dict[str, tuple[str, str]], vision: bool,
             room: int | None = None) -> str | list[dict[str, Any]]:
    """`room`: how many characters of each document's text fit the context window (None: all)."""
    text, images = message.content, []
    for attachment in message.attachments:
        data, document = files.get(attachment.id, ("", ""))
        if attachment.kind != "image" and not document and attachment.kept:
            text += f"\n\n[file: {attachment.name}: no longer stored]"  # (expired, or evicted, with its text)
        elif attachment.kind != "image":
            if room is not None and len(document) > room:
                document = document[:room]
                attachment = replace(attachment, kept=len(document))  # (its block says how much is included)
            text += document_block(attachment, document)
        elif vision and data:
            images.append(image_part(attachment, data))
        else:
            text += f"\n\n[image: {attachment.name}]"
    if not images:
        return text
    return ([{"type": "text", "text": text}] if text else []) + images
