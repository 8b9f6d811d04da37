"""HTML pages and partials."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def index() -> str:
    return "<!doctype html><title>Chat</title><p>Chat server is running. See <a href=/docs>/docs</a>.</p>"
