"""One access log line and one metrics count per request, without message contents.

uvicorn's own access log prints the query string, and the seed API carries the
user's message in it (`/chat/stream?message=...`), so the app logs requests itself:
method, path, status, duration, client.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote

from starlette.types import Scope

from webapp.base.metrics import Metrics

log = logging.getLogger("webapp.access")


class AccessLog:
    """Counts each response by method and status; logs each request once it is answered (edge.py runs it)."""

    def __init__(self, metrics: Metrics, log_requests: bool = True) -> None:
        self.metrics = metrics
        self.log_requests = log_requests
        self.counters: dict[tuple[str, int], Any] = {}  # the counter of each (method, status), looked up once

    def answered(self, method: str, status: int) -> None:
        counter = self.counters.get((method, status))
        if counter is None:
            if len(self.counters) > 1000:  # (methods are whatever clients send)
                self.counters.clear()
            counter = self.counters[(method, status)] = self.metrics.requests.labels(method, str(status))
        counter.inc()

    def finished(self, scope: Scope, status: int, started: float) -> None:
        if not self.log_requests:
            return
        client = scope.get("client")
        path = scope["path"]
        if not path.isprintable():  # a decoded %0a must not start a forged log line
            path = quote(path, safe="/:@!$&'()*+,;=-._~")
        log.info(
            "method=%s path=%s status=%s ms=%.0f client=%s", scope["method"], path, status,
            (time.perf_counter() - started) * 1000, client[0] if client else "-",
        )
