"""Read-only links to a conversation: an unguessable token its owner creates and revokes.

The token (32 random bytes, URL-safe) is the only key to the link: the lookup key is its
SHA-256, so a copy of the database does not hand out working links, and the owner's own
list keeps the token itself so the owner can see the link again. A link works only
while its owner still lists it: revoking unlists it and deletes the lookup, and deleting
the conversation revokes it. What a link shows is the conversation's active branch, as
it is now; nobody who opens it becomes anyone (no cookie is set).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from webapp.base.errors import ShareNotFound
from webapp.base.models import Conversation, Message, mark_welcome
from webapp.storage.store import Store

TOKEN_BYTES = 32
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_SHARED_MESSAGES = 2000


def share_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class SharedConversation:
    conversation: Conversation
    messages: list[Message]


class Shares:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def token_of(self, conversation: Conversation) -> str | None:
        return await self.store.share_token(conversation.user_id, conversation.id)

    async def create(self, conversation: Conversation) -> str:
        """The conversation's link token (the existing one if it has one)."""
        token = await self.token_of(conversation)
        if token is None:
            token = secrets.token_urlsafe(TOKEN_BYTES)
            await self.store.add_share(conversation.user_id, conversation.id, token, share_digest(token))
        return token

    async def revoke(self, conversation: Conversation) -> bool:
        return await self.store.remove_share(conversation.user_id, conversation.id, share_digest)

    async def open(self, token: str) -> SharedConversation:
        """What a link shows; ShareNotFound for a malformed, unknown or revoked token alike."""
        if not TOKEN_PATTERN.fullmatch(token):
            raise ShareNotFound()
        target = await self.store.shared_conversation(share_digest(token), token)
        if target is None:
            raise ShareNotFound()
        conversation = await self.store.get_conversation(*target)
        if conversation is None:
            raise ShareNotFound()
        messages = await self.store.all_messages(conversation)
        return SharedConversation(conversation, mark_welcome(messages[-MAX_SHARED_MESSAGES:], 0))
