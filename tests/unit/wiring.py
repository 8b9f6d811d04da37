"""The core of one app worker, built in-process as webapp/main.py's lifespan builds it (keep the two alike)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webapp.base.metrics import Metrics
from webapp.base.models import TERMINAL, Message, TurnEvent
from webapp.config import Settings
from webapp.core.accounts import Accounts
from webapp.core.auto_title import TitleWriter
from webapp.core.conversations import Conversations
from webapp.core.limits import Limits
from webapp.core.roles import RoleBook
from webapp.core.search import SearchIndex
from webapp.core.sharing import Shares
from webapp.core.turns.channels import ConversationChannels
from webapp.core.turns.leases import LeaseKeeper
from webapp.core.turns.reader import TurnReader
from webapp.core.turns.writer import Started, TurnWriter
from webapp.llm.providers import Provider, create_provider
from webapp.storage.redis_client import connect_store
from webapp.storage.store import Store


def core_settings(redis_url: str, upstream_url: str, **changes: Any) -> Settings:
    """The app's settings for a test: Redis and the fake model given, no `.env` read, limits as shipped
    except the per-address ones (a test has no address)."""
    values: dict[str, Any] = {
        "redis_url": redis_url, "redis_cluster": False, "openai_api_key": "test-key",
        "openai_base_url": upstream_url, "openai_model": "fake-model", "openai_timeout": 3, "auto_title": False,
        "secret_key": "unit-test-secret-key-0123456789", "turns_per_ip_per_minute": 0,
        "sign_ins_per_ip_per_minute": 0, "signups_per_ip_per_hour": 0,
    }
    values.update(changes)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Core:
    """The core of one app worker, wired as webapp/main.py's lifespan wires it."""

    settings: Settings
    store: Store
    provider: Provider
    writer: TurnWriter
    reader: TurnReader
    leases: LeaseKeeper
    conversations: Conversations
    roles: RoleBook
    search: SearchIndex
    titles: TitleWriter
    limits: Limits
    accounts: Accounts
    shares: Shares

    async def read_to_end(self, user_id: str, turn_id: str, after: int = 0, *,
                          reader: TurnReader | None = None) -> list[TurnEvent]:
        """Every event of a turn after seq `after`, as a reader sees them, up to its end or error."""
        reader = reader or self.reader
        events: list[TurnEvent] = []
        turn = await reader.owned_turn(turn_id, user_id)
        async for batch in reader.follow(turn, after):
            events.extend(batch)
        return events

    async def finish(self, user_id: str, started: Started) -> list[TurnEvent]:
        """Follow a turn to its end (or error): its events."""
        events = await self.read_to_end(user_id, started.id)
        assert events and events[-1].type in TERMINAL, events
        return events

    async def history(self, user_id: str, session_id: str) -> list[Message]:
        """The conversation's messages as Redis holds them."""
        conversation = await self.store.get_conversation(user_id, session_id)
        assert conversation is not None, "the conversation is gone"
        return await self.store.all_messages(conversation)

    async def aclose(self) -> None:
        """In the lifespan's order."""
        await self.writer.aclose()
        await self.titles.aclose()
        await self.search.aclose()
        await self.leases.aclose()
        await self.reader.aclose()
        await self.provider.aclose()
        await self.store.aclose()
        # Store.aclose leaves its pools' connections open (redis-py closes a pool it was handed only when
        # asked: test_storage.py's xfail); here they would pile up over the session
        for client in (self.store.redis, self.store.blocking_redis):
            await client.connection_pool.disconnect()


async def start_core(settings: Settings) -> Core:
    """The core on an emptied Redis, its background tasks (event writer, cancel listener, search
    index, lease keeper) running on the current event loop."""
    store = await connect_store(settings)
    await store.redis.flushdb()
    metrics = Metrics()
    provider = create_provider(settings)
    writer = TurnWriter(store, provider, settings, metrics)
    reader = TurnReader(store, writer.local_run, metrics, settings.max_streams_per_user, recovery=writer.recovery)
    leases = LeaseKeeper(store, writer.recovery, writer.held_leases, writer.lease_lost, writer.cancel_requested)
    writer.ended = leases.turn_ended
    limits = Limits(store)
    search = SearchIndex(store)
    titles = TitleWriter(store, provider, search, enabled=settings.auto_title and not settings.demo_mode)
    channels = ConversationChannels(writer.started_since)
    writer.started_hooks += [search.turn_started, channels.turn_started]
    writer.saved_hooks += [search.reply_saved, titles.reply_saved]
    conversations = Conversations(store, writer, reader, settings.max_conversations_per_user, search=search)
    writer.start()
    search.start()
    leases.start()
    return Core(settings=settings, store=store, provider=provider, writer=writer, reader=reader, leases=leases,
                conversations=conversations, roles=writer.roles, search=search, titles=titles, limits=limits,
                accounts=Accounts(store, settings, limits), shares=Shares(store))
