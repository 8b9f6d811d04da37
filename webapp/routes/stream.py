"""Server-Sent Events: the seed's /chat/stream, the resumable /api/turns/{id}/events, and the web UI's stream."""

from __future__ import annotations

import asyncio
import html
from datetime import datetime, timezone
from typing import AsyncIterator, Callable

import orjson
from fastapi import APIRouter, Header, Query, Response
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Message, Receive, Scope, Send

from ..chat import TurnManager
from ..deps import CurrentUser, LangDep, OwnedConversation, SeedUser, TurnsDep, check_id, load_owned
from ..errors import InvalidId, TurnNotFound
from ..i18n import Lang, t
from ..render import render_fragment
from ..roles import get_role
from ..store import Conversation, TurnEvent, TurnInfo

router = APIRouter(tags=["turns"])

PING_SECONDS = 15
STREAM_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}


def parse_last_event_id(value: str | None) -> tuple[str | None, int]:
    """`{turn_id}:{seq}` (or a bare seq) -> (turn_id, seq); anything else means 'from the start'."""
    if not value:
        return None, 0
    turn_id, _, seq = value.strip().rpartition(":")
    try:
        return (turn_id or None), max(0, int(seq))
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
    """Chunks a reader has not sent yet go out as one event: a slow reader catches up in one write."""
    out: list[TurnEvent] = []
    for event in batch:
        if out and event.type == "chunk" and out[-1].type == "chunk":
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


async def turn_events(
    turns: TurnManager,
    turn: TurnInfo,
    after: int,
    encode: Callable[[TurnEvent], bytes],
) -> AsyncIterator[bytes]:
    """The JSON event stream of a turn (the seed's shapes), from seq `after` on."""
    metrics = turns.metrics
    metrics.active_streams.inc()
    try:
        async for batch in turns.follow(turn, after):
            for event in merged(batch):
                yield json_event_frame(f"{turn.id}:{event.seq}", encode(event))
    finally:
        metrics.active_streams.dec()


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

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        self.last_send = asyncio.get_running_loop().time()
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)

    def stop(self, _: object = None) -> None:
        """End the stream (client gone, or server shutting down)."""
        if self.active and self._streamer is not None:
            self._stopped = True
            self.active = False
            self._streamer.cancel()

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
        self.last_send = asyncio.get_running_loop().time()
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
            OPEN_STREAMS.discard(self)
            watcher.remove_done_callback(self.stop)
            watcher.cancel()
        if self.background is not None:
            await self.background()

    @staticmethod
    async def _until_disconnect(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


def event_stream(turns: TurnManager, turn: TurnInfo, after: int) -> EventSourceResponse:
    session_id = turn.session_id

    def encode(event: TurnEvent) -> bytes:
        return orjson.dumps(seed_payload(event, session_id))

    return TurnEventResponse(turn_events(turns, turn, after, encode), ping=PING_SECONDS, headers=STREAM_HEADERS)


async def resumable_turn(turns: TurnManager, user: str, turn_id: str, after: int) -> TurnInfo | None:
    """The turn to resume, or None when the reader has already seen its terminal event."""
    turn = await turns.turn_for(turn_id, user)
    if turn.status != "running":
        remaining = await turns.store.read_events(turn.id, after)
        if after > 0 and not remaining:
            return None
    return turn


@router.get("/chat/stream", summary="Send a message and stream the reply (the seed's API)")
async def chat_stream(
    user: SeedUser,
    turns: TurnsDep,
    lang: LangDep,
    session_id: str,
    message: str | None = None,
    role: str | None = Query(None, description="assistant, teacher or programmer; omitted keeps the conversation's"),
    last_event_id: str | None = Header(None, alias="Last-Event-ID"),
) -> Response:
    """A reconnect carrying Last-Event-ID resumes the running turn instead of sending the message twice."""
    resume_id, after = parse_last_event_id(last_event_id)
    if resume_id:
        # a reconnect never sends the message again: resume, or tell EventSource to stop (204)
        conversation = await load_owned(turns.store, session_id, user)
        try:
            turn = await resumable_turn(turns, user, check_id(resume_id), after)
        except (TurnNotFound, InvalidId):
            turn = None
        if turn is None or turn.session_id != conversation.id:
            return Response(status_code=204)
        return event_stream(turns, turn, after)
    # the ownership check rides in the same Redis round trip that takes the turn's lock
    run = await turns.start_turn(check_id(session_id), user, message, get_role(role) if role else None, lang)
    turn = TurnInfo(id=run.id, session_id=run.conversation.id, user_id=user, status="running")
    return event_stream(turns, turn, 0)


@router.get("/api/turns/{turn_id}/events", name="turn_events", summary="Follow a turn's reply (resumable)")
async def api_turn_events(
    turn_id: str,
    user: CurrentUser,
    turns: TurnsDep,
    last_event_id: str | None = Header(None, alias="Last-Event-ID"),
    after: int | None = None,
) -> Response:
    _, seq = parse_last_event_id(last_event_id)
    if after is not None:
        seq = max(seq, after)
    turn = await resumable_turn(turns, user, check_id(turn_id), seq)
    if turn is None:
        return Response(status_code=204)
    return event_stream(turns, turn, seq)


# the web UI's stream: HTML for htmx's SSE extension -------------------------------

async def turn_end_fragment(turns: TurnManager, conversation: Conversation, turn_id: str,
                            final: TurnEvent | None, lang: Lang) -> str:
    """The bubble that replaces the streaming one: the saved reply, or what went wrong, with Retry."""
    info = await turns.store.get_turn(turn_id) if turn_id else None
    message_id = (final.message_id if final else "") or (info.message_id if info else "")
    messages, _, _ = await turns.store.message_page(conversation.id, limit=4, before=None)
    reply = next((m for m in messages if message_id and m.id == message_id), None)
    last_user = next((m for m in reversed(messages) if m.role == "user"), None)
    retry_text = last_user.content if last_user else ""
    if final is not None and final.type == "error":
        error_text = final.content
    elif reply is None:
        error_text = t("ui.stopped" if final is not None else "ui.no_reply", lang)
    else:
        error_text = ""
    return render_fragment(
        "partials/turn_done.html", lang, conv=conversation, turn_id=turn_id, reply=reply, error_text=error_text,
        retry_text=retry_text, retry_for=reply.id if reply else "", no_reply_text=retry_text,
    )


async def html_turn_events(
    turns: TurnManager, conversation: Conversation, turn: TurnInfo | None, after: int, lang: Lang
) -> AsyncIterator[ServerSentEvent]:
    """`chunk` events carry escaped text to append; one `done` event carries the final bubble."""
    metrics = turns.metrics
    metrics.active_streams.inc()
    try:
        final: TurnEvent | None = None
        last_id = f"{turn.id}:{after}" if turn else None
        if turn is not None:
            async for batch in turns.follow(turn, after):
                for event in merged(batch):
                    last_id = f"{turn.id}:{event.seq}"
                    if event.type == "chunk":
                        yield ServerSentEvent(event="chunk", data=html.escape(event.content, quote=False), id=last_id)
                    else:
                        final = event
        fragment = await turn_end_fragment(turns, conversation, turn.id if turn else "", final, lang)
        yield ServerSentEvent(event="done", data=fragment, id=last_id)
    finally:
        metrics.active_streams.dec()


@router.get("/c/{session_id}/turns/{turn_id}/events", include_in_schema=False)
async def conversation_turn_events(
    conversation: OwnedConversation,
    turn_id: str,
    user: CurrentUser,
    turns: TurnsDep,
    lang: LangDep,
    after: int = 0,
    last_event_id: str | None = Header(None, alias="Last-Event-ID"),
) -> Response:
    """The web UI's view of a turn (htmx SSE extension); resumes after `after` or Last-Event-ID."""
    _, seq = parse_last_event_id(last_event_id)
    try:
        turn: TurnInfo | None = await turns.turn_for(check_id(turn_id), user)
    except (TurnNotFound, InvalidId):
        turn = None
    if turn is not None and turn.session_id != conversation.id:
        turn = None
    return TurnEventResponse(
        html_turn_events(turns, conversation, turn, max(seq, after), lang), ping=PING_SECONDS, headers=STREAM_HEADERS
    )
