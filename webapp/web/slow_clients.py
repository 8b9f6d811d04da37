"""Slow clients: a request whose head or body stalls is closed, so idle sockets cannot pile up.

uvicorn closes an idle connection between requests (`timeout_keep_alive`) but has no deadline for
a request that is arriving: a connection that sends half a request line, or headers a byte at a
time, or a body that stops, stayed open for good (over 100 s in issue 33's probe; a few thousand
of them exhaust an app exposed without a proxy). No ASGI middleware can help with the head: the
app is only called once the headers are complete. So this is uvicorn's own HTTP protocol
(httptools) with two deadlines, used by `python -m webapp` (`http=` in __main__.py):

- the head (request line and headers) must be complete HEADER_TIMEOUT_SECONDS after the request's
  first byte, or after the connection opened for its first request;
- a body may go BODY_TIMEOUT_SECONDS without a byte, and must come at MIN_BODY_BYTES_PER_SECOND on
  average once that long has passed (so a trickle of a byte every few seconds ends too).

Past a deadline the connection gets `408 Request Timeout` (when nothing was answered yet) and is
closed; the app sees the client leave, as it would any disconnect. A response that streams
(SSE) is not affected: its request is complete. One timer per connection while a request arrives,
re-armed only when it fires: nothing per chunk but a number.
"""

from __future__ import annotations

import asyncio
from functools import cache

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MIN_BODY_BYTES_PER_SECOND = 1024
TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"content-length: 16\r\nconnection: close\r\n\r\nrequest timeout\n")


@cache
def timeouts() -> tuple[float, float]:
    """(HEADER_TIMEOUT_SECONDS, BODY_TIMEOUT_SECONDS), read once per process (workers start from an import)."""
    from webapp.config import get_settings

    settings = get_settings()
    return settings.header_timeout_seconds, settings.body_timeout_seconds


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the deadlines of the module's docstring."""

    _deadline = 0.0  # loop time; 0: no request arriving
    _timer: asyncio.TimerHandle | None = None
    _body_started = 0.0
    _body_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(timeouts()[0])

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(timeouts()[0])

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._has_body():
            self._body_started, self._body_bytes = self.loop.time(), 0
            self._arm(timeouts()[1])
        else:
            self._disarm()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        if self._deadline:
            now, idle = self.loop.time(), timeouts()[1]
            self._body_bytes += len(body)
            at_rate = self._body_started + idle + self._body_bytes / MIN_BODY_BYTES_PER_SECOND
            self._deadline = min(now + idle, max(at_rate, now + 0.001))

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def _has_body(self) -> bool:
        for name, value in self.headers:
            if name == b"content-length":
                return value.strip() not in (b"0", b"")
            if name == b"transfer-encoding":
                return True
        return False

    def _arm(self, seconds: float) -> None:
        self._deadline = self.loop.time() + seconds
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._check)

    def _disarm(self) -> None:
        self._deadline = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if not self._deadline or self.transport.is_closing():
            return
        if self.loop.time() < self._deadline:  # moved on since the timer was set
            self._timer = self.loop.call_at(self._deadline, self._check)
            return
        self._deadline = 0.0
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            self.transport.write(TIMEOUT_RESPONSE)
        self.transport.close()
