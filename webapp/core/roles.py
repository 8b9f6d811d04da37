"""The AI roles: three built-in ones with fixed system prompts, and each user's own.

A custom role (id `r_` + hex) has one name and description in whatever language its
author wrote, a system prompt, and optionally a model and a temperature. The built-in
ones are looked up without Redis; a user's own are read from the store (`RoleBook`).
A conversation whose custom role was deleted falls back to the default role.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from webapp.base.errors import RoleLimit, RoleNotFound, UnknownRole
from webapp.base.i18n import Lang, t

if TYPE_CHECKING:
    from webapp.storage.store import Store

CUSTOM_PREFIX = "r_"
CUSTOM_ID = re.compile(r"r_[0-9a-f]{16}")
NAME_CHARS = 40
DESCRIPTION_CHARS = 200
PROMPT_CHARS = 4000
MODEL_CHARS = 100


@dataclass(frozen=True)
class Role:
    id: str
    name_zh: str
    name_en: str
    description_zh: str
    description_en: str
    system_prompt: str
    model: str = ""  # "" = the conversation's or the app's model
    temperature: float | None = None  # None = the model's default
    custom: bool = False
    created: float = 0.0
    published: bool = False  # an admin's role published to everyone: picked, never edited, by other users

    def name(self, lang: Lang) -> str:
        return self.name_zh if lang == "zh" else self.name_en

    def description(self, lang: Lang) -> str:
        return self.description_zh if lang == "zh" else self.description_en


BUILTIN_ROLES: dict[str, Role] = {
    role.id: role
    for role in (
        Role(
            id="assistant",
            name_zh="智能助手",
            name_en="Assistant",
            description_zh="友善专业，解答各种问题",
            description_en="Friendly and professional help with any question",
            system_prompt="你是一个友善、专业的AI助手，能够帮助用户解答各种问题。请保持礼貌和耐心。",
        ),
        Role(
            id="teacher",
            name_zh="AI老师",
            name_en="AI Teacher",
            description_zh="用简单易懂的方式讲解复杂概念",
            description_en="Explains hard ideas simply and makes you think",
            system_prompt="你是一位经验丰富的老师，擅长用简单易懂的方式解释复杂概念，善于启发学生思考。",
        ),
        Role(
            id="programmer",
            name_zh="编程专家",
            name_en="Programmer",
            description_zh="专业的编程建议与解决方案",
            description_en="Expert programming advice and solutions",
            system_prompt="你是一位资深的程序员，精通多种编程语言和技术栈，能够提供专业的编程建议和解决方案。",
        ),
    )
}
DEFAULT_ROLE = "assistant"


def get_role(role_id: str | None) -> Role:
    """Look a role up by id; an empty id means the default role."""
    role = BUILTIN_ROLES.get(role_id or DEFAULT_ROLE)
    if role is None:
        raise UnknownRole()
    return role


def role_or_default(role_id: str | None) -> Role:
    """The role a conversation has stored; one no longer known falls back to the default."""
    return BUILTIN_ROLES.get(role_id or DEFAULT_ROLE) or BUILTIN_ROLES[DEFAULT_ROLE]


def custom_role(name: str, description: str, system_prompt: str, model: str = "",
                temperature: float | None = None, *, role_id: str | None = None,
                created: float | None = None) -> Role:
    """A user's own role (its texts already checked by the caller's schema)."""
    return Role(id=role_id or CUSTOM_PREFIX + secrets.token_hex(8), name_zh=name, name_en=name,
                description_zh=description, description_en=description, system_prompt=system_prompt,
                model=model, temperature=temperature, custom=True,
                created=time.time() if created is None else created)


def role_record(role: Role) -> dict[str, Any]:
    """What the store keeps of a custom role."""
    data = asdict(role)
    return {"name": data["name_zh"], "description": data["description_zh"], "prompt": data["system_prompt"],
            "model": data["model"], "temperature": data["temperature"], "created": data["created"]}


def role_from_record(role_id: str, data: dict[str, Any]) -> Role:
    return custom_role(str(data.get("name", "")), str(data.get("description", "")), str(data.get("prompt", "")),
                       str(data.get("model") or ""), data.get("temperature"), role_id=role_id,
                       created=float(data.get("created") or 0))


@dataclass
class ResolvedRole:
    """The role a conversation answers with; `missing` when its own custom role was deleted."""

    role: Role
    missing: bool = False


class RoleBook:
    """Every role a user may pick: the built-in ones, then their own (oldest first)."""

    def __init__(self, store: "Store", max_per_user: int = 50) -> None:
        self.store = store
        self.max_per_user = max_per_user

    async def own(self, user_id: str) -> list[Role]:
        records = await self.store.list_roles(user_id)
        return sorted((role_from_record(rid, data) for rid, data in records.items()), key=lambda r: r.created)

    async def published(self) -> list[Role]:
        """The roles an admin published to everyone (core/admin.py): beside the built-in ones, not editable."""
        records = await self.store.published_roles()
        return sorted((replace(role_from_record(rid, data), published=True) for rid, data in records.items()),
                      key=lambda r: r.created)

    async def all(self, user_id: str) -> list[Role]:
        own = await self.own(user_id)
        mine = {role.id for role in own}
        published = [role for role in await self.published() if role.id not in mine]
        return list(BUILTIN_ROLES.values()) + published + own

    async def get(self, user_id: str, role_id: str | None) -> Role:
        """A role the user may pick by id (built-in, published or theirs); UnknownRole otherwise (someone else's too)."""
        if not role_id or role_id in BUILTIN_ROLES:
            return get_role(role_id)
        if CUSTOM_ID.fullmatch(role_id):
            data, published = await self.store.own_or_published_role(user_id, role_id)
            if data is not None:
                return replace(role_from_record(role_id, data), published=published)
        raise UnknownRole()

    async def own_role(self, user_id: str, role_id: str) -> Role:
        """One of the user's own roles, for editing or deleting; 404 for any other id."""
        if not CUSTOM_ID.fullmatch(role_id):
            raise RoleNotFound()
        data = await self.store.get_role(user_id, role_id)
        if data is None:
            raise RoleNotFound()
        return role_from_record(role_id, data)

    async def resolve(self, user_id: str, role_id: str | None) -> ResolvedRole:
        """The role a conversation stored: a built-in one without a round trip; a deleted custom one
        falls back to the default and says so."""
        if not role_id or role_id in BUILTIN_ROLES or not role_id.startswith(CUSTOM_PREFIX):
            return ResolvedRole(role_or_default(role_id))
        data, published = (await self.store.own_or_published_role(user_id, role_id) if CUSTOM_ID.fullmatch(role_id)
                           else (None, False))
        if data is None:
            return ResolvedRole(BUILTIN_ROLES[DEFAULT_ROLE], missing=True)
        return ResolvedRole(replace(role_from_record(role_id, data), published=published))

    async def create(self, user_id: str, role: Role) -> Role:
        if not await self.store.add_role(user_id, role.id, role_record(role), self.max_per_user):
            raise RoleLimit(limit=self.max_per_user)
        return role

    async def update(self, user_id: str, role_id: str, changes: dict[str, Any]) -> Role:
        current = await self.own_role(user_id, role_id)
        record = {**role_record(current), **changes}
        await self.store.put_role(user_id, role_id, record)
        return role_from_record(role_id, record)

    async def delete(self, user_id: str, role_id: str) -> None:
        """Conversations that used it fall back to the default role when next shown or answered."""
        await self.own_role(user_id, role_id)
        await self.store.delete_role(user_id, role_id)


def answered_by(message: Any, lang: Lang) -> str:
    """A reply's badge: the role that answered and the model, e.g. "AI老师 · gpt-4o-mini"; "AI" for
    replies saved before messages recorded them (and the welcome message)."""
    builtin = BUILTIN_ROLES.get(getattr(message, "role_id", ""))
    name = builtin.name(lang) if builtin else getattr(message, "role_name", "") or t("ui.ai", lang)
    model = getattr(message, "model", "")
    return f"{name} · {model}" if model else name
