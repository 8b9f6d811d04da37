"""The one ASGI middleware every request passes, before routing and around its response.

What the app does to every request was six middleware layers: note the socket's peer, apply
a trusted proxy's X-Forwarded-For/-Proto, count and log the request, add the security
headers, guard the input (size, UTF-8, cross-site), read the identity cookie. Each layer was a
call per request and three of them wrapped `send`, a call per server-sent event of every
stream. Here they run in that order in one layer with one `send` wrapper; each concern's rules
stay in its own module (peers, access, security, identity). Then the app's one router serves.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from webapp.base.metrics import Metrics
from webapp.web.access import AccessLog
from webapp.web.identity import IdentityCookie
from webapp.web.peers import TrustedProxies
from webapp.web.security import SECURITY_HEADERS, InputGuard, refuse


async def _nothing(scope: Scope, receive: Receive, send: Send) -> None:
    """The proxy-header middleware's inner app: it is run for its change to the scope only."""


class Edge:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, log_requests: bool, trusted_hosts: str,
                 secret: str, max_body_bytes: int, larger_bodies: dict[str, int] | None = None,
                 upload_bytes: int = 0) -> None:
        self.app = app
        # uvicorn's own middleware (FORWARDED_ALLOW_IPS), so the rules are exactly uvicorn's
        self.proxy = ProxyHeadersMiddleware(_nothing, trusted_hosts=trusted_hosts)
        self.access = AccessLog(metrics, log_requests)
        self.guard = InputGuard(max_body_bytes, larger_bodies, TrustedProxies(trusted_hosts), upload_bytes)
        self.identity = IdentityCookie(secret)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":
                self._note_peer(scope)
                await self.proxy(scope, receive, send)
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = self._note_peer(scope)
        await self.proxy(scope, receive, send)
        access, identity = self.access, self.identity
        status = 0
        secure = scope.get("scheme") == "https"

        async def edge_send(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if state.get("new_identity"):
                    headers.append(identity.set_cookie(state["new_identity"], secure))
                message["headers"] = headers + SECURITY_HEADERS
                access.answered(scope["method"], status)
            elif kind == "http.response.body" and not message.get("more_body", False):
                access.finished(scope, status, started)
            await send(message)

        guard = self.guard
        refusal = guard.refusal(scope)
        body_kind = guard.body_kind(scope) if refusal is None else None
        if isinstance(body_kind, type):
            refusal = body_kind
        elif body_kind == "form":
            body = await guard.read_form(receive)
            if body is None:
                return  # the client left
            if isinstance(body, bytes):
                receive = guard.replay(body, receive)
            else:
                refusal = body
        elif body_kind == "stream":
            receive = guard.counting(scope, receive)
        if refusal is not None:
            await refuse(scope, receive, edge_send, refusal)
            return
        state["identity"] = identity.read(scope["headers"])
        state["new_identity"] = None
        await self.app(scope, receive, edge_send)

    @staticmethod
    def _note_peer(scope: Scope) -> dict[str, object]:
        """The socket's peer, before a trusted proxy's X-Forwarded-For replaces the client (peers.py)."""
        client = scope.get("client")
        state: dict[str, object] = scope.setdefault("state", {})
        state["peer"] = client[0] if client else ""
        return state
