"""The core of one app worker, built in-process by the lifespan's own wiring (webapp/core/services.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webapp.base.metrics import Metrics
from webapp.base.models import TERMINAL, Message, TurnEvent
from webapp.config import Settings
from webapp.core.services import Services, build_services
from webapp.core.turns.reader import TurnReader
from webapp.core.turns.writer import Started
from webapp.llm.providers import create_provider
from webapp.storage.redis_client import connect_store


def core_settings(redis_url: str, upstream_url: str, **changes: Any) -> Settings:
    """The app's settings for a test: Redis and the fake model given, no `.env` read, limits as shipped
    except the per-address ones (a test has no address) and conversations per minute (tests make many)."""
    values: dict[str, Any] = {
        "redis_url": redis_url, "redis_cluster": False, "openai_api_key": "test-key",
        "openai_base_url": upstream_url, "openai_model": "fake-model", "openai_timeout": 3, "auto_title": False,
        "secret_key": "unit-test-secret-key-0123456789", "turns_per_ip_per_minute": 0,
        "sign_ins_per_ip_per_minute": 0, "signups_per_ip_per_hour": 0, "conversations_per_minute": 0,
    }
    values.update(changes)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Core(Services):
    """The core of one app worker, wired as webapp/main.py's lifespan wires it (build_services), with
    what the tests read it through."""

    settings: Settings

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



async def start_core(settings: Settings) -> Core:
    """The core on an emptied Redis, its background tasks (event writer, cancel listener, search
    index, lease keeper) running on the current event loop."""
    store = await connect_store(settings)
    await store.redis.flushdb()
    services = build_services(store, create_provider(settings), settings, Metrics())
    services.start()
    return Core(settings=settings, **vars(services))
