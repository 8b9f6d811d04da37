"""A conversation's lock is given back only by its holder (real redis-server)."""

from __future__ import annotations

from tests.conftest import RedisServer
from tests.test_followers import run_with_store
from webapp.base.models import new_id
from webapp.storage.store import Store


def test_a_late_release_leaves_the_lock_another_turn_has_taken(redis_server: RedisServer) -> None:
    async def body(store: Store) -> None:
        sid = new_id()
        first = await store.lock_turn("u_test", sid, turn_id="turn-a", hits=[])
        assert first.locked
        await store.redis.delete(store.keys.lock("u_test", sid))  # turn-a's lock expired...
        second = await store.lock_turn("u_test", sid, turn_id="turn-b", hits=[])
        assert second.locked  # ...and turn-b took the conversation
        await store.release_lock("u_test", sid, "turn-a")  # turn-a's late release
        assert await store.lock_holder("u_test", sid) == "turn-b"
        await store.release_lock("u_test", sid, "turn-b")
        assert await store.lock_holder("u_test", sid) is None

    run_with_store(redis_server, body)
