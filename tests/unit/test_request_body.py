"""The chat request's body with images spliced in (llm/body.py): the same JSON as the data URLs inline would
give, of the length it says, in slices no larger than SLICE, and nothing else read as an image."""

from __future__ import annotations

import asyncio
import base64
import os

import orjson

from webapp.llm.body import SLICE, InlineImage, aiohttp_body, encode, length, slices


def request_with(*images: InlineImage, text: str = "look") -> dict:
    return {"model": "m", "stream": True, "messages": [
        {"role": "system", "content": "你是助手 \"quoted\" \\ </script>"},
        {"role": "user", "content": [{"type": "text", "text": text}]
         + [{"type": "image_url", "image_url": {"url": image}} for image in images]}]}


def written(pieces) -> bytes:
    async def collect():
        return [chunk async for chunk in slices(pieces)]

    chunks = asyncio.run(collect())
    assert all(len(chunk) <= SLICE for chunk in chunks)
    return b"".join(chunks)


def inline(request: dict) -> dict:
    """The request as it would be with each image's data URL as a plain string."""
    return orjson.loads(orjson.dumps(request, default=lambda image: image.url,
                                     option=orjson.OPT_PASSTHROUGH_DATACLASS))


def test_images_are_spliced_in_as_their_data_urls():
    big = InlineImage("image/jpeg", base64.b64encode(os.urandom(3 * SLICE)).decode())
    small = InlineImage("image/png", base64.b64encode(b"\x89PNG tiny").decode())
    request = request_with(big, small, big)
    pieces = encode(request)
    body = written(pieces)
    assert len(body) == length(pieces)
    assert orjson.loads(body) == inline(request)
    assert orjson.loads(body)["messages"][1]["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    sent = aiohttp_body(pieces)
    assert sent["headers"] == {"Content-Length": str(len(body))}


def test_a_body_without_images_is_sent_whole_and_text_like_a_placeholder_stays_text():
    pieces = encode(request_with(text='"0123-0" {"url": "x"}'))
    assert len(pieces) == 1 and aiohttp_body(pieces) == {"data": pieces[0]}
    assert orjson.loads(pieces[0])["messages"][1]["content"][0]["text"] == '"0123-0" {"url": "x"}'


def test_a_large_body_without_images_is_written_in_slices():
    request = request_with(text="字" * SLICE)
    pieces = encode(request)
    body = written(pieces)
    assert orjson.loads(body) == request and int(aiohttp_body(pieces)["headers"]["Content-Length"]) == len(body)
