"""The search index: every conversation is found, not only the newest 2,000 (real redis-server,
and the real app over HTTP for what a user sees)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.conftest import RedisServer, api_turn, create_session, unique
from tests.test_followers import run_with_store
from webapp.base.models import WELCOME, Conversation, Message, new_id, new_message_id, now_iso
from webapp.core.search import SearchIndex, indexable, query_terms, terms_of
from webapp.storage.search import SEARCH_SCAN_LIMIT
from webapp.storage.store import Store


def test_terms_are_words_and_cjk_characters_and_bigrams() -> None:
    assert terms_of("Hello, WORLD! co-op x_y 42") == {"hello", "world", "co", "op", "x", "y", "42"}
    assert terms_of("机器学习abc") == {"机", "器", "学", "习", "机器", "器学", "学习", "abc"}
    assert query_terms("redis strea") == (["redis"], "strea")
    assert query_terms("redis stream ") == (["redis", "stream"], "")
    assert query_terms("机器学习") == (["机器", "器学", "学习"], "")
    assert query_terms("e") == (["e"], "") and not indexable("e")  # one letter: the newest are looked through
    assert indexable("学") and indexable("ab")


def test_terms_split_where_the_script_changes_in_any_of_the_cjk_scripts() -> None:
    """The regex that cuts text into runs: kana, hangul and ideographs are CJK runs; letters and digits
    of other scripts (accented, full-width after NFKC) are words; a mark or underscore ends a word."""
    assert terms_of("Pythonで機械学習") == {"python", "で", "機", "械", "学", "習", "で機", "機械", "械学", "学習"}
    assert terms_of("한국어 test") == {"한", "국", "어", "한국", "국어", "test"}
    assert terms_of("ＡＢＣ１２３ café_naïve") == {"abc123", "café", "naïve"}
    assert terms_of("a" * 41 + " ok") == {"ok"}  # over MAX_TERM_CHARS: not a term
    assert terms_of("") == set() and terms_of("!!! ---") == set()
    # punctuation and unassigned code points inside the CJK blocks end a run, as any non-letter does
    assert terms_of("東京・大阪") == {"東", "京", "大", "阪", "東京", "大阪"}
    assert terms_of("中\u3040文") == {"中", "文"}


def test_the_oldest_of_more_than_2000_conversations_is_found_and_deleting_unindexes(
    redis_server: RedisServer,
) -> None:
    async def body(store: Store) -> None:
        uid, index = "u_" + unique("search")[7:], SearchIndex(store)
        needle = unique("needle")
        sids = []
        for n in range(SEARCH_SCAN_LIMIT + 100):
            conversation = Conversation(id=new_id(), user_id=uid, title=f"chat {n}", preview="", role="assistant",
                                        message_count=2, created=1000.0 + n, updated=1000.0 + n)
            text = f"about {needle} and 机器学习" if n == 0 else f"filler words {n}"
            messages = [Message(id=new_message_id(), role="assistant", content="hi", ts=now_iso(), kind=WELCOME),
                        Message(id=new_message_id(), role="user", content=text, ts=now_iso())]
            await store.import_conversation(conversation, messages, terms_of(conversation.title) | terms_of(text))
            sids.append(conversation.id)
        await store.mark_search_index_ready(uid)
        assert await store.search_conversations(uid, needle, limit=30) == []  # the old scan never got there
        for query in (needle, needle[:-3], "机器学习", "学习", "chat 0"):
            found = await index.search(uid, query, limit=30)
            assert sids[0] in [c.id for c in found], query
        assert len(await index.search(uid, "filler", limit=30)) == 30
        newest = await index.search(uid, "filler words", limit=3)
        assert [c.id for c in newest] == sids[-1:-4:-1]  # newest activity first
        assert await index.search(uid, "nothing-like-this", limit=30) == []
        first = await store.get_conversation(uid, sids[0])
        assert first is not None
        await index.remove(first)
        assert await index.search(uid, needle, limit=30) == []
        assert not await store.redis.exists(store.keys.conversation_terms(uid, sids[0]))

    run_with_store(redis_server, body)


def test_search_over_http_finds_messages_replies_renamed_titles_and_forgets_deleted(
    make_client: Callable[..., httpx.Client],
) -> None:
    client = make_client()
    marker, renamed, in_reply = unique("asked"), unique("renamed"), unique("echoed")
    sid = create_session(client)["id"]
    client.post(f"/c/{sid}/messages", data={"message": f"question {marker} here"})
    assert [i["id"] for i in client.get("/api/sessions", params={"q": marker}).json()["items"]] == [sid]  # at once
    other = create_session(client)["id"]
    api_turn(client, other, f"[[echo]] {in_reply}")
    client.patch(f"/api/sessions/{other}", json={"title": f"Now {renamed}"})
    time.sleep(0.3)
    assert [i["id"] for i in client.get("/api/sessions", params={"q": renamed}).json()["items"]] == [other]
    assert [i["id"] for i in client.get("/api/sessions", params={"q": in_reply}).json()["items"]] == [other]
    chinese = create_session(client)["id"]
    api_turn(client, chinese, "请介绍一下人工智能的历史")
    assert [i["id"] for i in client.get("/api/sessions", params={"q": "人工智能"}).json()["items"]] == [chinese]
    # deleted (web UI, with undo) and put back: found again; deleted for good: gone
    client.post(f"/c/{other}/delete")
    assert client.get("/api/sessions", params={"q": renamed}).json()["items"] == []
    client.post(f"/c/{other}/restore")
    assert [i["id"] for i in client.get("/api/sessions", params={"q": renamed}).json()["items"]] == [other]
    client.delete(f"/api/sessions/{other}")
    assert client.get("/api/sessions", params={"q": in_reply}).json()["items"] == []
