"""The built-in AI roles and their fixed system prompts."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UnknownRole
from .i18n import Lang


@dataclass(frozen=True)
class Role:
    id: str
    name_zh: str
    name_en: str
    description_zh: str
    description_en: str
    system_prompt: str

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
