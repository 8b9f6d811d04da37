"""A safe default on the open internet: security headers on every response, and CSRF defences.

Cross-site request forgery is refused twice over:
- every state-changing request (POST/PUT/PATCH/DELETE, and the seed's GET /chat/stream that
  starts a turn) whose `Sec-Fetch-Site` says it came from another site, or whose `Origin` is
  not this one, gets 403 — browsers send these headers and a page cannot forge them;
- the web UI's own forms and HTMX requests also carry a token bound to the caller's identity (csrf.py)
  (a hidden `csrf_token` field; app.js sends it as an `X-CSRF-Token` header), for browsers
  that send neither header.
API clients (scripts, the seed page's fetch) send no Origin from another site, so they pass.

The Content-Security-Policy allows only this origin's scripts: no inline script, no eval
(htmx runs with `allowEval: false`; its keyboard triggers are custom events app.js fires).
Styles may be inline: sanitized Markdown tables carry `text-align` styles.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from fastapi import Request
from starlette.types import Message, Receive, Scope, Send

from webapp.base.errors import ChatError, CrossSiteRequest, RequestTooLarge, UndecodableText
from webapp.web.error_handlers import error_response
from webapp.web.forms import FORM_TYPE
from webapp.web.peers import TrustedProxies

_FORM_BYTES = FORM_TYPE.encode()  # (as the ASGI headers have it)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class InputGuard:
    """Bodies over `max_bytes` get 413; a query string or form body that is not UTF-8 gets 400;
    a state-changing request from another site gets 403 (run by the one middleware, edge.py).

    Starlette decodes undecodable form and query bytes into replacement characters (or
    Latin-1), which would be stored silently damaged, so they are checked here, on the
    raw bytes, before any route parses them. Form bodies are small (they are capped):
    they are read whole, checked and handed on; other bodies stream through, counted.
    """

    def __init__(self, max_bytes: int, larger: dict[str, int] | None = None,
                 trusted: TrustedProxies | None = None, upload_bytes: int = 0) -> None:
        self.max_bytes = max_bytes
        self.larger = larger or {}  # paths that take bigger bodies (a data file to import)
        self.trusted = trusted or TrustedProxies("")  # whose X-Forwarded-Host counts (FORWARDED_ALLOW_IPS)
        self.upload_bytes = upload_bytes  # a multipart body with files (attachments): its own limit

    def limit(self, scope: Scope) -> int:
        """The largest body a request may send: an import's path, a multipart post of files (the composer's,
        an edit's, POST /api/files), else MAX_BODY_BYTES."""
        path = scope["path"]
        if path in self.larger:
            return self.larger[path]
        if self.upload_bytes and (path == "/api/files" or (path.startswith("/c/") and path.endswith(("/messages",
                                                                                                    "/edit")))):
            for name, value in scope["headers"]:
                if name == b"content-type" and value.startswith(b"multipart/form-data"):
                    return max(self.upload_bytes, self.max_bytes)
        return self.max_bytes

    def refusal(self, scope: Scope) -> type[ChatError] | None:
        """What is wrong with the request line and headers, if anything."""
        if scope["query_string"] and not _decodes(scope["query_string"]):
            return UndecodableText
        unsafe = scope["method"] not in ("GET", "HEAD", "OPTIONS")
        if (unsafe or scope["path"] == "/chat/stream") and _cross_site(scope, self.trusted):
            return CrossSiteRequest
        return None

    def body_kind(self, scope: Scope) -> type[ChatError] | str | None:
        """None: no body to guard (a safe method); "form": read it whole; "stream": count it;
        or the refusal of a declared length over the limit."""
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return None
        content_type = b""
        max_bytes = self.limit(scope)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
                return RequestTooLarge
            if name == b"content-type":
                content_type = value
        return "form" if content_type.startswith(_FORM_BYTES) else "stream"

    async def read_form(self, receive: Receive) -> bytes | type[ChatError] | None:
        """The whole form body (None: the client left), or why it is refused."""
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return RequestTooLarge
            if not message.get("more_body", False):
                break
        return body if _decodes(body) else UndecodableText

    @staticmethod
    def replay(body: bytes, receive: Receive) -> Receive:
        """`receive` for the app: the form body already read, then whatever the client sends next."""
        delivered = False

        async def replayed() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replayed

    def counting(self, scope: Scope, receive: Receive) -> Receive:
        max_bytes = self.limit(scope)  # (an import path, or files, take more)
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise RequestTooLarge()
            return message

        return counting_receive


async def refuse(scope: Scope, receive: Receive, send: Send, error: type[ChatError]) -> None:
    """Answers with `error` through the one error path (a page or JSON, as the request wants)."""
    response = error_response(Request(scope, receive), error.key, error.status)
    await response(scope, receive, send)


def _cross_site(scope: Scope, trusted: TrustedProxies) -> bool:
    """A request another site's page made the browser send: Sec-Fetch-Site, else a foreign Origin.
    X-Forwarded-Host names this site only when a trusted proxy sent it (anyone can send the header).

    Checked in the middleware rather than as a route dependency: every state-changing request pays
    it, and a middleware check costs a fraction of FastAPI's dependency solving.
    """
    origin = host = forwarded_host = None
    for name, value in scope["headers"]:
        if name == b"sec-fetch-site":
            if value in (b"cross-site", b"same-site"):
                return True
            if value in (b"same-origin", b"none"):
                return False  # the browser says so: no need to match Origin against a rewritten Host
        elif name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
        elif name == b"x-forwarded-host":
            forwarded_host = value.decode("latin-1")
    if origin is None:
        return False
    if origin == "null":
        return True
    # the host only: behind a TLS proxy that is not in FORWARDED_ALLOW_IPS the app sees http while
    # the browser says https; what matters is that the page was this site's
    if forwarded_host is not None and scope["state"].get("peer", "") not in trusted:
        forwarded_host = None
    return origin.partition("://")[2] not in (host or "", forwarded_host or "")


def _decodes(raw: bytes) -> bool:
    """Whether percent-decoded `raw` (a query string or form body) is UTF-8."""
    try:
        unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
