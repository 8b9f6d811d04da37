"""The store, concept by concept (identities, limits, conversations and messages, turns and their event
streams, expiry), called by its methods' names on a real redis-server: what each write leaves in Redis
and what each read gives back. The rules on top of it are tested through the core (test_core_*.py)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio

from tests.unit.wiring import Core
from webapp.base.models import Conversation, Message, TurnEvent, new_id, new_message_id, now_iso
from webapp.core.roles import custom_role
from webapp.core.search import terms_of
from webapp.storage.base import split_count
from webapp.storage.keys import TurnRef
from webapp.storage.redis_client import connect_store

ALICE, BOB = "alice", "bob"


def conversation_of(user_id: str, *, title: str = "") -> tuple[Conversation, Message]:
    now = time.time()
    welcome = Message(id=new_message_id(), role="assistant", content="hello", ts=now_iso(), kind="welcome")
    return Conversation(id=new_id(), user_id=user_id, title=title, preview="hello", role="assistant",
                        message_count=1, created=now, updated=now), welcome


def messages(count: int) -> list[Message]:
    return [Message(id=new_message_id(), role="user" if n % 2 else "assistant", content=f"message {n}", ts=now_iso())
            for n in range(count)]


# identities ------------------------------------------------------------------


async def test_an_identity_is_claimed_once(core: Core) -> None:
    assert not await core.store.identity_exists("visitor-1")
    assert await core.store.claim_user("visitor-1")
    assert not await core.store.claim_user("visitor-1")
    assert await core.store.identity_exists("visitor-1")


async def test_an_identity_with_a_history_cannot_be_claimed_again(core: Core) -> None:
    """Even when its marker key is gone (evicted): its conversation list still says it is someone's."""
    await core.conversations.create("visitor-2")
    await core.store.redis.delete(core.store.keys.claim("visitor-2"))

    assert not await core.store.claim_user("visitor-2")


async def test_a_claim_marker_has_no_ttl_and_frees_the_identity_once_its_time_has_passed(core: Core) -> None:
    """No eviction policy can take the marker (volatile-* evicts only keys with a TTL), and an identity
    whose data has all expired is free again, as when the marker had the data's TTL."""
    assert await core.store.claim_user("visitor-3")
    claim = core.store.keys.claim("visitor-3")
    assert await core.store.redis.ttl(claim) == -1
    assert int(await core.store.redis.get(claim)) >= time.time() + core.settings.index_ttl - 2

    await core.store.redis.set(claim, int(time.time()) - 1)  # its data's time is over

    assert not await core.store.identity_exists("visitor-3")
    assert await core.store.claim_user("visitor-3")


async def test_an_identity_with_api_tokens_or_shared_links_stays_someones_without_its_history(core: Core) -> None:
    await core.store.redis.hset(core.store.keys.tokens("visitor-4"), "t1", "{}")
    await core.store.redis.hset(core.store.keys.shares("visitor-5"), "s1", "token")

    assert not await core.store.claim_user("visitor-4") and not await core.store.claim_user("visitor-5")


# limits ---------------------------------------------------------------------------


async def test_hits_are_counted_per_limit_key_and_window_with_the_previous_windows_count(core: Core) -> None:
    """Each hit answers (this window's count, the previous window's) packed in one integer: the sliding
    window's two counters in the one reply the turn's lock round trip reads per counter."""
    hits = [("turns-user", ALICE, 100, 60), ("turns-user", BOB, 100, 60), ("turns-user", ALICE, 101, 60)]

    assert [split_count(n) for n in await core.store.count_hits(hits)] == [(1, 0), (1, 0), (1, 1)]
    assert [split_count(n) for n in await core.store.count_hits(hits[:1])] == [(2, 0)]
    assert [split_count(n) for n in await core.store.count_hits(hits[2:])] == [(2, 2)]

    ttl = await core.store.redis.ttl(core.store.keys.limit("turns-user", ALICE, 100))
    assert 120 < ttl <= 150  # read as the previous window all through the next one
    await core.store.uncount_hits(hits[:1])
    assert [split_count(n) for n in await core.store.count_hits(hits[2:])] == [(3, 1)]


# conversations and messages --------------------------------------------------------


async def test_creating_a_conversation_writes_it_once_and_stops_at_the_owners_limit(core: Core) -> None:
    conversation, welcome = conversation_of(ALICE)

    made = await core.store.create_conversation(conversation, welcome, limit=2)
    again = await core.store.create_conversation(conversation, welcome, limit=2)
    second = await core.store.create_conversation(*conversation_of(ALICE), limit=2)
    third = await core.store.create_conversation(*conversation_of(ALICE), limit=2)

    assert (made.written, made.existed, made.earlier) == (True, False, 0)
    assert (again.written, again.existed) == (False, True)
    assert second.written and (third.written, third.existed, third.earlier) == (False, False, 2)
    assert await core.store.count_conversations(ALICE) == 2
    assert await core.store.all_messages(conversation) == [welcome]


async def test_two_creates_racing_for_the_last_place_write_one_conversation(core: Core) -> None:
    await core.store.create_conversation(*conversation_of(ALICE), limit=2)

    outcomes = await asyncio.gather(*(core.store.create_conversation(*conversation_of(ALICE), limit=2)
                                      for _ in range(5)))

    assert sum(outcome.written for outcome in outcomes) == 1
    assert await core.store.count_conversations(ALICE) == 2


async def test_a_conversation_is_read_only_by_its_owner(core: Core) -> None:
    conversation, welcome = conversation_of(ALICE, title="mine")
    await core.store.create_conversation(conversation, welcome)

    assert (await core.store.get_conversation(ALICE, conversation.id)).title == "mine"
    assert await core.store.get_conversation(BOB, conversation.id) is None
    assert await core.store.load_conversations(BOB, [conversation.id]) == []


async def test_message_pages_walk_back_from_the_newest_and_message_ids_are_found(core: Core) -> None:
    conversation, _ = conversation_of(ALICE)
    stored = messages(25)
    await core.store.import_conversation(conversation, stored, terms=[])

    newest, first, total = await core.store.message_page(conversation, limit=10, before=None)
    middle, middle_first, _ = await core.store.message_page(conversation, limit=10, before=first)
    oldest, oldest_first, _ = await core.store.message_page(conversation, limit=10, before=middle_first)

    assert total == 25 and (first, middle_first, oldest_first) == (15, 5, 0)
    assert oldest + middle + newest == stored
    assert await core.store.message_page(conversation, limit=10, before=0) == ([], 0, 25)
    assert await core.store.find_message_index(conversation, stored[3].id, chunk=4) == 3
    assert await core.store.find_message_index(conversation, "m_0000000000000000") is None
    assert await core.store.message_at(conversation, 24) == stored[24]
    assert await core.store.session_of_message(ALICE, stored[1].id) == conversation.id  # a user message
    assert await core.store.session_of_message(BOB, stored[1].id) is None


async def test_a_renamed_conversation_keeps_the_users_title_over_a_generated_one(core: Core) -> None:
    conversation, welcome = conversation_of(ALICE, title="first words")
    await core.store.create_conversation(conversation, welcome)

    assert await core.store.set_generated_title(ALICE, conversation.id, expected="first words", title="A Title")
    await core.store.rename_conversation(conversation, "Mine")
    assert not await core.store.set_generated_title(ALICE, conversation.id, expected="Mine", title="Another")
    assert not await core.store.set_generated_title(BOB, conversation.id, expected="Mine", title="Bob's")

    stored = await core.store.get_conversation(ALICE, conversation.id)
    assert (stored.title, stored.title_by) == ("Mine", "user")


async def test_moving_a_history_to_another_identity_takes_every_conversation_and_leaves_none(core: Core) -> None:
    first, welcome = conversation_of("anon")
    await core.store.create_conversation(first, welcome)
    second, _ = conversation_of("anon")
    await core.store.import_conversation(second, messages(4), terms=[])

    assert await core.store.move_conversations("anon", ALICE) == 2

    assert {c.id for c in (await core.store.list_conversations(ALICE))[0]} == {first.id, second.id}
    assert len(await core.store.all_messages(Conversation.from_hash(second.id, {"user_id": ALICE}))) == 4
    assert await core.store.list_conversations("anon") == ([], None)
    assert await core.store.redis.keys("*{anon}:s:*") == []


# turns and their event streams ---------------------------------------------------


async def test_the_turn_lock_is_taken_once_and_given_back_only_by_its_holder(core: Core) -> None:
    conversation, welcome = conversation_of(ALICE)
    await core.store.create_conversation(conversation, welcome)

    first = await core.store.lock_turn(ALICE, conversation.id, turn_id="t-1", hits=[])
    second = await core.store.lock_turn(ALICE, conversation.id, turn_id="t-2", hits=[])
    await core.store.release_lock(ALICE, conversation.id, "t-2")  # not the holder: nothing happens

    assert first.locked and not second.locked and first.meta["user_id"] == ALICE and first.length == 1
    assert await core.store.lock_holder(ALICE, conversation.id) == "t-1"
    await core.store.release_lock(ALICE, conversation.id, "t-1")
    assert await core.store.lock_holder(ALICE, conversation.id) is None
    foreign = await core.store.lock_turn(BOB, conversation.id, turn_id="t-3", hits=[])
    assert foreign.meta == {}, "someone else's conversation reads as missing"


async def test_a_stream_of_batched_chunks_is_read_from_any_event_exactly_once(core: Core) -> None:
    ref = TurnRef(ALICE, new_id())
    chunks = [TurnEvent(seq, "chunk", f"<{seq}>") for seq in range(1, 10)]
    for batch in (chunks[0:4], chunks[4:5], chunks[5:9]):  # as the event writer flushes: several per entry
        await core.store.append_events([(ref, batch)])
    conversation, welcome = conversation_of(ALICE)
    await core.store.create_conversation(conversation, welcome)
    end = TurnEvent(11, "end", message_id="m_1")
    await core.store.finish_turn(conversation, turn_id=ref.turn_id, reply=None, final_event=end,
                                 unwritten=[TurnEvent(10, "chunk", "<10>")])

    every = [*chunks, TurnEvent(10, "chunk", "<10>"), end]
    for after in range(len(every) + 1):
        assert await core.store.read_events(ref, after) == every[after:], f"after event {after}"
    positions = await core.store.read_many_events({ref: 7, TurnRef(ALICE, "no-such-turn"): 0})
    assert positions == {ref: every[7:]}


async def test_stop_is_marked_only_on_a_running_turn(core: Core) -> None:
    conversation, welcome = conversation_of(ALICE)
    await core.store.create_conversation(conversation, welcome)
    running, ended = new_id(), new_id()
    for turn_id in (running, ended):
        conversation.running_turn_id = turn_id
        await core.store.save_turn_start(conversation, None, turn_id=turn_id, context_messages=5)
    await core.store.finish_turn(conversation, turn_id=ended, reply=None, final_event=TurnEvent(1, "end"))

    await core.store.request_cancel(TurnRef(ALICE, running))
    await core.store.request_cancel(TurnRef(ALICE, ended))

    assert await core.store.redis.hget(core.store.keys.turn(TurnRef(ALICE, running)), "cancel") == "1"
    assert await core.store.redis.hget(core.store.keys.turn(TurnRef(ALICE, ended)), "cancel") is None
    assert (await core.store.get_turn(TurnRef(ALICE, ended))).status == "error"  # ended with no reply
    assert await core.store.get_turn(TurnRef(BOB, running)) is None


# expiry ----------------------------------------------------------------------------


async def test_everything_a_conversation_and_its_turns_leave_in_redis_expires(core: Core) -> None:
    """Anonymous data never stays for good: every key of an identity has a TTL (accounts aside), but for
    the claim marker, which no eviction may take (issue 34): it holds the time the rest expires."""
    conversation = await core.conversations.create(ALICE)
    await core.finish(ALICE, await core.writer.start_turn(conversation.id, ALICE, "first [[vary]]", None, "en"))
    await core.finish(ALICE, await core.writer.regenerate(conversation.id, ALICE, "en"))  # versions and forks too
    await core.roles.create(ALICE, custom_role("Critic", "", "Point out one weakness."))
    await core.search.flush()

    owned = await core.store.redis.keys(f"*{{{ALICE}}}*")
    assert len(owned) > 10
    forever = [key for key in owned if await core.store.redis.ttl(key) < 0]
    assert forever == [core.store.keys.claim(ALICE)]
    longest = max([await core.store.redis.ttl(key) for key in owned if key not in forever])
    assert abs(int(await core.store.redis.get(forever[0])) - (time.time() + longest)) <= 2


# the client --------------------------------------------------------------------------


async def test_closing_the_store_closes_its_connections(core: Core) -> None:
    watcher = redis.asyncio.Redis.from_url(core.settings.redis_url, decode_responses=True)
    store = await connect_store(core.settings)
    try:
        before = len(await watcher.client_list())
        await asyncio.gather(*(store.get_conversation(ALICE, new_id()) for _ in range(3)))  # three at once
        assert len(await watcher.client_list()) == before + 3

        await store.aclose()

        # redis-server frees a closed connection when its event loop reads the close, which may come
        # after the watcher's CLIENT LIST in the same round: wait (briefly) for it to catch up
        deadline = asyncio.get_running_loop().time() + 5
        while (left := len(await watcher.client_list())) != before and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        assert left == before
    finally:
        for client in (store.redis, store.blocking_redis):
            await client.connection_pool.disconnect()
        await watcher.aclose()


async def test_terms_a_conversation_already_holds_cost_one_command_and_their_ttls_are_still_renewed(core: Core) -> None:
    store, k = core.store, core.store.keys
    await store.redis.hset(k.meta(ALICE, "s1"), "user_id", ALICE)  # (a conversation's: only those are indexed)
    words = [f"word{i}" for i in range(40)]
    await store.index_terms([(ALICE, "s1", words)])
    assert await store.redis.smembers(k.term(ALICE, "word7")) == {"s1"}

    async def commands() -> int:
        return int((await store.redis.info("stats"))["total_commands_processed"])

    before = await commands()
    await store.index_terms([(ALICE, "s1", [*words, "fresh"])])  # a later turn: one new word
    spent = await commands() - before - 1  # (less the INFO itself)
    assert spent <= len(words) + 1 + 8, spent  # one SADD per known term, the new one's few, the call
    assert await store.redis.smembers(k.term(ALICE, "fresh")) == {"s1"}
    assert "fresh" in await store.redis.zrange(k.lexicon(ALICE), 0, -1)

    # a day on (the conversation's term set has less than TTL - 1 day left): every term's TTL is renewed
    await store.redis.expire(k.conversation_terms(ALICE, "s1"), 60)
    await store.redis.expire(k.term(ALICE, "word7"), 60)
    await store.index_terms([(ALICE, "s1", words)])
    assert await store.redis.ttl(k.term(ALICE, "word7")) > store.index_ttl - 60
    assert await store.redis.ttl(k.conversation_terms(ALICE, "s1")) > store.index_ttl - 60


async def test_a_terms_set_that_expired_while_the_conversation_still_names_it_comes_back(core: Core) -> None:
    store, k = core.store, core.store.keys
    await store.redis.hset(k.meta(ALICE, "s1"), "user_id", ALICE)
    await store.index_terms([(ALICE, "s1", ["foo", "bar"])])
    await store.redis.delete(k.term(ALICE, "foo"))  # expired (or evicted) alone: the conversation's list still names it
    await store.index_terms([(ALICE, "s1", ["foo"])])  # within the day: a known term costs one SADD, nothing more
    assert await store.redis.smembers(k.term(ALICE, "foo")) == set()

    await store.index_terms([(ALICE, "s1", ["bar"])], renew=True)  # a rebuild, an undo: every term written again
    assert await store.redis.smembers(k.term(ALICE, "foo")) == {"s1"}

    await store.redis.delete(k.term(ALICE, "foo"))
    await store.redis.expire(k.conversation_terms(ALICE, "s1"), 60)  # a day on
    await store.index_terms([(ALICE, "s1", ["baz"])])  # a turn that does not even say "foo"
    assert await store.redis.smembers(k.term(ALICE, "foo")) == {"s1"}
    assert await store.redis.ttl(k.term(ALICE, "foo")) > store.index_ttl - 60


async def test_a_long_cjk_text_indexes_all_its_terms(core: Core) -> None:
    """Thousands of terms in one call (the script takes them as KEYS and ARGV, never unpacked at once)."""
    store, k = core.store, core.store.keys
    await store.redis.hset(k.meta(ALICE, "s1"), "user_id", ALICE)
    text = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(6000))  # ~6,000 characters, ~12,000 terms
    terms = terms_of(text)
    assert len(terms) > 9000
    await store.index_terms([(ALICE, "s1", terms)])  # new conversation: the renewing path
    await store.index_terms([(ALICE, "s1", [*terms, "新词"])])  # within the day: one new term
    await store.index_terms([(ALICE, "s1", [*terms, "新词"])], renew=True)

    assert await store.redis.scard(k.conversation_terms(ALICE, "s1")) == len(terms) + 1
    assert await store.redis.zcard(k.lexicon(ALICE)) == len(terms) + 1
    assert await store.redis.smembers(k.term(ALICE, "新词")) == {"s1"}
    some = sorted(terms)[:: len(terms) // 50]
    for term in some:
        assert await store.redis.smembers(k.term(ALICE, term)) == {"s1"}
        assert await store.redis.ttl(k.term(ALICE, term)) > store.index_ttl - 60


async def test_terms_of_a_conversation_that_is_gone_are_not_written(core: Core) -> None:
    """(Terms queued for a conversation, or its reply saved, just before a delete removed its entries.)"""
    store, k = core.store, core.store.keys
    await store.index_terms([(ALICE, "gone", ["foo", "bar"])])
    await store.index_terms([(ALICE, "gone", ["foo"])], renew=True)
    assert await store.redis.keys("*gone*") == []
    assert await store.redis.zrange(k.lexicon(ALICE), 0, -1) == []
