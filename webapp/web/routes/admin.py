"""The admin page (/admin): users with their figures, paginated and searchable, what an admin may do to
a user, and the audit list; the same as JSON under /api/admin. Plain forms (each posts and gets a 303
back, or a page that says what happened), so it works without JavaScript. Every route answers 403 to
anyone who is not an admin (deps.AdminUser), before it reads what it names."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Query, Response

from webapp.base.errors import InvalidInput
from webapp.core.admin import UserPage
from webapp.web.deps import AdminDep, AdminUser, CurrentUser
from webapp.web.error_handlers import PAGE_TAG
from webapp.web.htmx import View, ViewDep, see_other
from webapp.web.routing import PageRouter
from webapp.web.schemas import AdminBudgetIn, AdminUserPage

api_router = APIRouter(tags=["admin"])
page_router = PageRouter(include_in_schema=False, tags=[PAGE_TAG])

UserId = Annotated[str, Path(pattern=r"^a_[0-9a-f]{24}$")]
PageNumber = Annotated[int, Query(ge=1, le=100_000)]
Search = Annotated[str, Query(max_length=64)]


async def admin_page(view: View, admin: AdminDep, admin_uid: str, page: int = 1, q: str = "", *, status: int = 200,
                     notice: str = "", new_password: str = "", password_for: str = "") -> Response:
    users: UserPage = await admin.users(page, q)
    published = await admin.roles.published()
    shared = {role.id for role in published}
    own_roles = [role for role in await admin.roles.own(admin_uid) if role.id not in shared]
    return view.render("admin.html", status=status, users=users, audit=await admin.audit(),
                       notice=notice, new_password=new_password, password_for=password_for,
                       published=published, own_roles=own_roles)


@page_router.get("/admin")
async def admin_home(view: ViewDep, _: AdminUser, user: CurrentUser, admin: AdminDep, page: PageNumber = 1,
                     q: Search = "") -> Response:
    return await admin_page(view, admin, user, page, q)


@page_router.post("/admin/roles/publish")
async def publish_role(who: AdminUser, user: CurrentUser, admin: AdminDep,
                       role_id: Annotated[str, Form(max_length=40)] = "") -> Response:
    """One of the admin's own roles, for everyone (a copy: publish again after editing it)."""
    await admin.publish_role(who, user, role_id)
    return see_other("/admin#published-roles")


@page_router.post("/admin/roles/{role_id}/unpublish")
async def unpublish_role(role_id: Annotated[str, Path(max_length=40)], who: AdminUser, admin: AdminDep) -> Response:
    await admin.unpublish_role(who, role_id)
    return see_other("/admin#published-roles")


@page_router.post("/admin/users/{uid}/disable")
async def disable(uid: UserId, who: AdminUser, admin: AdminDep, back: Annotated[str, Form(max_length=200)] = "") -> Response:
    await admin.set_disabled(who, uid, True)
    return see_other(_back(back))


@page_router.post("/admin/users/{uid}/enable")
async def enable(uid: UserId, who: AdminUser, admin: AdminDep, back: Annotated[str, Form(max_length=200)] = "") -> Response:
    await admin.set_disabled(who, uid, False)
    return see_other(_back(back))


@page_router.post("/admin/users/{uid}/budget")
async def set_budget(uid: UserId, who: AdminUser, admin: AdminDep, budget: Annotated[str, Form(max_length=20)] = "",
                     back: Annotated[str, Form(max_length=200)] = "") -> Response:
    """`budget`: tokens a month (0 = unlimited); empty: the default again."""
    value = budget.strip().replace(",", "").replace("_", "")
    if value and not (value.isascii() and value.isdigit()):  # ("²" is a digit to str.isdigit, no number to int)
        raise InvalidInput()
    await admin.set_budget(who, uid, int(value) if value else None)
    return see_other(_back(back))


@page_router.post("/admin/users/{uid}/password")
async def reset_password(view: ViewDep, uid: UserId, who: AdminUser, user: CurrentUser, admin: AdminDep) -> Response:
    """The new password is on this answer only (like a new API token): not stored anywhere readable."""
    username, password = await admin.reset_password(who, uid)
    return await admin_page(view, admin, user, new_password=password, password_for=username)


@page_router.post("/admin/users/{uid}/delete")
async def delete_user(uid: UserId, who: AdminUser, admin: AdminDep,
                      confirm: Annotated[str, Form(max_length=64)] = "",
                      back: Annotated[str, Form(max_length=200)] = "") -> Response:
    """Deleted only when `confirm` repeats the username (the form asks for it)."""
    await admin.delete_user(who, uid, confirm=confirm)
    return see_other(_back(back))


def _back(back: str) -> str:
    """Back to the admin page the form was on (its page and search), never elsewhere."""
    return back if back.startswith("/admin") and "//" not in back and "\\" not in back else "/admin"


# the JSON API -------------------------------------------------------------------------

@api_router.get("/api/admin/users", response_model=AdminUserPage)
async def users_json(_: AdminUser, admin: AdminDep, page: PageNumber = 1, q: Search = "") -> AdminUserPage:
    """Users, newest first (or, with `q`, by name from that prefix), 50 a page: admins only (403)."""
    return AdminUserPage.of(await admin.users(page, q))


@api_router.put("/api/admin/users/{uid}/budget", status_code=204)
async def budget_json(uid: UserId, body: AdminBudgetIn, who: AdminUser, admin: AdminDep) -> Response:
    """A user's own monthly token budget (0 = unlimited; null = the default again)."""
    await admin.set_budget(who, uid, body.tokens)
    return Response(status_code=204)
