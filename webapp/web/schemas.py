"""Request and response models of the JSON API (what /docs shows)."""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, Field, field_validator

from webapp.base.models import Attachment, Conversation, Message
from webapp.core.context import check_text
from webapp.core.roles import DESCRIPTION_CHARS, MODEL_CHARS, NAME_CHARS, PROMPT_CHARS, Role


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
    role: str | None = Field(None, max_length=40)
    model: str | None = Field(None, max_length=MODEL_CHARS, description="a model of /api/models; empty: the default")


class SessionOut(BaseModel):
    id: str
    title: str
    role: str
    preview: str
    message_count: int
    created_at: str
    updated_at: str
    running_turn_id: str | None
    model: str = Field("", description="the model picked for it; empty: its role's, else the default")

    @classmethod
    def of(cls, conversation: Conversation) -> "SessionOut":
        return cls(
            id=conversation.id, title=conversation.title, role=conversation.role,
            preview=conversation.preview, message_count=conversation.message_count,
            created_at=_iso(conversation.created), updated_at=_iso(conversation.updated),
            running_turn_id=conversation.running_turn_id, model=conversation.model,
        )


class SessionPage(BaseModel):
    items: list[SessionOut]
    next_cursor: str | None


class AttachmentOut(BaseModel):
    id: str
    name: str = Field(description="the file's name, without a path or control characters")
    kind: str = Field(description="image, pdf or text")
    type: str = Field(description="media type, sniffed from the content (an image is stored resized, as JPEG or PNG)")
    size: int = Field(description="bytes as stored")
    width: int = 0
    height: int = 0
    chars: int = Field(0, description="a document's characters of text...")
    kept: int = Field(0, description="...of which the model is sent this many (the rest is cut, and it is told)")
    pages: int = Field(0, description="a PDF's pages...")
    read: int = Field(0, description="...of which this many were read")

    @classmethod
    def of(cls, attachment: Attachment) -> "AttachmentOut":
        return cls(**attachment.__dict__)


class MessageOut(BaseModel):
    id: str
    role: str
    content: str
    ts: str
    status: str
    index: int = Field(0, description="list index in the active branch")
    version: int = Field(1, description="which version of this message is shown (1-based)")
    versions: int = Field(1, description="how many versions it has (regenerated replies, edited messages)")
    role_id: str = Field("", description="a reply: the AI role that answered")
    role_name: str = Field("", description="a reply of a custom role: its name then")
    model: str = Field("", description="a reply: the model that wrote it")
    attachments: list[AttachmentOut] = Field([], description="a user message: its files")

    @classmethod
    def of(cls, message: Message, index: int = 0, version: tuple[int, int] = (1, 1)) -> "MessageOut":
        return cls(id=message.id, role=message.role, content=message.content, ts=message.ts, status=message.status,
                   index=index, version=version[0], versions=version[1], role_id=message.role_id,
                   role_name=message.role_name, model=message.model,
                   attachments=[AttachmentOut.of(a) for a in message.attachments])


ATTACHMENT_IDS = "ids from POST /api/files (images need a model in OPENAI_VISION_MODELS)"


class MessageEdit(BaseModel):
    content: str
    attachments: list[str] | None = Field(None, max_length=20, description="the files it sends: "
                                          + ATTACHMENT_IDS + "; unset: the edited message's own")


class VersionIn(BaseModel):
    version: int = Field(ge=1, le=10000)


class MessagePage(BaseModel):
    items: list[MessageOut]
    total: int
    has_more: bool
    first_index: int = Field(description="list index of the first item; pass it as `before` for older ones")


class TurnIn(BaseModel):
    message: str = Field("", description="the text; may be empty when it carries files")
    role: str | None = None
    attachments: list[str] = Field([], max_length=20, description="files it carries: " + ATTACHMENT_IDS)


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


# custom roles and models ------------------------------------------------------------

class RoleIn(BaseModel):
    name: str = Field(min_length=1, max_length=NAME_CHARS)
    description: str = Field("", max_length=DESCRIPTION_CHARS)
    system_prompt: str = Field(min_length=1, max_length=PROMPT_CHARS)
    model: str = Field("", max_length=MODEL_CHARS, description="empty: the conversation's or the app's model")
    temperature: float | None = Field(None, ge=0, le=2)

    @field_validator("name", "description", "system_prompt", "model")
    @classmethod
    def _text(cls, value: str) -> str:
        return check_text(value).strip()

    @field_validator("name", "system_prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be blank")
        return value


class RolePatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=NAME_CHARS)
    description: str | None = Field(None, max_length=DESCRIPTION_CHARS)
    system_prompt: str | None = Field(None, min_length=1, max_length=PROMPT_CHARS)
    model: str | None = Field(None, max_length=MODEL_CHARS)
    temperature: float | None = Field(None, ge=0, le=2)

    _text = field_validator("name", "description", "system_prompt", "model")(
        lambda cls, value: check_text(value).strip() if value is not None else None)


class CustomRoleOut(RoleOut):
    name: str = Field("", description="a custom role's name (built-in ones: the Chinese name)")
    description: str = ""
    custom: bool = False
    system_prompt: str = ""
    model: str = ""
    temperature: float | None = None

    @classmethod
    def of(cls, role: Role) -> "CustomRoleOut":
        return cls(id=role.id, name_zh=role.name_zh, name_en=role.name_en, description_zh=role.description_zh,
                   description_en=role.description_en, name=role.name_zh, description=role.description_zh,
                   custom=role.custom,
                   system_prompt=role.system_prompt if role.custom else "", model=role.model,
                   temperature=role.temperature)


class ModelsOut(BaseModel):
    default: str
    models: list[str]


class ShareOut(BaseModel):
    token: str | None
    url: str | None


class ImportOut(BaseModel):
    conversations: int
    roles: int
    ids: list[str] = Field(description="the new ids of the imported conversations, in the file's order")
