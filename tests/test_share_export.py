"""Read-only links, export and import, generated titles and REDIS_PREFIX, over real HTTP.

One more app runs for this module (`other_app`): on the same redis-server as the suite's app
but with another REDIS_PREFIX, generated titles on, and a small MAX_IMPORT_BYTES.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from bs4 import BeautifulSoup

from tests.conftest import (
    AppServer,
    RedisServer,
    _start_app,
    _stop_app,
    all_keys,
    api_turn,
    create_session,
    messages_of,
    post_turn,
    unique,
    wait_until,
)
from tests.fake_upstream import ThreadedFakeUpstream, expected_sys_tag, parse_reply
from webapp.core.auto_title import TITLE_PROMPT, TITLE_WRITERS

EN = {"Accept-Language": "en-US,en"}
OTHER_PREFIX = "other18:"
IMPORT_LIMIT = 8192


@pytest.fixture(scope="module")
def other_app(redis_server: RedisServer, upstream: ThreadedFakeUpstream,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    app = _start_app(tmp_path_factory.mktemp("other-app"), {
        "REDIS_URL": redis_server.url, "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_MODEL": "fake-model", "REDIS_PREFIX": OTHER_PREFIX, "MAX_IMPORT_BYTES": str(IMPORT_LIMIT),
        "OPENAI_MODELS": "fake-model, listed-only",
    })
    try:
        yield app
    finally:
        _stop_app(app)


@pytest.fixture
def other_client(other_app: AppServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=other_app.base_url, timeout=30) as client:
        yield client


# ---------------------------------------------------------------- read-only links


def test_a_shared_link_shows_the_conversation_to_anyone_and_nothing_after_revoke(
    make_client: Callable[..., httpx.Client],
) -> None:
    owner = make_client(headers=EN)
    sid = create_session(owner)["id"]
    owner.patch(f"/api/sessions/{sid}", json={"title": "Shared <b>title</b>"})
    secret = unique("shared-question")
    api_turn(owner, sid, f"{secret} **bold** <script>alert(1)</script> [[echo]]")
    assert owner.get(f"/api/sessions/{sid}/share").json() == {"token": None, "url": None}
    # the web UI: the share page creates the link (a plain form)
    assert owner.post(f"/c/{sid}/share").status_code == 303
    page = BeautifulSoup(owner.get(f"/c/{sid}/share").text, "html.parser")
    url = page.select_one("#share-url")["value"]
    token = url.rsplit("/", 1)[1]
    assert len(token) == 43 and owner.post(f"/api/sessions/{sid}/share").json()["token"] == token  # the same link

    with httpx.Client(timeout=30) as stranger:  # no cookie, no identity
        shared = stranger.get(url)
        assert shared.status_code == 200 and "set-cookie" not in shared.headers
        assert "noindex" in shared.headers["x-robots-tag"] and shared.headers["cache-control"] == "no-store"
        doc = BeautifulSoup(shared.text, "html.parser")
        assert doc.select_one('meta[name="robots"]')["content"].startswith("noindex")
        assert doc.select_one("h1").get_text() == "Shared <b>title</b>"
        assert secret in doc.select(".msg--user .msg__body")[-1].get_text()
        assert doc.select_one(".msg--assistant strong").get_text() == "bold"  # the reply's Markdown, rendered
        assert "<script>alert(1)</script>" not in shared.text
        assert not doc.find_all(["form", "script", "textarea", "input"])  # no controls, nothing to run
        # revoked: nothing at all, to anyone
        assert owner.delete(f"/api/sessions/{sid}/share").status_code == 204
        gone = stranger.get(url, headers={"Accept": "text/html"})
        assert gone.status_code == 404 and secret not in gone.text and "Shared" not in gone.text
        assert stranger.get(url.replace(token, "x" * 43)).status_code == 404
        # a new link works again; deleting the conversation revokes it
        url = owner.post(f"/api/sessions/{sid}/share").json()["url"]
        assert stranger.get(url).status_code == 200
        assert owner.delete(f"/api/sessions/{sid}").status_code == 204
        assert stranger.get(url).status_code == 404


# ---------------------------------------------------------------- export and import


def comparable(export: dict[str, Any]) -> dict[str, Any]:
    """An export without what an import renews: ids, the export time; role ids mapped to names."""
    names = {role["id"]: role["name"] for role in export["roles"]}
    return {
        "roles": [{k: v for k, v in role.items() if k != "id"} for role in export["roles"]],
        "conversations": [
            {**{k: v for k, v in conv.items() if k not in ("id", "role", "messages")},
             "role": names.get(conv["role"], conv["role"]),
             "messages": [{**m, "role_id": names.get(m["role_id"], m["role_id"])} for m in conv["messages"]]}
            for conv in export["conversations"]
        ],
    }


def test_export_then_import_gives_the_same_conversations(make_client: Callable[..., httpx.Client]) -> None:
    alice, bob = make_client(headers=EN), make_client(headers=EN)
    role = alice.post("/api/roles", json={"name": "Poet", "system_prompt": "Answer in verse.", "temperature": 1.2})
    role = role.json()
    first = create_session(alice, role=role["id"])["id"]
    alice.patch(f"/api/sessions/{first}", json={"title": "Verses 诗", "model": "fake-model-large"})
    api_turn(alice, first, "Write about the sea [[echo]] 大海")
    second = create_session(alice)["id"]
    api_turn(alice, second, unique("plain"))
    api_turn(alice, second, "a second message")

    markdown = alice.get(f"/api/sessions/{first}/export.md")
    assert markdown.headers["content-disposition"].startswith("attachment;")
    assert markdown.text.startswith("# Verses 诗\n") and "**Poet · fake-model-large**" in markdown.text
    assert "Write about the sea  大海" in markdown.text
    one = alice.get(f"/api/sessions/{first}/export.json").json()
    assert one["title"] == "Verses 诗" and [m["role"] for m in one["messages"]] == ["assistant", "user", "assistant"]

    exported = alice.get("/api/export")
    assert exported.headers["content-disposition"] == 'attachment; filename="chat-export.json"'
    data = exported.json()
    assert [c["id"] for c in data["conversations"]] == [first, second]
    imported = bob.post("/api/import", content=exported.content, headers={"content-type": "application/json"})
    assert imported.status_code == 201, imported.text
    assert imported.json()["conversations"] == 2 and imported.json()["roles"] == 1
    assert not {first, second} & set(imported.json()["ids"])  # new ids
    again = bob.get("/api/export").json()
    assert comparable(again) == comparable(data)
    # what was imported works like any conversation: the imported role's prompt reaches the model
    new_first = imported.json()["ids"][0]
    turn = api_turn(bob, new_first, unique("after import"))
    assert parse_reply(turn.text)["sys"] == expected_sys_tag("Answer in verse.")
    # and Alice's data is untouched
    assert [c["id"] for c in alice.get("/api/export").json()["conversations"]] == [first, second]
    # the web UI's upload form (multipart) does the same
    carol = make_client(headers=EN)
    carol.get("/settings")  # a page first: its forms carry the identity's token
    upload = carol.post("/settings/import", files={"file": ("chat-export.json", exported.content, "application/json")})
    assert upload.status_code == 303 and upload.headers["location"] == "/settings?imported=2"
    assert "Imported 2 conversations" in carol.get(upload.headers["location"]).text
    assert len(carol.get("/api/sessions").json()["items"]) == 2


def test_import_is_validated_and_respects_limits(make_client: Callable[..., httpx.Client],
                                                 other_client: httpx.Client) -> None:
    client = make_client(headers=EN)
    for body in (b"not json", b"{}", b'{"format": "chat-export", "version": 2}',
                 b'{"format": "chat-export", "version": 1, "conversations": [{"messages": []}]}',
                 b'{"format": "chat-export", "version": 1, "conversations": [{"created_at": "2025-01-01T00:00:00Z",'
                 b' "updated_at": "2025-01-01T00:00:00Z", "messages": [{"role": "system", "content": "x"}]}]}'):
        response = client.post("/api/import", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, (body, response.status_code, response.text)
        assert "Invalid import file" in response.json()["detail"]
    roles = [{"id": f"r{n}", "name": f"role {n}", "system_prompt": "x"} for n in range(51)]
    too_many = {"format": "chat-export", "version": 1, "roles": roles, "conversations": []}
    refused = client.post("/api/import", json=too_many)
    assert refused.status_code == 409 and "nothing was imported" in refused.json()["detail"]
    assert len(client.get("/api/roles").json()) == 3
    # larger than MAX_IMPORT_BYTES (the other app: 8 KB) is refused before it is read
    big = {"format": "chat-export", "version": 1, "conversations": [], "padding": "x" * IMPORT_LIMIT}
    assert other_client.post("/api/import", json=big).status_code == 413
    fits = {"format": "chat-export", "version": 1, "conversations": [], "padding": "x" * 100}
    assert other_client.post("/api/import", json=fits).status_code == 201


# ---------------------------------------------------------------- generated titles


def test_a_title_is_generated_after_the_first_exchange_and_a_rename_always_wins(other_client: httpx.Client) -> None:
    sid = create_session(other_client)["id"]
    question = unique("title me")
    api_turn(other_client, sid, question)

    def title() -> str:
        return other_client.get(f"/api/sessions/{sid}").json()["title"]

    # the fake model answers the title request with its header: the title prompt is its system prompt
    generated = wait_until(lambda: title() if title().startswith("ctx=") else None, timeout=10)
    assert f"sys={expected_sys_tag(TITLE_PROMPT)}" in generated
    api_turn(other_client, sid, "a second message")
    time.sleep(0.5)
    assert title() == generated  # only after the first exchange

    # renamed while the title request is still on its way: the rename stays
    slow = create_session(other_client)["id"]
    api_turn(other_client, slow, f"{unique('slow')} [[ttft:1500]]")  # the title request is slow too
    other_client.patch(f"/api/sessions/{slow}", json={"title": "Mine"})
    time.sleep(2.5)
    assert other_client.get(f"/api/sessions/{slow}").json()["title"] == "Mine"
    # a conversation created with a title keeps it
    named = other_client.post("/api/sessions", json={"title": "Named first"}).json()["id"]
    api_turn(other_client, named, unique("hello"))
    time.sleep(0.5)
    assert other_client.get(f"/api/sessions/{named}").json()["title"] == "Named first"


def test_a_burst_of_first_exchanges_asks_for_at_most_title_writers_titles_at_once_and_titles_them_all(
    other_client: httpx.Client, upstream: ThreadedFakeUpstream,
) -> None:
    burst = TITLE_WRITERS + 4
    marker = unique("burst")
    sids = [create_session(other_client)["id"] for _ in range(burst)]
    for number, sid in enumerate(sids):  # the turns run on the server: nobody needs to read them
        # the title requests are slow (their question carries the directive), so they pile up: the twelve
        # posts take far less than one title call, even on a slow machine
        assert post_turn(other_client, sid, f"{marker} {number} [[ttft:2500]] [[tokens:2]]").status_code == 202

    def generated_titles() -> list[str] | None:
        found = [other_client.get(f"/api/sessions/{sid}").json()["title"] for sid in sids]
        return found if all(title.startswith("ctx=") for title in found) else None

    done = wait_until(generated_titles, timeout=30, interval=0.2)
    assert all(f"sys={expected_sys_tag(TITLE_PROMPT)}" in title for title in done)
    asked = [r for r in upstream.chat_requests(marker) if r["messages"][0]["content"] == TITLE_PROMPT]
    assert len(asked) == burst  # each conversation's title asked for once
    # the replies ended together: as many title calls as writers at once, the rest waited their turn
    assert max(r["concurrent"] for r in asked) == TITLE_WRITERS
    # the last four were asked only as the first titles were answered
    first, last = sorted(r["received_at"] for r in asked)[::burst - 1]
    assert last - first >= 2.0


def test_without_auto_title_the_first_message_is_the_title(client: httpx.Client) -> None:
    sid = create_session(client)["id"]
    api_turn(client, sid, "  What is   the capital of France?  ")
    time.sleep(0.3)
    assert client.get(f"/api/sessions/{sid}").json()["title"] == "What is the capital of France?"


# ---------------------------------------------------------------- REDIS_PREFIX


def test_two_apps_with_different_prefixes_on_one_redis_see_nothing_of_each_other(
    make_client: Callable[..., httpx.Client], other_app: AppServer, redis_client: redis.Redis,
) -> None:
    client = make_client()
    marker = unique("prefixed")
    sid = create_session(client)["id"]
    api_turn(client, sid, marker)
    cookie = client.cookies["chat_uid"]
    # the same identity cookie (both apps share the test SECRET_KEY) on the other app
    with httpx.Client(base_url=other_app.base_url, cookies={"chat_uid": cookie}, timeout=30) as same_user:
        assert same_user.get(f"/api/sessions/{sid}").status_code == 404
        assert same_user.get("/api/sessions").json()["items"] == []
        assert same_user.get("/api/sessions", params={"q": marker}).json()["items"] == []
        theirs = create_session(same_user)["id"]
        api_turn(same_user, theirs, unique("other side"))
        assert client.get(f"/api/sessions/{theirs}").status_code == 404
    assert [i["id"] for i in client.get("/api/sessions").json()["items"]] == [sid]
    uid = cookie.rpartition(".")[0]
    assert all(key.startswith(OTHER_PREFIX) for key in all_keys(redis_client, f"*{{{uid}}}*")
               if theirs in key)
    assert not [key for key in all_keys(redis_client, f"{OTHER_PREFIX}*") if sid in key]
    assert messages_of(client, sid)["items"][1]["content"] == marker
