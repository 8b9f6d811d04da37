"""Read-only links: create and revoke them (API and web UI), and the shared page itself.

`/s/{token}` needs no identity and sets no cookie; it has no controls and no script, is
marked noindex, is never cached, and shows a plain "not found" once the link is revoked.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from webapp.web.deps import OwnedConversation, SharesDep, get_shares
from webapp.web.error_handlers import PAGE_TAG
from webapp.web.htmx import View, ViewDep, see_other
from webapp.web.routing import PageRouter
from webapp.web.schemas import ShareOut

api_router = APIRouter(tags=["sessions"])
page_router = PageRouter(include_in_schema=False, tags=[PAGE_TAG])
shared_router = PageRouter(include_in_schema=False, tags=[PAGE_TAG])

NOINDEX = {"X-Robots-Tag": "noindex, nofollow", "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def share_out(request: Request, token: str | None) -> ShareOut:
    return ShareOut(token=token, url=str(request.url_for("shared_page", token=token)) if token else None)


@api_router.get("/api/sessions/{session_id}/share", response_model=ShareOut)
async def get_share(conversation: OwnedConversation, shares: SharesDep, request: Request) -> ShareOut:
    return share_out(request, await shares.token_of(conversation))


@api_router.post("/api/sessions/{session_id}/share", response_model=ShareOut, status_code=201)
async def create_share(conversation: OwnedConversation, shares: SharesDep, request: Request) -> ShareOut:
    """A read-only link anyone holding it can open; the same link again if there is one."""
    return share_out(request, await shares.create(conversation))


@api_router.delete("/api/sessions/{session_id}/share", status_code=204)
async def revoke_share(conversation: OwnedConversation, shares: SharesDep) -> Response:
    await shares.revoke(conversation)
    return Response(status_code=204)


# the web UI --------------------------------------------------------------------------

async def share_page(view: View, conversation: object, token: str | None) -> Response:
    url = str(view.request.url_for("shared_page", token=token)) if token else ""
    return view.render("share.html", conv=conversation, share_url=url)


@page_router.get("/c/{session_id}/share")
async def share_settings(view: ViewDep, conversation: OwnedConversation, shares: SharesDep) -> Response:
    return await share_page(view, conversation, await shares.token_of(conversation))


@page_router.post("/c/{session_id}/share")
async def create_share_page(conversation: OwnedConversation, shares: SharesDep) -> Response:
    await shares.create(conversation)
    return see_other(f"/c/{conversation.id}/share")


@page_router.post("/c/{session_id}/share/revoke")
async def revoke_share_page(conversation: OwnedConversation, shares: SharesDep) -> Response:
    await shares.revoke(conversation)
    return see_other(f"/c/{conversation.id}/share")


@shared_router.get("/s/{token}", name="shared_page")
async def shared_page(token: str, view: ViewDep, request: Request) -> Response:
    shared = await (await get_shares(request)).open(token)
    response = view.render("shared.html", conv=shared.conversation, messages=shared.messages, file_base=f"/s/{token}")
    response.headers.update(NOINDEX)
    return response
