"""Server-Sent Events on the wire: framing, resume ids, and a leaner EventSourceResponse.

The one module that relies on sse-starlette's private parts (listed in
webapp/base/library_internals.py, checked by tests/unit/test_library_internals.py):
`EventSourceResponse._listen_for_exit_signal`, `_send_with_timeout`, `_stream_response`,
`_ping_interval`, and the attributes `active`, `send_timeout`, `data_sender_callable`,
`background`, `sep`, `_response_started`. sse-starlette is pinned to the release range they were tested with.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timezone
from functools import partial
from typing import Callable

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from webapp.base.models import TurnEvent
from webapp.core.turns.run import MAX_EVENT_CHARS
from webapp.core.pagination import MAX_INDEX

PING_SECONDS = 15
# the server's own `send`, noted in the scope by the app (main.ChatApp): a stream's events go straight
# to it once the response has started, past the send wrappers between (Starlette's error and exception
# middleware, FastAPI's body limit, request_response's, the Edge's), each of which only watches for the
# response's start (and the Edge for its end, which still passes them all)
SERVER_SEND = "webapp.server_send"
STREAM_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}


MAX_SEQ = MAX_INDEX  # far past any reply's last event, well inside a Redis stream id


def parse_last_event_id(value: str | None) -> tuple[str | None, int]:
    """`{turn_id}:{seq}` (or a bare seq) -> (turn_id, seq); anything else means 'from the start'.

    A seq past MAX_SEQ means "after everything": it never reaches Redis as an invalid stream id.
    """
    if not value:
        return None, 0
    turn_id, _, seq = value.strip().rpartition(":")
    try:
        return (turn_id or None), min(MAX_SEQ, max(0, int(seq)))
    except ValueError:
        return None, 0


def seed_payload(event: TurnEvent, session_id: str) -> dict[str, str]:
    """The seed's event shapes: chunk / end / error."""
    if event.type == "chunk":
        return {"content": event.content, "type": "chunk"}
    if event.type == "end":
        return {"type": "end", "session_id": session_id}
    return {"content": event.content, "type": "error"}


def merged(batch: list[TurnEvent]) -> list[TurnEvent]:
    """Chunks a reader has not sent yet go out as one event: a slow reader catches up in one write
    (of events of MAX_EVENT_CHARS at most, as the writer makes them)."""
    out: list[TurnEvent] = []
    for event in batch:
        if (out and event.type == "chunk" and out[-1].type == "chunk"
                and len(out[-1].content) + len(event.content) <= MAX_EVENT_CHARS):
            out[-1] = TurnEvent(seq=event.seq, type="chunk", content=out[-1].content + event.content)
        else:
            out.append(event)
    return out


def json_event_frame(event_id: str, data: bytes) -> bytes:
    """One SSE event, framed by hand: JSON never holds a raw line break, so its data is one line.

    Sent once per chunk to every reader; ~15x cheaper than building and encoding a
    ServerSentEvent (sse-starlette sends bytes as they are).
    """
    return b"id: " + event_id.encode() + b"\r\ndata: " + data + b"\r\n\r\n"


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def named_event_frame(event: str, event_id: str | None, data: str) -> bytes:
    """One named SSE event with text data, framed by hand: the bytes ServerSentEvent encodes
    (each line of `data` its own field, which EventSource joins again), without building one
    per chunk; the web UI's HTML events go out this way."""
    if "\n" in data or "\r" in data:
        data = "\r\ndata: ".join(_LINE_BREAK.split(data))
    head = f"id: {event_id}\r\n" if event_id else ""
    return f"{head}event: {event}\r\ndata: {data}\r\n\r\n".encode()


class OpenStreams:
    """This worker's open event streams: one ticker pings the idle ones and ends all at shutdown.

    One task per worker instead of a ping task and a shutdown watcher per stream.
    """

    def __init__(self) -> None:
        self.streams: set[TurnEventResponse] = set()
        self.tick = 1.0
        self.task: asyncio.Future[None] | None = None

    def add(self, stream: "TurnEventResponse") -> None:
        self.streams.add(stream)
        self.tick = min(self.tick, stream.ping_interval / 2)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    def discard(self, stream: "TurnEventResponse") -> None:
        self.streams.discard(stream)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        exit_signal = asyncio.ensure_future(EventSourceResponse._listen_for_exit_signal())
        try:
            while True:
                done, _ = await asyncio.wait({exit_signal}, timeout=self.tick)
                if done:
                    for stream in list(self.streams):
                        stream.stop()
                    return
                now = loop.time()
                for stream in list(self.streams):
                    if stream.active and now - stream.last_send >= stream.ping_interval:
                        stream.last_send = now
                        asyncio.ensure_future(stream.send_ping())
        finally:
            exit_signal.cancel()


OPEN_STREAMS = OpenStreams()


class TurnEventResponse(EventSourceResponse):
    """sse-starlette's EventSourceResponse with a leaner per-connection machinery.

    The stock response runs each stream in an anyio task group of four tasks and wraps
    every send in a cancel scope; with hundreds of streams both were a visible share
    of the app's CPU (bench/README.md). Here the stream runs in the request's own task,
    one small task per stream watches for the client leaving, and one task per worker
    (OpenStreams) sends keep-alive pings and ends streams at shutdown. Event encoding
    and framing stay sse-starlette's.
    """

    last_send = 0.0
    _streamer: asyncio.Task[None] | None = None
    _stopped = False
    _send: Send | None = None
    # watch(end) -> unwatch, or None when already revoked (core/revocations.py); the last event then
    watch: Callable[[Callable[[], None]], Callable[[], None] | None] | None = None
    farewell = b""
    _revoked = False

    _events_send: Send | None = None

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        self.last_send = asyncio.get_running_loop().time()
        if self.send_timeout is None:
            await (self._events_send or send)(message)
        else:
            await super()._send_with_timeout(send, message)

    def stop(self, _: object = None) -> None:
        """End the stream (client gone, or server shutting down)."""
        if self.active and self._streamer is not None:
            self._stopped = True
            self.active = False
            self._streamer.cancel()

    def revoke(self) -> None:
        """The credential the stream was opened with has ended: its last event is `farewell`."""
        self._revoked = True
        self.stop()

    async def send_ping(self) -> None:
        if self.active and self._send is not None:
            ping = ServerSentEvent(comment=f"ping - {datetime.now(timezone.utc)}", sep=self.sep)
            try:
                await self._send({"type": "http.response.body", "body": ping.encode(), "more_body": True})
            except Exception:
                self.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD" or self.data_sender_callable:
            await super().__call__(scope, receive, send)
            return
        self._streamer = asyncio.current_task()
        self._send = send
        self._events_send = scope.get(SERVER_SEND)
        self.last_send = asyncio.get_running_loop().time()
        unwatch = self.watch(self.revoke) if self.watch is not None else None
        if self.watch is not None and unwatch is None:  # revoked since the request's credential was read
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self.farewell, "more_body": False})
            return
        watcher = asyncio.ensure_future(self._until_disconnect(receive))
        watcher.add_done_callback(self.stop)
        if self._ping_interval > 0:
            OPEN_STREAMS.add(self)
        try:
            await self._stream_response(send)
        except asyncio.CancelledError:
            if not self._stopped:
                raise
            self._streamer.uncancel()
        finally:
            client_left = watcher.done()
            if unwatch is not None:
                unwatch()
            OPEN_STREAMS.discard(self)
            watcher.remove_done_callback(self.stop)
            watcher.cancel()
        if self._revoked and self._response_started and not client_left:
            await send({"type": "http.response.body", "body": self.farewell, "more_body": False})
        if self.background is not None:
            await self.background()

    @staticmethod
    async def _until_disconnect(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass




def stream_response(events: object, request: Request | None = None, farewell: bytes = b"") -> TurnEventResponse:
    """An SSE response of the app: pings every PING_SECONDS, never buffered by a proxy. Opened with a
    sign-in or a token (`request.state.credential`), it ends with the event `farewell` when that is
    revoked, on whichever host (core/revocations.py)."""
    response = TurnEventResponse(events, ping=PING_SECONDS, headers=STREAM_HEADERS)
    credential = getattr(request.state, "credential", None) if request is not None else None
    if credential:
        response.watch = partial(request.app.state.revocations.watch, credential)  # type: ignore[union-attr]
        response.farewell = farewell
    return response


def farewell_frame(data: str, event: str | None = None) -> bytes:
    """The last event of a revoked stream: no id (a reconnect must not resume from it); unnamed for the
    JSON streams, whose clients read `message` events."""
    if event:
        return named_event_frame(event, None, data)
    return b"data: " + data.encode() + b"\r\n\r\n"
