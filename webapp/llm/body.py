"""A chat request's body as it is written to the provider: JSON, with each image's data URL spliced in as the
stored base64, never copied into one string; a large body is written in slices, the event loop served between
them. A turn whose context holds a dozen photos (~1.3 MB of base64 each) then costs the loop a few small steps,
not one of tens of ms for building and serializing a 20 MB string (bench/attachments.py).

Images go in the messages as `InlineImage` (in an `image_url` part's `url`); `encode` serializes the rest with
orjson, each image as a placeholder a random token names, and splits the JSON there.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from typing import Any, AsyncIterator

import orjson

SLICE = 2**18  # bytes written at a time: the loop's step for each is well under a ms


@dataclass(frozen=True, slots=True)
class InlineImage:
    """An image as a data URL, kept as its parts: the media type and the base64 (as stored)."""

    media_type: str
    data_b64: str

    @property
    def url(self) -> str:
        """The data URL itself (a copy: for the demo model and tests, not for the request's body)."""
        return f"data:{self.media_type};base64,{self.data_b64}"


def url_of(value: str | InlineImage) -> str:
    return value.url if isinstance(value, InlineImage) else value


def encode(request: dict[str, Any]) -> list[bytes | InlineImage]:
    """The body as pieces: JSON bytes, and images (each written as a JSON string of its data URL)."""
    images: list[InlineImage] = []
    token = secrets.token_hex(12)

    def placeholder(value: object) -> str:
        if not isinstance(value, InlineImage):
            raise TypeError(f"not JSON: {type(value).__name__}")
        images.append(value)
        return f"{token}-{len(images) - 1}"

    body = orjson.dumps(request, default=placeholder, option=orjson.OPT_PASSTHROUGH_DATACLASS)
    if not images:
        return [body]
    pieces: list[bytes | InlineImage] = []
    for n, piece in enumerate(re.split(b'"' + token.encode() + rb'-(\d+)"', body)):
        pieces.append(images[int(piece)] if n % 2 else piece)
    return pieces


def _image_head(image: InlineImage) -> bytes:
    return b'"data:' + image.media_type.encode() + b';base64,'


def length(pieces: list[bytes | InlineImage]) -> int:
    return sum(len(p) if isinstance(p, bytes) else len(_image_head(p)) + len(p.data_b64) + 1 for p in pieces)


def aiohttp_body(pieces: list[bytes | InlineImage]) -> dict[str, Any]:
    """`data` (and headers) for aiohttp: one piece of at most SLICE bytes as it is; else the slices, with an
    explicit Content-Length (so no chunked encoding, which some OpenAI-compatible servers refuse)."""
    if len(pieces) == 1 and isinstance(pieces[0], bytes) and len(pieces[0]) <= SLICE:
        return {"data": pieces[0]}
    return {"data": slices(pieces), "headers": {"Content-Length": str(length(pieces))}}


async def slices(pieces: list[bytes | InlineImage]) -> AsyncIterator[bytes]:
    for piece in pieces:
        if isinstance(piece, bytes):
            for start in range(0, len(piece), SLICE):
                yield piece[start:start + SLICE]
                await asyncio.sleep(0)
            continue
        yield _image_head(piece)
        data = piece.data_b64
        for start in range(0, len(data), SLICE):
            yield data[start:start + SLICE].encode("ascii")
            await asyncio.sleep(0)
        yield b'"'
