"""Custom roles and models: the JSON API (/api/roles, /api/models) and the roles page.

The roles page is plain forms (each posts and gets a 303 back), so it works the same with
JavaScript off; it is reached from the role selector, whose conversation it returns to.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Response
from pydantic import ValidationError

from webapp.base.errors import ChatError, InvalidInput
from webapp.core.roles import RoleBook, custom_role, role_record
from webapp.web.deps import ConversationsDep, CreatingUser, CurrentUser, OwnedConversation, OwnedRole, RolesDep
from webapp.web.error_handlers import PAGE_TAG
from webapp.web.htmx import View, ViewDep, local_path, see_other
from webapp.web.routing import PageRouter
from webapp.web.schemas import CustomRoleOut, ModelsOut, RoleIn, RolePatch

api_router = APIRouter(tags=["roles"])
page_router = PageRouter(include_in_schema=False, tags=[PAGE_TAG])

FormField = Annotated[str, Form()]


# the JSON API ------------------------------------------------------------------------

@api_router.get("/api/roles", response_model=list[CustomRoleOut])
async def list_roles(user: CurrentUser, roles: RolesDep) -> list[CustomRoleOut]:
    """The built-in roles, then the caller's own (with their system prompts)."""
    return [CustomRoleOut.of(role) for role in await roles.all(user)]


@api_router.post("/api/roles", response_model=CustomRoleOut, status_code=201)
async def create_role(body: RoleIn, user: CreatingUser, roles: RolesDep,
                      conversations: ConversationsDep) -> CustomRoleOut:
    await check_model(body.model, conversations)
    role = custom_role(body.name, body.description, body.system_prompt, body.model, body.temperature)
    return CustomRoleOut.of(await roles.create(user, role))


@api_router.get("/api/roles/{role_id}", response_model=CustomRoleOut)
async def get_role(role: OwnedRole) -> CustomRoleOut:
    return CustomRoleOut.of(role)


@api_router.patch("/api/roles/{role_id}", response_model=CustomRoleOut)
async def update_role(role: OwnedRole, body: RolePatch, user: CurrentUser, roles: RolesDep,
                      conversations: ConversationsDep) -> CustomRoleOut:
    changes = body.model_dump(exclude_unset=True)
    for key in ("name", "description", "system_prompt"):
        if key in changes and changes[key] is None:  # null: unchanged
            del changes[key]
    if changes.get("name") == "" or changes.get("system_prompt") == "":
        raise InvalidInput()
    if "model" in changes:
        changes["model"] = changes["model"] or ""
        await check_model(changes["model"], conversations)
    return CustomRoleOut.of(await roles.update(user, role.id, _record_changes(changes)))


@api_router.delete("/api/roles/{role_id}", status_code=204)
async def delete_role(role: OwnedRole, user: CurrentUser, roles: RolesDep) -> Response:
    """Conversations that used it answer as the default role from now on (and say so)."""
    await roles.delete(user, role.id)
    return Response(status_code=204)


@api_router.get("/api/models", response_model=ModelsOut, tags=["models"])
async def list_models(conversations: ConversationsDep) -> ModelsOut:
    """The models a conversation (or a role) may use; the first is the default."""
    models = await conversations.models()
    return ModelsOut(default=models[0], models=models)


def _record_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """RolePatch fields as the stored record names them."""
    names = {"system_prompt": "prompt"}
    return {names.get(key, key): value for key, value in changes.items()}


async def check_model(model: str, conversations: Any) -> None:
    from webapp.base.errors import UnknownModel

    if model and model not in await conversations.models():
        raise UnknownModel()


# the roles page ----------------------------------------------------------------------

async def roles_page(view: View, user: str, roles: RoleBook, conversations: Any, *, back: str = "/",
                     form_error: str = "", form: dict[str, str] | None = None, status: int = 200) -> Response:
    return view.render("roles.html", status=status, roles=await roles.all(user), back=local_path(back),
                       models=await conversations.models(), form_error=form_error, form=form or {},
                       max_roles=roles.max_per_user, limits=LIMITS)


LIMITS = {"name": 40, "description": 200, "prompt": 4000}


@page_router.get("/roles")
async def roles_index(view: ViewDep, user: CurrentUser, roles: RolesDep, conversations: ConversationsDep,
                      back: Annotated[str, Query(max_length=200)] = "/") -> Response:
    return await roles_page(view, user, roles, conversations, back=back)


def _role_input(name: str, description: str, system_prompt: str, model: str, temperature: str) -> RoleIn:
    try:
        return RoleIn(name=name, description=description, system_prompt=system_prompt.replace("\r\n", "\n"),
                      model=model, temperature=float(temperature) if temperature.strip() else None)
    except (ValidationError, ValueError):
        raise InvalidInput() from None


@page_router.post("/roles")
async def create_role_page(view: ViewDep, user: CreatingUser, roles: RolesDep, conversations: ConversationsDep,
                           name: FormField = "", description: FormField = "", system_prompt: FormField = "",
                           model: FormField = "", temperature: FormField = "", back: FormField = "/") -> Response:
    form = {"name": name, "description": description, "system_prompt": system_prompt, "model": model,
            "temperature": temperature}
    try:
        body = _role_input(name, description, system_prompt, model, temperature)
        await check_model(body.model, conversations)
        await roles.create(user, custom_role(body.name, body.description, body.system_prompt, body.model,
                                             body.temperature))
    except ChatError as exc:
        return await view.form_error(exc, lambda text, status: roles_page(
            view, user, roles, conversations, back=back, form_error=text, form=form, status=status))
    return see_other(f"/roles?back={local_path(back)}")


@page_router.post("/roles/{role_id}")
async def update_role_page(view: ViewDep, role: OwnedRole, user: CurrentUser, roles: RolesDep,
                           conversations: ConversationsDep, name: FormField = "", description: FormField = "",
                           system_prompt: FormField = "", model: FormField = "", temperature: FormField = "",
                           back: FormField = "/") -> Response:
    try:
        body = _role_input(name, description, system_prompt, model, temperature)
        await check_model(body.model, conversations)
        record = role_record(custom_role(body.name, body.description, body.system_prompt, body.model,
                                         body.temperature))
        record.pop("created")
        await roles.update(user, role.id, record)
    except ChatError as exc:
        return await view.form_error(exc, lambda text, status: roles_page(
            view, user, roles, conversations, back=back, form_error=text, status=status))
    return see_other(f"/roles?back={local_path(back)}")


@page_router.post("/roles/{role_id}/delete")
async def delete_role_page(role: OwnedRole, user: CurrentUser, roles: RolesDep, back: FormField = "/") -> Response:
    await roles.delete(user, role.id)
    return see_other(f"/roles?back={local_path(back)}")


# a conversation's model ----------------------------------------------------------------

@page_router.post("/c/{session_id}/model")
async def switch_model(view: ViewDep, conversation: OwnedConversation, conversations: ConversationsDep,
                       model: FormField = "") -> Response:
    """The model this conversation asks ("" = its role's own, else the default)."""
    conversation = await conversations.update(conversation, model=model)
    values = {"conv": conversation, "models": await conversations.models()}
    return await view.fragment_or_redirect("partials/model_selector.html", f"/c/{conversation.id}", values)
