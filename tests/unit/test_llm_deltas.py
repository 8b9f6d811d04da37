"""Reading an OpenAI-compatible chat.completion.chunk stream line by line (webapp/llm.py delta_text)."""

from __future__ import annotations

import pytest

from webapp.llm.providers import Finishing, UpstreamError, delta_text


def test_a_data_line_gives_its_delta_text() -> None:
    assert delta_text(b'data: {"choices":[{"delta":{"content":"Hello"}}]}') == "Hello"


def test_a_data_line_without_a_space_or_with_a_carriage_return_is_read_too() -> None:
    assert delta_text(b'data:{"choices":[{"delta":{"content":"\\u4f60"}}]}') == "你"
    assert delta_text(b'data: {"choices":[{"delta":{"content":"x"}}]}\r') == "x"


def test_done_ends_the_stream() -> None:
    assert delta_text(b"data: [DONE]") is None
    assert delta_text(b"data: [DONE]\r") is None


@pytest.mark.parametrize("line", [b"", b": keep-alive", b"event: message", b"id: 3", b"retry: 100"])
def test_a_line_that_is_not_data_gives_no_text(line: bytes) -> None:
    assert delta_text(line) == ""


@pytest.mark.parametrize("line", [b"data: {not json", b"data: ", b'data: {"choices":'])
def test_malformed_json_gives_no_text(line: bytes) -> None:
    assert delta_text(line) == ""


@pytest.mark.parametrize(
    "line",
    [
        b'data: {"choices":[{"delta":{"role":"assistant"}}]}',
        b'data: {"choices":[{"delta":{"content":null}}]}',
        b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}',
        b'data: {"choices":[]}',
        b'data: {"usage":{"total_tokens":3}}',
        b"data: [1, 2]",
        b'data: "text"',
    ],
)
def test_a_chunk_without_content_gives_no_text(line: bytes) -> None:
    assert delta_text(line) == ""


def test_an_error_object_in_the_stream_raises_an_upstream_error() -> None:
    with pytest.raises(UpstreamError) as caught:
        delta_text(b'data: {"error":{"message":"overloaded","type":"server_error"}}')
    assert caught.value.key == "error.upstream"
    assert "overloaded" not in str(caught.value)  # the raw error is never what the user sees


def test_a_chunk_with_a_finish_reason_says_the_reply_is_whole_with_or_without_text() -> None:
    last = delta_text(b'data: {"choices":[{"delta":{"content":"bye"},"finish_reason":"stop"}]}')
    assert last == "bye" and isinstance(last, Finishing)
    empty = delta_text(b'data: {"choices":[{"delta":{},"finish_reason":"length"}]}')
    assert empty == "" and isinstance(empty, Finishing)
    assert not isinstance(delta_text(b'data: {"choices":[{"delta":{"content":"x"},"finish_reason":null}]}'),
                          Finishing)
