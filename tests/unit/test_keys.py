"""Every key one identity owns is in one Redis Cluster slot; the routing reads the right key."""

from __future__ import annotations

from redis.crc import key_slot

from webapp.storage.keys import Keys, TurnRef
from webapp.storage.redis_client import _command_key


def test_every_key_of_an_identity_shares_its_slot() -> None:
    keys = Keys("team:")
    uid, sid, ref = "u_1234", "0b9e6a40-0000-4000-8000-000000000000", TurnRef("u_1234", "t-1")
    owned = [
        keys.claim(uid), keys.index(uid), keys.meta(uid, sid), keys.messages(uid, sid), keys.lock(uid, sid),
        keys.versions(uid, sid), keys.forks(uid, sid), keys.message(uid, "m_1"), keys.request(uid, "r"),
        keys.turn(ref), keys.events(ref), keys.recovery(ref), keys.trash(uid, sid), keys.account(uid),
        keys.signins(uid), keys.tokens(uid), keys.limit("turns-user", uid, 7),
    ]
    assert {key_slot(key.encode()) for key in owned} == {key_slot(b"{u_1234}")}
    assert all(key.startswith("team:") for key in owned)


def test_other_identities_spread_over_slots() -> None:
    keys = Keys()
    slots = {key_slot(keys.index(f"u_{n}").encode()) for n in range(200)}
    assert len(slots) > 150


def test_the_routing_key_of_a_command() -> None:
    assert _command_key(("HGETALL", "chat:{u}:s:1")) == "chat:{u}:s:1"
    assert _command_key(("EVAL", "return 1", 1, "chat:{u}:s:1:lock", "t")) == "chat:{u}:s:1:lock"
    assert _command_key(("EVAL", "return 1", 0)) is None
    assert _command_key(("PING",)) is None
