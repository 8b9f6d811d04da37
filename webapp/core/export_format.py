"""The export file: a user's data as /api/export writes it and /api/import reads it back.

Validated as a whole before anything is written (core/portability.py); the limits here are
what an import accepts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from webapp.core.context import check_text
from webapp.core.shelves import FOLDER_NAME_CHARS
from webapp.core.roles import DESCRIPTION_CHARS, MODEL_CHARS, NAME_CHARS, PROMPT_CHARS

EXPORT_MESSAGE_CHARS = 200_000
EXPORT_MAX_MESSAGES = 10_000
EXPORT_MAX_CONVERSATIONS = 10_000


class ExportUsage(BaseModel):
    """What a reply cost, as it was recorded (an import does not add it to this month's spending)."""

    model_config = ConfigDict(extra="ignore")

    input_tokens: int = Field(0, ge=0, le=10**9)
    output_tokens: int = Field(0, ge=0, le=10**9)
    estimated: bool = False
    ttft_ms: int = Field(0, ge=0, le=10**9)
    duration_ms: int = Field(0, ge=0, le=10**9)


class ExportMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["user", "assistant"]
    content: str = Field(max_length=EXPORT_MESSAGE_CHARS)
    ts: str = Field("", max_length=40)
    status: Literal["complete", "error", "interrupted"] = "complete"
    kind: Literal["", "welcome"] = ""
    role_id: str = Field("", max_length=40)
    role_name: str = Field("", max_length=NAME_CHARS)
    model: str = Field("", max_length=MODEL_CHARS)
    usage: ExportUsage | None = None
    attachments: list[str] = Field(default_factory=list, max_length=20, description="ids of its conversation's files")

    _text = field_validator("content", "role_name", "model")(lambda cls, value: check_text(value))


class ExportAttachment(BaseModel):
    """A file of a conversation: its record, its bytes in base64 (`data`), a document's text for the model."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(pattern=r"^f_[0-9a-f]{16}$")
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["image", "pdf", "text"]
    type: str = Field(max_length=60)
    size: int = Field(ge=0)
    width: int = Field(0, ge=0)
    height: int = Field(0, ge=0)
    chars: int = Field(0, ge=0)
    kept: int = Field(0, ge=0)
    pages: int = Field(0, ge=0)
    read: int = Field(0, ge=0)
    data: str = Field(pattern=r"^[A-Za-z0-9+/]*={0,2}$")
    text: str = Field("", max_length=EXPORT_MESSAGE_CHARS)

    _text = field_validator("name", "text")(lambda cls, value: check_text(value))


class ExportConversation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field("", max_length=64)
    title: str = Field("", max_length=200)
    role: str = Field("assistant", max_length=40)
    model: str = Field("", max_length=MODEL_CHARS)
    created_at: datetime
    updated_at: datetime
    messages: list[ExportMessage] = Field(max_length=EXPORT_MAX_MESSAGES)
    pinned: bool = False
    archived: bool = False
    folder: str = Field("", max_length=FOLDER_NAME_CHARS, description="the name of its folder")
    files: list[ExportAttachment] = Field(default_factory=list, max_length=EXPORT_MAX_MESSAGES)

    _text = field_validator("title", "folder")(lambda cls, value: check_text(value))


class ExportRole(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(max_length=40)
    name: str = Field(min_length=1, max_length=NAME_CHARS)
    description: str = Field("", max_length=DESCRIPTION_CHARS)
    system_prompt: str = Field(min_length=1, max_length=PROMPT_CHARS)
    model: str = Field("", max_length=MODEL_CHARS)
    temperature: float | None = Field(None, ge=0, le=2)

    _text = field_validator("name", "description", "system_prompt", "model")(lambda cls, value: check_text(value))


class ExportFolder(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=FOLDER_NAME_CHARS)

    _text = field_validator("name")(lambda cls, value: check_text(value))


class ExportFile(BaseModel):
    """A user's data as /api/export writes it and /api/import reads it back."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["chat-export"]
    version: Literal[1]
    exported_at: datetime | None = None
    roles: list[ExportRole] = Field(default_factory=list, max_length=1000)
    folders: list[ExportFolder] = Field(default_factory=list, max_length=1000)
    conversations: list[ExportConversation] = Field(default_factory=list, max_length=EXPORT_MAX_CONVERSATIONS)
