"""The resource API: sessions, their messages, roles, health, and what Redis keeps how long."""

from __future__ import annotations

import json
import time
import uuid
from typing import Callable

import httpx
import redis

from tests.conftest import (
    KEYS,
    WELCOME,
    api_turn,
    create_session,
    history_of,
    messages_of,
    post_turn,
    start_chat,
    stream_turn,
)

DAY = 86400
SESSION_FIELDS = {
    "id", "title", "role", "preview", "message_count", "created_at", "updated_at", "running_turn_id",
}


def test_health_check_answers_ok(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200


def test_roles_lists_the_three_builtin_roles(client: httpx.Client) -> None:
    response = client.get("/api/roles")

    assert response.status_code == 200
    roles = {role["id"]: role for role in response.json()}
    assert {"assistant", "teacher", "programmer"} <= set(roles)
    assert roles["assistant"]["name_zh"] == "智能助手"
    assert roles["teacher"]["name_zh"] == "AI老师"
    assert roles["programmer"]["name_zh"] == "编程专家"
    for role in roles.values():
        assert role["name_en"] and role["description_zh"] and role["description_en"]


def test_new_session_defaults_to_the_assistant_role(client: httpx.Client) -> None:
    session = create_session(client)

    assert SESSION_FIELDS <= set(session)
    assert session["role"] == "assistant"
    assert session["running_turn_id"] is None
    assert client.get(f"/api/sessions/{session['id']}").json()["id"] == session["id"]


def test_new_session_can_start_with_another_role(client: httpx.Client) -> None:
    session = create_session(client, "teacher")

    assert session["role"] == "teacher"
    assert client.get(f"/api/sessions/{session['id']}").json()["role"] == "teacher"


def test_session_with_unknown_role_is_refused(client: httpx.Client) -> None:
    response = client.post("/api/sessions", json={"role": "pirate"})

    assert response.status_code in (400, 422)
    assert client.get("/api/sessions").json()["items"] == []


def test_session_describes_its_conversation_after_a_turn(client: httpx.Client) -> None:
    session = create_session(client)
    api_turn(client, session["id"], "what is a monad")

    shown = client.get(f"/api/sessions/{session['id']}").json()
    messages = messages_of(client, session["id"])

    assert shown["message_count"] == messages["total"] == 3
    assert shown["preview"]
    assert shown["running_turn_id"] is None
    assert shown["updated_at"] >= shown["created_at"]


def created_apart(client: httpx.Client, count: int) -> list[dict]:
    """Sessions created a few milliseconds apart, so "newest first" has one right answer."""
    sessions = []
    for _ in range(count):
        sessions.append(create_session(client))
        time.sleep(0.005)
    return sessions


def test_sessions_are_listed_by_latest_activity(client: httpx.Client) -> None:
    first, second, third = created_apart(client, 3)
    api_turn(client, first["id"], "bring me to the top")

    listing = client.get("/api/sessions").json()

    assert [item["id"] for item in listing["items"]] == [first["id"], third["id"], second["id"]]
    assert listing["next_cursor"] is None


def test_session_list_pages_with_a_cursor(client: httpx.Client) -> None:
    created = [session["id"] for session in created_apart(client, 5)]

    seen = all_session_ids(client, page_size=2)

    assert seen == list(reversed(created))


def test_paging_never_skips_sessions_with_the_same_activity_time(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    chat = start_chat(client)
    created = [chat["session_id"]] + [create_session(client)["id"] for _ in range(4)]
    # sessions touched in the same millisecond (a burst, an import) share an activity score
    index = KEYS.index(chat["user_id"])
    score = redis_client.zscore(index, created[-1])
    redis_client.zadd(index, dict.fromkeys(created, score))

    seen = all_session_ids(client, page_size=2)

    assert sorted(seen) == sorted(created), "every session appears exactly once"


def all_session_ids(client: httpx.Client, page_size: int) -> list[str]:
    """Follow next_cursor from the first page to the last."""
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        params = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/sessions", params=params).json()
        assert len(page["items"]) <= page_size
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError(f"next_cursor never ran out; seen {seen}")


def test_renaming_and_changing_the_role_are_remembered(client: httpx.Client) -> None:
    session = create_session(client)

    renamed = client.patch(f"/api/sessions/{session['id']}", json={"title": "Rust questions"})
    switched = client.patch(f"/api/sessions/{session['id']}", json={"role": "programmer"})
    shown = client.get(f"/api/sessions/{session['id']}").json()

    assert renamed.status_code == 200 and switched.status_code == 200
    assert shown["title"] == "Rust questions"
    assert shown["role"] == "programmer"


def test_changing_to_an_unknown_role_is_refused(client: httpx.Client) -> None:
    session = create_session(client)

    response = client.patch(f"/api/sessions/{session['id']}", json={"role": "pirate"})

    assert response.status_code in (400, 422)
    assert client.get(f"/api/sessions/{session['id']}").json()["role"] == "assistant"


def test_deleted_session_is_gone_everywhere(client: httpx.Client) -> None:
    chat = start_chat(client)
    stream_turn(client, chat, "soon forgotten")
    sid = chat["session_id"]

    deleted = client.delete(f"/api/sessions/{sid}")

    assert deleted.status_code == 204
    assert client.get(f"/api/sessions/{sid}").status_code == 404
    assert client.get(f"/api/sessions/{sid}/messages").status_code == 404
    assert post_turn(client, sid, "still there?").status_code == 404
    assert sid not in {item["id"] for item in client.get("/api/sessions").json()["items"]}
    history = client.get("/chat/history", params={"user_id": chat["user_id"], "session_id": sid})
    assert history.status_code == 404
    assert client.delete(f"/api/sessions/{sid}").status_code == 404


def test_unknown_session_is_not_found(client: httpx.Client) -> None:
    missing = "00000000-0000-4000-8000-000000000000"

    assert client.get(f"/api/sessions/{missing}").status_code == 404
    assert client.get(f"/api/sessions/{missing}/messages").status_code == 404
    assert client.patch(f"/api/sessions/{missing}", json={"title": "x"}).status_code == 404
    assert client.delete(f"/api/sessions/{missing}").status_code == 404
    assert post_turn(client, missing, "hello").status_code == 404


def test_messages_are_listed_in_order_with_their_status(client: httpx.Client) -> None:
    session = create_session(client)
    first = api_turn(client, session["id"], "one")
    second = api_turn(client, session["id"], "two")

    page = messages_of(client, session["id"])

    assert page["total"] == 5 and page["has_more"] is False
    assert [(m["role"], m["content"], m["status"]) for m in page["items"]] == [
        ("assistant", WELCOME, "complete"),
        ("user", "one", "complete"),
        ("assistant", first.text, "complete"),
        ("user", "two", "complete"),
        ("assistant", second.text, "complete"),
    ]
    assert len({m["id"] for m in page["items"]}) == 5
    assert all(m["ts"] for m in page["items"])


def test_messages_page_shows_the_latest_first_and_says_more_exist(client: httpx.Client) -> None:
    session = create_session(client)
    api_turn(client, session["id"], "one")
    last = api_turn(client, session["id"], "two")

    page = messages_of(client, session["id"], limit=2)

    assert page["total"] == 5 and page["has_more"] is True
    assert [m["content"] for m in page["items"]] == ["two", last.text]


def test_seed_and_resource_api_show_the_same_conversation(client: httpx.Client) -> None:
    chat = start_chat(client)
    turn = stream_turn(client, chat, "same everywhere")

    seed = [(m["role"], m["content"]) for m in history_of(client, chat)["messages"]]
    resource = [(m["role"], m["content"]) for m in messages_of(client, chat["session_id"])["items"]]

    assert seed == resource == [
        ("assistant", WELCOME), ("user", "same everywhere"), ("assistant", turn.text),
    ]


# ---------------------------------------------------------------- storage lifetimes


def test_conversation_keys_expire_after_7_and_30_days(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    chat = start_chat(client)
    turn = stream_turn(client, chat, "keep me a week")
    sid, uid = chat["session_id"], chat["user_id"]

    messages_ttl = redis_client.ttl(KEYS.messages(uid, sid))
    index_ttl = redis_client.ttl(KEYS.index(uid))
    meta_ttl = redis_client.ttl(KEYS.meta(uid, sid))

    assert 7 * DAY - 120 <= messages_ttl <= 7 * DAY
    assert 30 * DAY - 120 <= index_ttl <= 30 * DAY
    assert 30 * DAY - 120 <= meta_ttl <= 30 * DAY
    stored = [json.loads(raw) for raw in redis_client.lrange(KEYS.messages(uid, sid), 0, -1)]
    fields = {"id", "role", "content", "ts", "status"}
    # the welcome says it is one; a reply records the role ("r") and model ("mo") that wrote it, and its usage ("u")
    assert [set(m) for m in stored] == [fields | {"k"}, fields, fields | {"r", "mo", "u"}]
    assert stored[0]["k"] == "welcome"
    assert [m["content"] for m in stored] == [WELCOME, "keep me a week", turn.text]


def test_older_messages_are_reached_by_paging_back(client: httpx.Client) -> None:
    session = create_session(client)
    for question in ("one", "two", "three"):
        api_turn(client, session["id"], question)
    everything = messages_of(client, session["id"])["items"]
    pages: list[list[dict]] = []
    params: dict = {"limit": 3}

    while True:
        page = messages_of(client, session["id"], **params)
        pages.insert(0, page["items"])
        if not page["has_more"]:
            break
        # the schema's documented way back: the list index of the page's first item
        params = {"limit": 3, "before": page["first_index"]}

    assert [len(p) for p in pages] == [1, 3, 3]
    assert [m["id"] for p in pages for m in p] == [m["id"] for m in everything]


def test_a_megabyte_delta_streams_as_lines_an_aiohttp_client_reads_with_its_default_limits(
    client: httpx.Client,
) -> None:
    """A model that sends 1 MB in one delta (issue 34 G): events of at most 64 KB, so a client whose
    line limit is aiohttp's default (512 KiB) reads the reply whole."""
    import asyncio

    import aiohttp

    from tests.conftest import run_async

    session = create_session(client)
    started = post_turn(client, session["id"], "all at once [[big:1000000]]").json()

    async def read() -> list[dict]:
        async with aiohttp.ClientSession(base_url=str(client.base_url), cookies=dict(client.cookies)) as http:
            async with http.get(started["events_url"]) as response:
                assert response.status == 200
                lines = [line async for line in response.content]  # aiohttp's readline: 512 KiB at most
        return [json.loads(line[5:]) for line in lines if line.startswith(b"data:")]

    events = run_async(lambda: asyncio.wait_for(read(), 30))

    assert events[-1]["type"] == "end"
    text = "".join(e["content"] for e in events if e["type"] == "chunk")
    assert "x" * 999_999 + "y" in text
    assert text == messages_of(client, session["id"])["items"][-1]["content"]


def test_a_turn_in_someone_elses_conversation_is_a_404_that_writes_and_holds_nothing(
        make_client: Callable[..., httpx.Client]) -> None:
    """A JSON API turn's ownership is checked in the round trip that takes the conversation's lock (no read
    of its own): someone else's conversation answers as a missing one, and neither its messages nor its lock
    are touched."""
    owner, other = make_client(), make_client()
    sid = create_session(owner)["id"]
    create_session(other)
    before = messages_of(owner, sid)["total"]
    for body in ({"message": "not mine"}, {"message": "not mine either", "role": "teacher"}):
        refused = other.post(f"/api/sessions/{sid}/turns", json=body)
        assert refused.status_code == 404, refused.text
        assert refused.json()["detail"] == post_turn(other, str(uuid.uuid4()), "missing").json()["detail"]
    assert messages_of(owner, sid)["total"] == before
    assert owner.get(f"/api/sessions/{sid}").json()["running_turn_id"] is None
    mine = api_turn(owner, sid, "mine")  # (the refused attempts left no lock behind)
    assert mine.status == 200 and mine.events[-1].type == "end"
