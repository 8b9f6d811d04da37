"""Request and response models of the JSON API (what /docs shows)."""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, Field

from .models import Conversation, Message
from .roles import Role


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


class StartOut(BaseModel):
    session_id: str
    user_id: str
    message: str
    welcome_message: str


class HistoryMessage(BaseModel):
    role: str
    content: str
    timestamp: str


class HistoryOut(BaseModel):
    session_id: str
    messages: list[HistoryMessage]
    total: int


class SessionIn(BaseModel):
    role: str | None = Field(None, description="role id; default assistant")
    title: str | None = Field(None, max_length=200)


class SessionPatch(BaseModel):
    title: str | None = Field(None, max_length=200)
    role: str | None = None


class SessionOut(BaseModel):
    id: str
    title: str
    role: str
    preview: str
    message_count: int
    created_at: str
    updated_at: str
    running_turn_id: str | None

    @classmethod
    def of(cls, conversation: Conversation) -> "SessionOut":
        return cls(
            id=conversation.id, title=conversation.title, role=conversation.role,
            preview=conversation.preview, message_count=conversation.message_count,
            created_at=_iso(conversation.created), updated_at=_iso(conversation.updated),
            running_turn_id=conversation.running_turn_id,
        )


class SessionPage(BaseModel):
    items: list[SessionOut]
    next_cursor: str | None


class MessageOut(BaseModel):
    id: str
    role: str
    content: str
    ts: str
    status: str
    index: int = Field(0, description="list index in the active branch")
    version: int = Field(1, description="which version of this message is shown (1-based)")
    versions: int = Field(1, description="how many versions it has (regenerated replies, edited messages)")

    @classmethod
    def of(cls, message: Message, index: int = 0, version: tuple[int, int] = (1, 1)) -> "MessageOut":
        return cls(id=message.id, role=message.role, content=message.content, ts=message.ts, status=message.status,
                   index=index, version=version[0], versions=version[1])


class MessageEdit(BaseModel):
    content: str


class VersionIn(BaseModel):
    version: int = Field(ge=1, le=10000)


class MessagePage(BaseModel):
    items: list[MessageOut]
    total: int
    has_more: bool
    first_index: int = Field(description="list index of the first item; pass it as `before` for older ones")


class TurnIn(BaseModel):
    message: str
    role: str | None = None


class TurnOut(BaseModel):
    turn_id: str
    events_url: str


class RoleOut(BaseModel):
    id: str
    name_zh: str
    name_en: str
    description_zh: str
    description_en: str

    @classmethod
    def of(cls, role: Role) -> "RoleOut":
        return cls(id=role.id, name_zh=role.name_zh, name_en=role.name_en,
                   description_zh=role.description_zh, description_en=role.description_en)


class TokenIn(BaseModel):
    name: str = Field("API token", max_length=100)


class TokenOut(BaseModel):
    id: str
    name: str
    created_at: str

    @classmethod
    def of(cls, token: dict[str, object]) -> "TokenOut":
        return cls(id=str(token["id"]), name=str(token["name"]), created_at=_iso(float(token["created"] or 0)))


class NewTokenOut(BaseModel):
    id: str
    token: str = Field(description="shown once: the server keeps only its hash")
