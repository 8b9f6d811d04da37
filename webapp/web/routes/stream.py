"""Server-Sent Events: the seed's /chat/stream, the resumable /api/turns/{id}/events, and the web UI's stream."""

from __future__ import annotations

import html
import time
from functools import cache
from typing import AsyncIterator, Callable

import orjson
from fastapi import APIRouter, Request, Response

from webapp.base.errors import ChatError, InvalidId, TurnNotFound
from webapp.base.i18n import Lang, t
from webapp.base.ids import check_id
from webapp.base.models import Conversation, TurnEvent, TurnInfo
from webapp.core.conversations import Conversations
from webapp.core.turns.channels import CHANNEL_ID, CHANNEL_ID_MAX, missed, new_channel_id
from webapp.core.turns.reader import TurnReader
from webapp.web.csrf import request_token
from webapp.web.deps import (
    client_ip,
    current_user,
    owned_conversation_of,
    seed_user_of,
    services,
)
from webapp.web.htmx import View, lang_of
from webapp.web.render import render_fragment
from webapp.web.routes.pages import conversation_pane
from webapp.web.routing import documented_query, query_bool, query_int, query_text, required_query
from webapp.web.sse import (
    MAX_SEQ,
    farewell_frame,
    json_event_frame,
    merged,
    named_event_frame,
    parse_last_event_id,
    seed_payload,
    stream_response,
)

router = APIRouter(tags=["turns"])
# (the web UI's streams are plain routes, routes/plain.py: conversation_turn_events, conversation_events;
# their errors are JSON, as every stream's: an EventSource reads no error page)


@cache
def json_farewell(lang: Lang) -> bytes:
    """A JSON stream's last event when its sign-in or token ends: an error in the seed's shape."""
    return farewell_frame(orjson.dumps({"type": "error", "code": "revoked", "content": t("error.revoked", lang)})
                          .decode())


@cache
def html_farewell(lang: Lang, event: str) -> bytes:
    """A web UI stream's last event when its sign-in ends: `done` for a turn's stream (it replaces the
    bubble), `revoked` for a page's channel (it closes the channel: sse-close)."""
    return farewell_frame(render_fragment("partials/signed_out.html", lang), event)


async def json_events(reader: TurnReader, turn: TurnInfo, after: int) -> AsyncIterator[bytes]:
    """The JSON event stream of a turn (the seed's shapes), from seq `after` on."""
    session_id = turn.session_id
    encode: Callable[[TurnEvent], bytes] = lambda event: orjson.dumps(seed_payload(event, session_id))  # noqa: E731
    async for batch in reader.follow(turn, after):
        for event in merged(batch):
            yield json_event_frame(f"{turn.id}:{event.seq}", encode(event))


CHAT_STREAM_QUERY = documented_query(
    ("session_id", "query", True, ""),
    ("message", "query", False, ""),
    ("role", "query", False, "assistant, teacher or programmer; omitted keeps the conversation's"),
    ("user_id", "query", False, "the caller's own id (the seed API names it)"),
    ("Last-Event-ID", "header", False, ""),
)


@router.get("/chat/stream", summary="Send a message and stream the reply (the seed's API)",
            openapi_extra=CHAT_STREAM_QUERY)
async def chat_stream(request: Request) -> Response:
    """A reconnect carrying Last-Event-ID resumes the running turn instead of sending the message twice."""
    # every turn of the seed API comes here: its query, user and services are read by hand, as the plain
    # routes' are (FastAPI's solving of its fields and dependencies was a tenth of the turn's CPU)
    user = await seed_user_of(request)
    session_id = required_query(request, "session_id")
    query = request.query_params
    message, role, last_event_id = query.get("message"), query.get("role"), request.headers.get("last-event-id")
    state, lang = services(request), lang_of(request)
    writer, reader = state.turn_writer, state.turn_reader
    reader.check_stream_slot(user)
    resume_id, after = parse_last_event_id(last_event_id)
    if resume_id:
        # a reconnect never sends the message again: resume, or tell EventSource to stop (204)
        conversation = await owned_conversation_of(request, session_id, user)
        try:
            turn = await reader.resumable(check_id(resume_id), user, after, session_id=conversation.id)
        except (TurnNotFound, InvalidId):
            turn = None
        if turn is None:
            return Response(status_code=204)
        return stream_response(json_events(reader, turn, after), request, json_farewell(lang))
    # the ownership check rides in the same Redis round trip that takes the turn's lock
    run = await writer.start_turn(check_id(session_id), user, message, role, lang, client_ip(request))
    turn = TurnInfo(id=run.id, session_id=run.conversation.id, user_id=user, status="running")
    return stream_response(json_events(reader, turn, 0), request, json_farewell(lang))


TURN_EVENTS_QUERY = documented_query(
    ("turn_id", "path", True, ""),
    ("after", "query", False, "", {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}),
    ("Last-Event-ID", "header", False, ""),
)


@router.get("/api/turns/{turn_id}/events", name="turn_events", summary="Follow a turn's reply (resumable)",
            openapi_extra=TURN_EVENTS_QUERY)
async def api_turn_events(request: Request) -> Response:
    # every turn of the JSON API comes here: read by hand, as chat_stream
    user = await current_user(request)
    turn_id, after = request.path_params["turn_id"], query_int(request, "after", None, low=0, high=MAX_SEQ)
    reader, lang = services(request).turn_reader, lang_of(request)
    reader.check_stream_slot(user)
    _, seq = parse_last_event_id(request.headers.get("last-event-id"))
    if after is not None:
        seq = max(seq, after)
    turn = await reader.resumable(check_id(turn_id), user, seq)
    if turn is None:
        return Response(status_code=204)
    return stream_response(json_events(reader, turn, seq), request, json_farewell(lang))


# the web UI's stream: HTML for htmx's SSE extension -------------------------------

async def html_events(
    reader: TurnReader, conversations: Conversations, session_id: str, user: str, turn: TurnInfo | None,
    after: int, lang: Lang, csrf_token: str, sidebar_item: bool = True, channel_id: str = "",
) -> AsyncIterator[bytes]:
    """`chunk` events carry escaped text to append; one `done` event carries the final bubble and,
    out of band, the composer's Send button and (`sidebar_item`) the conversation's sidebar item.
    `channel_id`: the events go out on a page's channel, which counts as an open stream itself."""
    final: TurnEvent | None = None
    last_id = f"{turn.id}:{after}" if turn else None
    run = reader.local_run(turn.id) if turn is not None else None  # (its saved reply needs no read after)
    if turn is not None:
        async for batch in reader.follow(turn, after, counted=not channel_id):
            for event in merged(batch):
                last_id = f"{turn.id}:{event.seq}"
                if event.type == "chunk":
                    yield named_event_frame("chunk", last_id, html.escape(event.content, quote=False))
                else:
                    final = event
    turn_id = turn.id if turn else ""
    outcome = await conversations.turn_outcome(user, session_id, turn_id, final, lang,
                                               saved=run.saved if run is not None else None)
    # deleted meanwhile (in another tab): the bubble still ends, the sidebar is not touched
    conversation = outcome.conversation or Conversation(
        id=session_id, user_id=user, title="", preview="", role="", message_count=0, created=0, updated=0)
    fragment = render_fragment(
        "partials/turn_done.html", lang, conv=conversation, turn_id=turn_id, reply=outcome.reply,
        error_text=outcome.error_text, retry_text=outcome.retry_text,
        retry_for=outcome.reply.id if outcome.reply else "", no_reply_text=outcome.retry_text,
        reply_index=outcome.reply_index, last_index=outcome.reply_index, versions=outcome.versions,
        csrf_token=csrf_token, sidebar_item=outcome.conversation if sidebar_item else None, channel_id=channel_id,
    )
    yield named_event_frame("done", last_id, fragment)


async def conversation_turn_events(request: Request) -> Response:
    """The web UI's view of a turn (htmx SSE extension); resumes after `after` or Last-Event-ID.
    `searching`: the page's sidebar shows search results, so done brings no item for it.

    The caller's own turn of this conversation proves the conversation theirs: one lookup, not
    two. Any other turn id (or not a turn) still gets a stream if the conversation is the
    caller's: its `done` event shows the conversation's last state, so the page never hangs.
    A page without its channel opens this stream for every turn: a plain route (routing.py), it
    reads its user and services by hand (issue 19).
    """
    session_id, turn_id = request.path_params["session_id"], request.path_params["turn_id"]
    after = query_int(request, "after", 0, low=0, high=MAX_SEQ)
    searching = query_bool(request, "searching")
    user, lang = await current_user(request), lang_of(request)
    reader, conversations = services(request).turn_reader, services(request).conversations
    session_id = check_id(session_id)
    try:
        turn: TurnInfo | None = await reader.owned_turn(check_id(turn_id), user, session_id=session_id)
    except (TurnNotFound, InvalidId):
        turn = None
        await owned_conversation_of(request, session_id, user)  # 404 unless the caller owns it
    reader.check_stream_slot(user)
    _, seq = parse_last_event_id(request.headers.get("last-event-id"))
    return stream_response(html_events(reader, conversations, session_id, user, turn, max(seq, after or 0), lang,
                                       request_token(request), sidebar_item=not searching),
                           request, html_farewell(lang, "done"))


# the web UI's channel: one stream per open conversation page, for all of its turns ---------

async def conversation_events(request: Request) -> Response:
    """A conversation page's channel (channels.py): the turns that start in it, each as a `turn`
    event (the user's bubble and the reply's), its `chunk`s and its `done`.

    What the page already shows is `turn` (the newest turn it has) and `after` (the last event
    of it shown; absent: all of it), or Last-Event-ID when the browser reconnects by itself.
    A page that missed a turn gets the message list again (`sync`), then the rest live.
    Open for the whole visit: a plain route (routing.py), as the composer's posts.
    """
    session_id = request.path_params["session_id"]
    channel = query_text(request, "channel", max_length=CHANNEL_ID_MAX, pattern=CHANNEL_ID)
    turn = query_text(request, "turn", max_length=CHANNEL_ID_MAX)  # (only ever compared with turn ids)
    after = query_int(request, "after", None, low=0, high=MAX_SEQ)
    user, lang = await current_user(request), lang_of(request)
    reader = services(request).turn_reader
    session_id = check_id(session_id)
    seen_id, seen_seq = parse_last_event_id(request.headers.get("last-event-id"))
    if seen_id is None:
        seen_id, seen_seq = turn or None, MAX_SEQ if after is None else after
    read_at = time.perf_counter()
    # the page shows a reply still being written here (the first send's pane, a reconnect): that turn
    # proves the conversation the caller's and is its newest, with no read (as the turn's own stream)
    run = reader.running_here(seen_id, user, session_id) if seen_id else None
    conversation = run.conversation if run is not None else await owned_conversation_of(request, session_id, user)
    reader.check_stream_slot(user)
    return stream_response(channel_events(request, conversation, read_at, channel or new_channel_id(), seen_id,
                                          seen_seq, lang), request, html_farewell(lang, "revoked"))


async def channel_events(request: Request, conversation: Conversation, read_at: float, channel_id: str,
                         seen_id: str | None, seen_seq: int, lang: Lang) -> AsyncIterator[bytes]:
    """`conversation` as read at `read_at`: what the page may have missed is judged from it."""
    state = services(request)
    reader, conversations, channels = state.turn_reader, state.conversations, state.channels
    user, session_id, csrf_token = conversation.user_id, conversation.id, request_token(request)
    # open before anything is awaited: a turn that starts from now on is handed to it; one that started
    # here since the conversation was read (the response's start awaits) is handed to it now
    channel = channels.open_channel(channel_id, user, session_id, read_at=read_at,
                                    shown_turn=conversation.running_turn_id)
    reader.stream_opened(user)
    followed: set[str] = set()
    synced: set[str] = set()  # the messages the last `sync` showed

    async def follow(turn_id: str, after: int) -> AsyncIterator[bytes]:
        followed.add(turn_id)
        info = TurnInfo(id=turn_id, session_id=session_id, user_id=user, status="running")
        async for frame in html_events(reader, conversations, session_id, user, info, after, lang, csrf_token,
                                       channel_id=channel_id):
            yield frame

    async def sync() -> AsyncIterator[bytes]:
        """The message list as it is now; then the reply being written, if any, from where it shows."""
        try:
            fresh = await owned_conversation_of(request, session_id, user)
        except ChatError:  # deleted meanwhile (in another tab): nothing more to show here
            return
        values = await conversation_pane(View(request), conversations, fresh)
        streaming = values["streaming"]
        newest = streaming.turn_id if streaming else fresh.last_turn_id
        event_id = f"{newest}:{streaming.after if streaming else MAX_SEQ}" if newest else None
        values.update(channel_id=channel_id, csrf_token=csrf_token)
        synced.clear()
        synced.update(message.id for message in values["messages"])
        yield named_event_frame("sync", event_id, render_fragment("partials/channel_sync.html", lang, **values))
        if streaming:
            async for frame in follow(streaming.turn_id, streaming.after):
                yield frame

    try:
        newest = conversation.running_turn_id or conversation.last_turn_id
        owed = missed(newest, seen_id, seen_seq, MAX_SEQ)
        if owed == "sync":
            async for frame in sync():
                yield frame
        elif owed == "resume" and newest:
            try:  # (a turn that ended, whose last event the page has, has nothing more)
                resumed = await reader.resumable(newest, user, seen_seq, session_id=session_id)
            except (TurnNotFound, InvalidId):
                resumed = None
            if resumed is not None:
                async for frame in follow(newest, seen_seq):
                    yield frame
        while True:
            run = await channel.next_turn()
            if run.id in followed or channels.shows_already(channel, run.id):
                continue
            # a regenerate, an edit or a retry changes bubbles already shown; and a `sync` read while
            # the turn started may show its message already (without the reply): the list again
            if not run.asked or run.user_message.id in synced:
                async for frame in sync():
                    yield frame
                continue
            yield named_event_frame("turn", f"{run.id}:0", render_fragment(
                "partials/turn_started.html", lang, conv=run.conversation, user_message=run.user_message,
                was_empty=run.first_exchange, streaming={"turn_id": run.id, "after": 0, "text": ""},
                channel_id=channel_id, csrf_token=csrf_token))
            async for frame in follow(run.id, 0):
                yield frame
    finally:
        channels.close(channel)
        reader.stream_closed(user)
