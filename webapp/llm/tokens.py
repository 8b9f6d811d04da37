"""Token estimates for replies whose provider reports no counts (the demo model, an API that ignores
`stream_options.include_usage`): no tokenizer, which would download its vocabulary at run time.

About four characters per token for Latin text, about one per CJK character (what OpenAI's and
Qwen's tokenizers give for Chinese prose, to within a third). Counted in C, not per character in
Python: UTF-8 takes one byte for ASCII and three for CJK, so the bytes beyond one per character, halved,
count the wide characters."""

from __future__ import annotations

import math
from typing import Any

from webapp.base.models import Usage

MESSAGE_OVERHEAD = 4  # the chat format's tokens around each message (role, separators)
IMAGE_TOKENS = 1000  # an image part (OpenAI's count for a 2048 x 1024 image at high detail is ~1,100)


def estimate_tokens(text: str) -> int:
    if not text:
        return 0
    chars = len(text)
    wide = (len(text.encode("utf-8", "replace")) - chars) / 2
    return math.ceil(wide + (chars - min(wide, chars)) / 4)


def estimate_content(content: Any) -> int:
    """A message's content: its text, or its content parts (text, and IMAGE_TOKENS an image)."""
    if isinstance(content, str):
        return estimate_tokens(content)
    if isinstance(content, list):
        return sum(estimate_tokens(part.get("text") or "") if part.get("type") == "text" else IMAGE_TOKENS
                   for part in content if isinstance(part, dict))
    return 0


def estimate_usage(messages: list[dict[str, Any]], reply: str, usage: Usage) -> Usage:
    """Fill `usage` with an estimate of the prompt `messages` and the `reply` (marked estimated)."""
    usage.input_tokens = sum(estimate_content(m.get("content")) + MESSAGE_OVERHEAD for m in messages)
    usage.output_tokens = estimate_tokens(reply)
    usage.estimated = True
    return usage
