"""The records the app stores and passes around: plain dataclasses, no Redis, no HTTP.

store.py reads and writes them; the core (conversations, turn writer and reader)
decides what goes in them; templates and API schemas get them as they are.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import IntEnum

import orjson

WELCOME = "welcome"  # Message.kind of a conversation's first message


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_id() -> str:
    return str(uuid.uuid4())


def new_message_id() -> str:
    return "m_" + secrets.token_hex(8)


@dataclass
class Usage:
    """What a reply cost: tokens in and out (the provider's count, or an estimate when it sent none), how
    long until its first token and in all (ms). Stored in a message's JSON as `u` (compact keys)."""

    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False
    ttft_ms: int = 0
    duration_ms: int = 0

    @property
    def tokens_per_second(self) -> float:
        """Output tokens per second of generating (from the first token on, where known)."""
        seconds = (self.duration_ms - self.ttft_ms) / 1000 if self.duration_ms > self.ttft_ms else 0
        return round(self.output_tokens / seconds, 1) if seconds > 0 else 0.0

    def to_dict(self) -> dict[str, int]:
        data = {"i": self.input_tokens, "o": self.output_tokens, "f": self.ttft_ms, "d": self.duration_ms}
        if self.estimated:
            data["e"] = 1
        return data

    @classmethod
    def from_dict(cls, data: object) -> "Usage | None":
        if not isinstance(data, dict):
            return None
        try:
            return cls(input_tokens=max(0, int(data.get("i", 0))), output_tokens=max(0, int(data.get("o", 0))),
                       estimated=bool(data.get("e")), ttft_ms=max(0, int(data.get("f", 0))),
                       duration_ms=max(0, int(data.get("d", 0))))
        except (TypeError, ValueError):
            return None


@dataclass
class Attachment:
    """A file a user message carries (its bytes are in Redis: storage/attachments.py). `kind`: image, pdf or
    text; `type`: its media type as sniffed from the content; an image's `width` x `height` as stored (resized);
    a document's `chars` of text, of which the model is sent `kept`; a PDF's `pages`, of which `read`."""

    id: str
    name: str
    kind: str
    type: str
    size: int
    width: int = 0
    height: int = 0
    chars: int = 0
    kept: int = 0
    pages: int = 0
    read: int = 0

    @property
    def cut(self) -> bool:
        return self.kept < self.chars or self.read < self.pages

    def to_dict(self) -> dict[str, str | int]:
        return {key: value for key, value in self.__dict__.items() if value or key in ("id", "name", "kind", "type")}

    @classmethod
    def from_dict(cls, data: dict) -> "Attachment":
        return cls(**{key: data[key] for key in ATTACHMENT_FIELDS if key in data})


ATTACHMENT_FIELDS = ("id", "name", "kind", "type", "size", "width", "height", "chars", "kept", "pages", "read")


@dataclass
class Message:
    id: str
    role: str  # "user" | "assistant"
    content: str
    ts: str
    status: str = "complete"  # complete | error | interrupted
    kind: str = ""  # "welcome": the greeting a conversation starts with, shown in the reader's language
    role_id: str = ""  # a reply: the AI role that answered...
    role_name: str = ""  # ...its name then (a custom role may be renamed or deleted later)
    model: str = ""  # ...and the model that wrote it
    usage: Usage | None = None  # ...and what it cost (tokens, timing)
    attachments: list[Attachment] = field(default_factory=list)  # a user message: the files it carries

    def to_json(self) -> bytes:
        data = {"id": self.id, "role": self.role, "content": self.content, "ts": self.ts, "status": self.status}
        if self.kind:
            data["k"] = self.kind
        if self.role_id:
            data["r"] = self.role_id
        if self.role_name:
            data["rn"] = self.role_name
        if self.model:
            data["mo"] = self.model
        if self.usage is not None:
            data["u"] = self.usage.to_dict()
        if self.attachments:
            data["a"] = [a.to_dict() for a in self.attachments]
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: str | bytes) -> "Message":
        data = orjson.loads(raw)
        return cls(
            id=data.get("id", ""),
            role=data.get("role", "assistant"),
            content=data.get("content", ""),
            ts=data.get("ts") or data.get("timestamp", ""),
            status=data.get("status", "complete"),
            kind=data.get("k", ""),
            role_id=data.get("r", ""),
            role_name=data.get("rn", ""),
            model=data.get("mo", ""),
            usage=Usage.from_dict(data["u"]) if "u" in data else None,
            attachments=[Attachment.from_dict(a) for a in data["a"]] if "a" in data else [],
        )


@dataclass
class Conversation:
    id: str
    user_id: str
    title: str
    preview: str
    role: str
    message_count: int
    created: float
    updated: float
    running_turn_id: str | None = None
    model: str = ""  # the model the user picked for it ("" = its role's, else the app's)
    title_by: str = ""  # "user" once renamed (a generated title never replaces it), "model" once generated
    last_turn_id: str = ""  # the newest turn started (running or not): an open page tells whether it missed one
    tokens: int = 0  # what its replies cost, in and out (regenerated and edited-away ones included)
    pinned: float = 0  # when it was pinned (ms; 0: not pinned)
    archived: float = 0  # when it was archived (ms; 0: not archived)
    folder: str = ""  # the id of the user's folder it is in ("": none)

    @property
    def untouched(self) -> bool:
        """Only its welcome message, no title, no reply being written: nothing a user made yet."""
        return self.message_count <= 1 and not self.title and not self.running_turn_id

    def to_hash(self) -> dict[str, str | int]:
        """The metadata hash as stored (the running turn is not part of a copy)."""
        return {
            "user_id": self.user_id, "title": self.title, "preview": self.preview, "role": self.role,
            "count": self.message_count, "created": repr(self.created), "updated": repr(self.updated), "turn": "", "last": "",
            "model": self.model, "title_by": self.title_by, "tok": self.tokens,
            **self.shelf_fields(),
        }

    def shelf_fields(self) -> dict[str, str]:
        """Where the user keeps it (pinned, archived, in a folder): only what is set is stored."""
        fields = {"pinned": repr(self.pinned)} if self.pinned else {}
        if self.archived:
            fields["archived"] = repr(self.archived)
        if self.folder:
            fields["folder"] = self.folder
        return fields

    @classmethod
    def from_hash(cls, sid: str, data: dict[str, str]) -> "Conversation":
        return cls(
            id=sid,
            user_id=data.get("user_id", ""),
            title=data.get("title", ""),
            preview=data.get("preview", ""),
            role=data.get("role", "assistant"),
            message_count=int(data.get("count", 0) or 0),
            created=float(data.get("created", 0) or 0),
            updated=float(data.get("updated", 0) or 0),
            running_turn_id=data.get("turn") or None,
            model=data.get("model", ""),
            title_by=data.get("title_by", ""),
            last_turn_id=data.get("last", ""),
            tokens=int(data.get("tok", 0) or 0),
            pinned=float(data.get("pinned", 0) or 0),
            archived=float(data.get("archived", 0) or 0),
            folder=data.get("folder", ""),
        )


@dataclass
class TurnEvent:
    """One event of a reply: `chunk` (text), `end` or `error` (message id / error text)."""

    seq: int
    type: str
    content: str = ""
    message_id: str = ""


TERMINAL = ("end", "error")


@dataclass
class TurnInfo:
    id: str
    session_id: str
    user_id: str
    status: str  # running | complete | error | interrupted
    message_id: str = ""


@dataclass(frozen=True)
class Creation:
    """What store.create_conversation did: `written`, or not because the id `existed`, or the owner is
    over the creation rate (`rate_limited`; `rate_counts`: its packed counts), or their storage is full
    (`storage_full`), else at the limit; `earlier`, how many conversations the owner had before;
    `storage_used`: the owner's storage as last measured (None: no recent measurement)."""

    written: bool
    existed: bool
    earlier: int
    rate_limited: bool = False
    rate_counts: int = 0
    storage_full: bool = False
    storage_used: int | None = None


class Lease(IntEnum):
    """What renewing a generating turn's lease found (storage/turns.py RENEW_LEASE returns these numbers)."""

    LOST = 0  # another host recovers the turn, or another turn holds the conversation: stop, save nothing
    HELD = 1
    CANCEL = 2  # held, and Stop was asked for the turn (its pub/sub message may have been missed)
    ENDED = 3  # its writer saved it meanwhile (a renewal racing the save): nothing to renew, nothing lost


@dataclass
class TurnLock:
    """What taking a conversation's turn lock read in the same round trip."""

    meta: dict[str, str]
    locked: bool
    length: int  # messages in the active branch (the truth where the stored count drifted)
    counts: list[int]  # each limit's count in its window, this turn included
    earlier: str | None = None  # the turn an identical request (same request id) started before
    budget: tuple[int, int | None, bool, str] | None = None  # budgets on: (tokens this month, own budget, lane taken, lane holder)


@dataclass
class TurnStart:
    """What starting a turn wrote and read back: the conversation, the saved user message, the context."""

    conversation: Conversation
    user_message: Message
    context: list[Message] = field(default_factory=list)


@dataclass
class BranchState:
    """The active branch from `index` on, as read from Redis."""

    index: int
    messages: list[str]  # raw JSON of the messages at index, index+1, ...
    forks: dict[int, str] = field(default_factory=dict)  # fork JSON at index and after
    versions: dict[int, str] = field(default_factory=dict)  # "active/count" at index and after

    def message(self, index: int) -> Message | None:
        """The message at list `index`, if this state reaches it."""
        offset = index - self.index
        return Message.from_json(self.messages[offset]) if 0 <= offset < len(self.messages) else None

    def from_index(self, index: int) -> BranchState:
        """The same branch from a later `index` on (no second read from Redis)."""
        return BranchState(index=index, messages=self.messages[index - self.index:],
                           forks={j: f for j, f in self.forks.items() if j >= index},
                           versions={j: v for j, v in self.versions.items() if j >= index})


@dataclass
class BranchChange:
    """What to write: the new tail from `index` on, and the fork bookkeeping."""

    index: int
    messages: list[str]
    forks_set: dict[int, str]
    forks_del: list[int]
    versions_set: dict[int, str]
    versions_del: list[int]


def mark_welcome(messages: list[Message], first_index: int) -> list[Message]:
    """Data written before messages carried their kind: a conversation's first message is its welcome."""
    if first_index == 0 and messages and messages[0].role == "assistant" and not messages[0].kind:
        messages[0].kind = WELCOME
    return messages
