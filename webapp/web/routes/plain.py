"""The one list of plain routes (routing.PlainRoute): Starlette routes of the app's router, ahead of
FastAPI's, whose endpoints read the request by hand.

Each is taken by every web UI turn or every visit, and FastAPI's dependency solving was a large
share of its cost (issue 19): the page every visit opens, the composer's two posts, and the
page's two streams; and the API's: the seed API's two calls and a JSON API turn's stream (issue 32),
whose FastAPI declarations stay to document them (OpenAPI) but never serve. The composer's posts read
an urlencoded form by hand; only a multipart one (files, without JavaScript) goes through Starlette's
parser (pages.sent_files). Another route belongs here only on a benchmark's word (routing.py).
"""

from __future__ import annotations

from webapp.core.conversations import DRAFT_ID
from webapp.web.error_handlers import PAGE_TAG
from webapp.web.routes import api, pages, stream
from webapp.web.routing import PlainRoute

STREAM_TAGS = ["turns"]  # errors as JSON, as every stream's (an EventSource reads no error page)
SEED_TAGS = ["seed"]

PLAIN_ROUTES = [
    PlainRoute("/", pages.home, methods=["GET", "HEAD"], tags=[PAGE_TAG]),
    # the draft's: before /c/{session_id}/..., which would take "new" for an id
    PlainRoute(f"/c/{DRAFT_ID}/messages", pages.send_first_message, methods=["POST"], tags=[PAGE_TAG], csrf=True),
    PlainRoute("/c/{session_id}/messages", pages.send_message, methods=["POST"], tags=[PAGE_TAG], csrf=True),
    PlainRoute("/c/{session_id}/turns/{turn_id}/events", stream.conversation_turn_events, methods=["GET"],
               tags=STREAM_TAGS),
    PlainRoute("/c/{session_id}/events", stream.conversation_events, methods=["GET"], tags=STREAM_TAGS),
    # the API's: a seed client's first call, each of its turns, each JSON API turn's stream. Their FastAPI
    # declarations (routes/api.py, routes/stream.py) stay, for the API's documentation only: these match first
    PlainRoute("/chat/start", api.start_chat, methods=["POST"], tags=SEED_TAGS),
    PlainRoute("/chat/stream", stream.chat_stream, methods=["GET"], tags=STREAM_TAGS),
    PlainRoute("/api/turns/{turn_id}/events", stream.api_turn_events, methods=["GET"], tags=STREAM_TAGS),
]
