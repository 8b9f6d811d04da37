"""Request and response models of the JSON API (what /docs shows)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from webapp.base.models import Attachment, Conversation, Message
from webapp.core.context import check_text
from webapp.core.roles import DESCRIPTION_CHARS, MODEL_CHARS, NAME_CHARS, PROMPT_CHARS, Role
from webapp.core.admin import MAX_BUDGET, UserPage
from webapp.core.spending import UsageReport, UsageRow


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
    pinned: bool | None = Field(None, description="pin (at most 100, newest pin first) or unpin; pinning unarchives")
    archived: bool | None = Field(None, description="archive (leaves the lists, unpinned, kept as long as the "
                                                    "user's data; a message sent in it restores it) or restore")
    folder_id: str | None = Field(None, max_length=36, description="move into that folder of /api/folders; "
                                                                   "empty or null: out of any folder")


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
    pinned: bool = False
    archived: bool = False
    folder_id: str | None = Field(None, description="the folder it is in, if any")

    @classmethod
    def of(cls, conversation: Conversation) -> "SessionOut":
        return cls(
            id=conversation.id, title=conversation.title, role=conversation.role,
            preview=conversation.preview, message_count=conversation.message_count,
            created_at=_iso(conversation.created), updated_at=_iso(conversation.updated),
            running_turn_id=conversation.running_turn_id, model=conversation.model,
            pinned=bool(conversation.pinned), archived=bool(conversation.archived),
            folder_id=conversation.folder or None,
        )


class SessionPage(BaseModel):
    items: list[SessionOut]
    next_cursor: str | None


class MessageUsageOut(BaseModel):
    input_tokens: int
    output_tokens: int
    estimated: bool = Field(description="the model reported no counts: estimated from the characters")
    ttft_ms: int = Field(description="from the turn's start to the first token")
    duration_ms: int = Field(description="from the turn's start to the saved reply")
    tokens_per_second: float = Field(description="output tokens per second after the first token")


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
    usage: MessageUsageOut | None = Field(None, description="a reply: what it cost (tokens) and how fast it came")
    attachments: list[AttachmentOut] = Field([], description="a user message: its files")

    @classmethod
    def of(cls, message: Message, index: int = 0, version: tuple[int, int] = (1, 1)) -> "MessageOut":
        u = message.usage
        usage = MessageUsageOut(input_tokens=u.input_tokens, output_tokens=u.output_tokens, estimated=u.estimated,
                                ttft_ms=u.ttft_ms, duration_ms=u.duration_ms,
                                tokens_per_second=u.tokens_per_second) if u else None
        return cls(id=message.id, role=message.role, content=message.content, ts=message.ts, status=message.status,
                   index=index, version=version[0], versions=version[1], role_id=message.role_id,
                   role_name=message.role_name, model=message.model, usage=usage,
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
    published: bool = Field(False, description="an admin published it to everyone: it may be picked, not edited")
    system_prompt: str = ""
    model: str = ""
    temperature: float | None = None

    @classmethod
    def of(cls, role: Role) -> "CustomRoleOut":
        return cls(id=role.id, name_zh=role.name_zh, name_en=role.name_en, description_zh=role.description_zh,
                   description_en=role.description_en, name=role.name_zh, description=role.description_zh,
                   custom=role.custom, published=role.published,
                   system_prompt=role.system_prompt if role.custom and not role.published else "", model=role.model,
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


class UsageRowOut(BaseModel):
    day: str = Field("", description="YYYY-MM-DD (UTC); empty in totals")
    model: str = Field("", description="empty in the grand total")
    input_tokens: int
    output_tokens: int
    replies: int
    estimated: int = Field(0, description="replies whose counts are estimates (the model reported none)")
    cost: float | None = Field(None, description="at MODEL_PRICES (per million tokens); null: no price known")

    @classmethod
    def of(cls, row: UsageRow) -> "UsageRowOut":
        return cls(day=row.day, model=row.model, input_tokens=row.input_tokens, output_tokens=row.output_tokens,
                   replies=row.replies, estimated=row.estimated,
                   cost=round(row.cost, 6) if row.cost is not None else None)


class UsageOut(BaseModel):
    rows: list[UsageRowOut] = Field(description="the last 30 days by day and model, newest first")
    models: list[UsageRowOut] = Field(description="the same 30 days by model")
    total: UsageRowOut
    month_tokens: int = Field(description="tokens in and out this calendar month (UTC)")
    budget: int = Field(description="the monthly token budget; 0 = none")
    resets: str = Field(description="the date (UTC) the month's count starts again")

    @classmethod
    def of(cls, report: UsageReport) -> "UsageOut":
        return cls(rows=[UsageRowOut.of(r) for r in report.rows], models=[UsageRowOut.of(r) for r in report.models],
                   total=UsageRowOut.of(report.total), month_tokens=report.month_tokens, budget=report.budget,
                   resets=report.resets)


class AdminUserOut(BaseModel):
    id: str
    username: str
    created: float = Field(description="unix seconds")
    last_active: float = Field(description="unix seconds of the last activity in a conversation; 0: none")
    conversations: int
    tokens_this_month: int
    budget: int = Field(description="the monthly token budget that applies; 0 = none")
    own_budget: int | None = Field(description="set by an admin; null: the default applies")
    disabled: bool
    storage_bytes: int | None = Field(description="as last measured (storage quota); null: not measured lately")
    admin: bool


class AdminUserPage(BaseModel):
    users: list[AdminUserOut]
    total: int
    page: int
    pages: int

    @classmethod
    def of(cls, page: UserPage) -> "AdminUserPage":
        return cls(users=[AdminUserOut(id=r.uid, username=r.username, created=r.created, last_active=r.last_active,
                                       conversations=r.conversations, tokens_this_month=r.tokens, budget=r.budget,
                                       own_budget=r.own_budget, disabled=r.disabled, storage_bytes=r.storage,
                                       admin=r.admin) for r in page.rows],
                   total=page.total, page=page.page, pages=page.pages)


class AdminBudgetIn(BaseModel):
    tokens: int | None = Field(description="tokens a month; 0 = unlimited; null = the default", ge=0, le=MAX_BUDGET)


# folders and batches (issue 37) --------------------------------------------------------

class FolderIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="1 to 40 characters once whitespace is collapsed; "
                                                                 "unique among the caller's folders (case-folded)")


class FolderOut(BaseModel):
    id: str
    name: str


class BulkIn(BaseModel):
    action: Literal["delete", "restore", "archive", "unarchive", "pin", "unpin", "move", "export"]
    ids: list[Annotated[str, Field(max_length=36)]] = Field(min_length=1, max_length=200)
    folder_id: str | None = Field(None, max_length=36, description="move: the folder (none: out of any)")


class BulkOut(BaseModel):
    done: int = Field(description="how many conversations the action changed (export: how many it holds)")
    ids: list[str] = Field(description="the ids changed; after delete, what `restore` takes to undo the batch")
    export: dict[str, Any] | None = Field(None, description="export: the file /api/export writes, these only")
