"""Data written by the first key layout keeps working after an upgrade: the app moves it under
the owner's hash tag once, at start. The data is what the app at dd2a817 wrote when driven
over HTTP (tests/fixtures/redis_layout_v1.json: each key's DUMP and TTL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import KEYS, AppServer, _start_app, _stop_app, iter_sse, post_turn
from tests.test_redis_operations import redis_with

DATA = json.loads((Path(__file__).parent / "fixtures" / "redis_layout_v1.json").read_text())
FACTS: dict[str, Any] = DATA["facts"]
OLD_PATTERNS = ("chat:session:*", "chat:user:*", "chat:turn:*", "chat:message:*", "chat:trash:*", "chat:account:a_*")


def restore_old_layout(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for row in DATA["keys"]:
            client.restore(row["key"], max(0, row["pttl"]), bytes.fromhex(row["dump"]), replace=True)
    finally:
        client.close()


@pytest.mark.single_redis
def test_an_upgrade_moves_the_first_layout_and_everything_still_works(tmp_path: Path) -> None:
    process, url = redis_with(tmp_path)
    restore_old_layout(url)
    check = redis.Redis.from_url(url, decode_responses=True)
    apps: list[AppServer] = []
    try:
        (tmp_path / "anon").mkdir()
        app = _start_app(tmp_path / "anon", {"REDIS_URL": url, "OPENAI_API_KEY": ""})
        apps.append(app)
        assert "moved" in app.log() and "hash-tagged key layout" in app.log()
        assert check.get(KEYS.layout) == "2"
        assert not [key for pattern in OLD_PATTERNS for key in check.keys(pattern)]
        # TTLs survive the move
        seed = FACTS["seed"]
        assert 0 < check.ttl(KEYS.messages(seed["user_id"], seed["session_id"])) <= 7 * 86400

        # the seed API's client: same cookie, same history, and it goes on
        with httpx.Client(base_url=app.base_url, timeout=30, cookies=seed["cookies"]) as client:
            history = client.get("/chat/history", params={"user_id": seed["user_id"], "session_id": seed["session_id"]})
            assert history.status_code == 200
            contents = [m["content"] for m in history.json()["messages"]]
            assert contents[1] == "你好，第一条" and contents[3] == "second message" and len(contents) == 5
            with client.stream("GET", "/chat/stream", params={
                "user_id": seed["user_id"], "session_id": seed["session_id"], "message": "after the upgrade",
            }) as response:
                assert [e.type for e in iter_sse(response)][-1] == "end"

        # the API client: its renamed conversation, the regenerated reply's two versions, and undo
        api = FACTS["api"]
        with httpx.Client(base_url=app.base_url, timeout=30, cookies=api["cookies"]) as client:
            session = client.get(f"/api/sessions/{api['session_id']}").json()
            assert session["title"] == "Tides"
            items = client.get(f"/api/sessions/{api['session_id']}/messages").json()["items"]
            reply = items[-1]
            assert reply["role"] == "assistant" and reply["versions"] == 2 and reply["version"] == 2, reply
            sent = post_turn(client, api["session_id"], "and the moon?")
            assert sent.status_code == 202
            with client.stream("GET", sent.json()["events_url"]) as response:
                assert [e.type for e in iter_sse(response)][-1] == "end"
            uid = api["cookies"]["chat_uid"].split(".", 1)[0]
            assert check.exists(KEYS.trash(uid, api["deleted"]))  # the undo copy moved too
        _stop_app(app)
        apps.clear()

        # the account: its sign-in cookie, its password and its API token
        (tmp_path / "accounts").mkdir()
        app = _start_app(tmp_path / "accounts", {"REDIS_URL": url, "OPENAI_API_KEY": "", "AUTH": "accounts"})
        apps.append(app)
        assert "moved" not in app.log()  # once only
        account = FACTS["account"]
        with httpx.Client(base_url=app.base_url, timeout=30, cookies=account["cookies"]) as client:
            listed = [s["id"] for s in client.get("/api/sessions").json()["items"]]
            assert account["session_id"] in listed
        with httpx.Client(base_url=app.base_url, timeout=30,
                          headers={"Authorization": f"Bearer {account['token']}"}) as client:
            items = client.get(f"/api/sessions/{account['session_id']}/messages").json()["items"]
            assert "alice's note" in [m["content"] for m in items]
        with httpx.Client(base_url=app.base_url, timeout=30) as client:
            signed_in = client.post("/login", data={"username": "alice", "password": "correct horse battery"})
            assert signed_in.status_code == 303 and "chat_signin" in client.cookies
    finally:
        for app in apps:
            _stop_app(app)
        check.close()
        process.terminate()
        process.wait()
