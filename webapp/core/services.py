"""The core of one worker, wired: who is told of what (the writer's hooks), built once in the app's
lifespan (main.py) and by the in-process tests alike, so the two cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass

from webapp.base.metrics import Metrics
from webapp.config import Settings
from webapp.core.accounts import Accounts
from webapp.core.admin import Admin
from webapp.core.attachments import Uploads
from webapp.core.auto_title import TitleWriter
from webapp.core.conversations import Conversations
from webapp.core.limits import Limits
from webapp.core.portability import Portability
from webapp.core.quota import StorageQuota
from webapp.core.revocations import Revocations
from webapp.core.roles import RoleBook
from webapp.core.search import SearchIndex
from webapp.core.sharing import Shares
from webapp.core.spending import Spending
from webapp.core.turns.channels import ConversationChannels
from webapp.core.turns.leases import LeaseKeeper
from webapp.core.turns.reader import TurnReader
from webapp.core.turns.writer import TurnWriter
from webapp.llm.providers import Provider
from webapp.storage.redis_checks import EvictionWatch
from webapp.storage.store import Store


@dataclass
class Services:
    store: Store
    provider: Provider
    writer: TurnWriter
    reader: TurnReader
    leases: LeaseKeeper
    limits: Limits
    search: SearchIndex
    titles: TitleWriter
    channels: ConversationChannels
    conversations: Conversations
    roles: RoleBook
    shares: Shares
    portability: Portability
    accounts: Accounts
    eviction_watch: EvictionWatch
    revocations: Revocations
    quota: StorageQuota
    spending: Spending
    admin: Admin
    uploads: Uploads

    def start(self) -> None:
        """The background tasks: the event writer and cancel listener, the search index, the lease keeper,
        the eviction policy's re-check, the revocation listener."""
        self.writer.start()
        self.search.start()
        self.leases.start()
        self.eviction_watch.start()
        self.revocations.start()

    async def aclose(self) -> None:
        """Running replies saved first, then the queues, then the clients."""
        await self.writer.aclose()
        await self.titles.aclose()
        await self.search.aclose()
        await self.leases.aclose()
        await self.eviction_watch.aclose()
        await self.revocations.aclose()
        await self.reader.aclose()
        self.uploads.close()
        await self.provider.aclose()
        await self.store.aclose()


def build_services(store: Store, provider: Provider, settings: Settings, metrics: Metrics) -> Services:
    writer = TurnWriter(store, provider, settings, metrics)
    reader = TurnReader(store, writer.local_run, metrics, settings.max_streams_per_user, recovery=writer.recovery)
    leases = LeaseKeeper(store, writer.recovery, writer.held_leases, writer.lease_lost, writer.cancel_requested)
    writer.ended = leases.turn_ended
    limits = Limits(store)
    revocations = Revocations(store)
    search = SearchIndex(store)
    titles = TitleWriter(store, provider, search, enabled=settings.auto_title and not settings.demo_mode,
                         busy=lambda: len(writer.runs))
    channels = ConversationChannels(writer.started_since)
    # told of every turn once its user message is saved, and of every reply once it is saved
    writer.started_hooks += [search.turn_started, channels.turn_started]
    writer.saved_hooks += [search.reply_saved, titles.reply_saved]
    quota = StorageQuota(store, settings.storage_quota_bytes)
    conversations = Conversations(store, writer, reader, settings.max_conversations_per_user, search=search,
                                  per_minute=settings.conversations_per_minute, quota=quota)
    portability = Portability(store, writer.roles, search, max_conversations=settings.max_conversations_per_user,
                              max_messages=settings.max_messages_per_conversation, models=provider.models,
                              limits=limits, imports_per_hour=settings.imports_per_hour,
                              import_bytes_per_hour=settings.import_bytes_per_hour,
                              max_message_chars=settings.max_import_message_chars, quota=quota)
    accounts = Accounts(store, settings, limits, revocations)
    admin = Admin(store, settings, accounts, conversations, writer.spending, quota, writer.roles)
    return Services(store=store, provider=provider, writer=writer, reader=reader, leases=leases, limits=limits,
                    search=search, titles=titles, channels=channels, conversations=conversations, roles=writer.roles,
                    shares=Shares(store), portability=portability, accounts=accounts,
                    eviction_watch=EvictionWatch(store, settings), revocations=revocations,
                    quota=quota, spending=writer.spending, admin=admin, uploads=Uploads(store, quota, settings))
