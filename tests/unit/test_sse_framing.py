"""SSE on the wire: resume ids, merging of unsent chunks, hand-made frames, seed payloads (webapp/sse.py)."""

from __future__ import annotations

import pytest
from sse_starlette import ServerSentEvent

from webapp.base.models import TurnEvent
from webapp.web.sse import json_event_frame, merged, named_event_frame, parse_last_event_id, seed_payload


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3f1c:5", ("3f1c", 5)),
        ("a:b:9", ("a:b", 9)),  # only the last colon separates the seq
        ("7", (None, 7)),
        (" 4 ", (None, 4)),
        ("t:-3", ("t", 0)),
        ("-2", (None, 0)),
    ],
)
def test_last_event_id_gives_the_turn_and_the_seq_to_resume_after(value: str, expected: tuple[str | None, int]) -> None:
    assert parse_last_event_id(value) == expected


@pytest.mark.parametrize("value", [None, "", "garbage", "turn:", "turn:x", "1.5", ":"])
def test_an_unreadable_last_event_id_means_from_the_start(value: str | None) -> None:
    assert parse_last_event_id(value) == (None, 0)


def test_consecutive_chunks_go_out_as_one_event_with_the_last_seq() -> None:
    batch = [TurnEvent(1, "chunk", "Hel"), TurnEvent(2, "chunk", "lo"), TurnEvent(3, "chunk", "!")]
    assert merged(batch) == [TurnEvent(3, "chunk", "Hello!")]


def test_end_and_error_events_are_never_merged_into_chunks() -> None:
    batch = [
        TurnEvent(1, "chunk", "a"),
        TurnEvent(2, "chunk", "b"),
        TurnEvent(3, "end", message_id="m_1"),
        TurnEvent(4, "error", "boom"),
        TurnEvent(5, "chunk", "c"),
    ]
    assert merged(batch) == [
        TurnEvent(2, "chunk", "ab"),
        TurnEvent(3, "end", message_id="m_1"),
        TurnEvent(4, "error", "boom"),
        TurnEvent(5, "chunk", "c"),
    ]


def test_merging_leaves_the_events_it_was_given_unchanged() -> None:
    first = TurnEvent(1, "chunk", "a")
    merged([first, TurnEvent(2, "chunk", "b")])
    assert first == TurnEvent(1, "chunk", "a")


def test_merging_nothing_gives_nothing() -> None:
    assert merged([]) == []


def test_json_event_frame_is_an_id_line_a_data_line_and_a_blank_line() -> None:
    frame = json_event_frame("3f1c:12", b'{"content":"hi","type":"chunk"}')
    assert frame == b'id: 3f1c:12\r\ndata: {"content":"hi","type":"chunk"}\r\n\r\n'


def test_json_event_frame_encodes_a_non_ascii_id_as_utf8() -> None:
    assert json_event_frame("é:1", b"{}") == "id: é:1\r\ndata: {}\r\n\r\n".encode()


def test_seed_payload_of_a_chunk_carries_its_text() -> None:
    assert seed_payload(TurnEvent(1, "chunk", "你好"), "sid") == {"content": "你好", "type": "chunk"}


def test_seed_payload_of_the_end_names_the_session() -> None:
    assert seed_payload(TurnEvent(9, "end", message_id="m_1"), "sid") == {"type": "end", "session_id": "sid"}


def test_seed_payload_of_an_error_carries_the_message() -> None:
    assert seed_payload(TurnEvent(4, "error", "AI服务暂时不可用"), "sid") == {
        "content": "AI服务暂时不可用",
        "type": "error",
    }


@pytest.mark.parametrize(
    "data",
    ["", "plain", "a\nb", "a\r\nb\rc\n", "\n", "&lt;b&gt; 你好", '<article id="x">\n  <p>y</p>\n</article>\n'],
)
@pytest.mark.parametrize("event_id", ["t1:5", None])
def test_a_named_event_framed_by_hand_is_what_sse_starlette_would_send(data: str, event_id: str | None) -> None:
    expected = ServerSentEvent(data=data, event="chunk", id=event_id, sep="\r\n").encode()
    assert named_event_frame("chunk", event_id, data) == expected


def test_the_send_wrappers_a_streams_events_skip_only_watch_a_response_start_and_end() -> None:
    """A stream's events go straight to the server's `send` (sse.SERVER_SEND), past the middleware
    between, which is right only while each of those only watches the start (and the Edge the end).
    A middleware that changes bodies (GZip, say) must not be added without routing events through it."""
    from webapp.main import create_app

    layer = create_app().build_middleware_stack()
    names = []
    while layer is not None and not hasattr(layer, "routes"):
        names.append(f"{type(layer).__module__}.{type(layer).__qualname__}")
        layer = getattr(layer, "app", None)
    assert names == [
        "starlette.middleware.errors.ServerErrorMiddleware",
        "fastapi.telemetry._asgi.ExceptionTelemetryMiddleware",
        "fastapi._body_limit.AppBodyLimitMiddleware",
        "webapp.web.edge.Edge",
        "starlette.middleware.exceptions.ExceptionMiddleware",
        "fastapi.middleware.asyncexitstack.AsyncExitStackMiddleware",
    ]
