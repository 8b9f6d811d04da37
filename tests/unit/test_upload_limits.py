"""The body limit of a request (web/security.py InputGuard.limit): files may be large only where they are
taken (the composer's and the edit's multipart posts, POST /api/files); everywhere else MAX_BODY_BYTES."""

from __future__ import annotations

import pytest

from webapp.web.security import InputGuard

pytestmark = pytest.mark.unit

MULTIPART = (b"content-type", b"multipart/form-data; boundary=x")
FORM = (b"content-type", b"application/x-www-form-urlencoded")


def scope(path: str, *headers: tuple[bytes, bytes]) -> dict:
    return {"type": "http", "method": "POST", "path": path, "headers": list(headers), "query_string": b""}


@pytest.mark.parametrize("path, headers, limit", [
    ("/api/files", [MULTIPART], 51_000_000),
    ("/c/5d0f1c2e-8a4b-4f51-9c7e-2b6f3a1d9e40/messages", [MULTIPART], 51_000_000),
    ("/c/new/messages", [MULTIPART], 51_000_000),
    ("/c/5d0f1c2e-8a4b-4f51-9c7e-2b6f3a1d9e40/messages/3/edit", [MULTIPART], 51_000_000),
    ("/c/5d0f1c2e-8a4b-4f51-9c7e-2b6f3a1d9e40/messages", [FORM], 1_000_000),  # the fast path: a typed message
    ("/api/files", [FORM], 1_000_000),
    ("/c/5d0f1c2e-8a4b-4f51-9c7e-2b6f3a1d9e40/title", [MULTIPART], 1_000_000),
    ("/api/sessions", [MULTIPART], 1_000_000),
    ("/api/import", [MULTIPART], 20_000_000),
])
def test_only_the_routes_that_take_files_take_large_bodies(path: str, headers: list, limit: int) -> None:
    guard = InputGuard(1_000_000, {"/api/import": 20_000_000}, upload_bytes=51_000_000)
    assert guard.limit(scope(path, *headers)) == limit
