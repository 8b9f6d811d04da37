"""One access log line and one metrics count per request, without message contents.

uvicorn's own access log prints the query string, and the seed API carries the
user's message in it (`/chat/stream?message=...`), so the app logs requests itself:
method, path, status, duration, client. Plain ASGI, one send wrapper for both jobs.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics

log = logging.getLogger("webapp.access")


class AccessMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, log_requests: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]
        status = 0

        async def observed_send(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                self.metrics.requests.labels(method, str(status)).inc()
            elif kind == "http.response.body" and not message.get("more_body", False) and self.log_requests:
                client = scope.get("client")
                path = scope["path"]
                if not path.isprintable():  # a decoded %0a must not start a forged log line
                    path = quote(path, safe="/:@!$&'()*+,;=-._~")
                log.info(
                    "method=%s path=%s status=%s ms=%.0f client=%s", method, path, status,
                    (time.perf_counter() - started) * 1000, client[0] if client else "-",
                )
            await send(message)

        await self.app(scope, receive, observed_send)
