"""Running the app as a user and an operator would: embedded Redis, settings, probes, metrics, workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    REPO_ROOT,
    TEST_SECRET_KEY,
    AppServer,
    _start_app,
    _stop_app,
    create_session,
    free_port,
    messages_of,
    pid_alive,
    post_turn,
    read_sse,
    start_chat,
    stream_turn,
    unique,
    wait_until,
)


def test_health_and_readiness_probes(client: httpx.Client, upstream) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    asked_before = len([r for r in upstream.server.requests if r["path"] == "/v1/models"])
    for _ in range(5):  # probes are unauthenticated: they must not each call the model's API
        ready = client.get("/readyz?upstream=1")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "checks": {"redis": True, "upstream": True}}
    asked = len([r for r in upstream.server.requests if r["path"] == "/v1/models"]) - asked_before
    assert asked <= 1
    assert client.get("/readyz").json() == {"ready": True, "checks": {"redis": True}}


def test_metrics_count_turns_requests_and_latency(client: httpx.Client) -> None:
    chat = start_chat(client)
    turn = stream_turn(client, chat, unique("metrics"))
    assert turn.ended
    text = client.get("/metrics").text
    assert 'chat_turns_total{status="complete"}' in text
    assert "chat_time_to_first_token_seconds_bucket" in text
    assert "chat_turn_duration_seconds_count" in text
    assert 'chat_http_requests_total{method="POST",status="200"}' in text
    assert "chat_active_streams" in text
    assert unique("never") not in text  # no message contents


def test_metrics_token_protects_the_endpoint(redis_server, tmp_path: Path) -> None:
    app = _start_app(tmp_path, {"REDIS_URL": redis_server.url, "OPENAI_API_KEY": "", "METRICS_TOKEN": "s3cret"})
    try:
        assert httpx.get(f"{app.base_url}/metrics").status_code == 401
        ok = httpx.get(f"{app.base_url}/metrics", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and "chat_turns" in ok.text
    finally:
        _stop_app(app)


def test_invalid_setting_fails_at_start_with_one_line_naming_it(tmp_path: Path) -> None:
    env = {**os.environ, "PORT": "99999", "DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "webapp"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "PORT" in lines[0]


def test_the_app_listens_on_several_sockets_and_a_second_app_on_its_port_is_refused(
    redis_server, tmp_path: Path
) -> None:
    """One worker listens on LISTENERS sockets of one port (webapp/listeners.py: a busy app accepts a
    burst of new connections one per socket per turn of its loop); another app started on the port
    stops with one clear line instead of sharing it."""
    from webapp.web.listeners import LISTENERS, spreads_connections

    (tmp_path / "first").mkdir()
    app = _start_app(tmp_path / "first", {"REDIS_URL": redis_server.url, "OPENAI_API_KEY": ""})
    try:
        port = int(app.base_url.rsplit(":", 1)[1])
        listening = [line for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                     if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"]
        assert len(listening) == (LISTENERS if spreads_connections() else 1)
        assert f"Uvicorn running on http://127.0.0.1:{port}" in app.log()  # (once started, as uvicorn says it)
        env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "DATA_DIR": str(tmp_path / "second"),
               "REDIS_URL": redis_server.url, "OPENAI_API_KEY": "", "SECRET_KEY": "s" * 40}
        second = subprocess.run([sys.executable, "-m", "webapp"], cwd=REPO_ROOT, env=env, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 3
        assert f"cannot listen on 127.0.0.1:{port}" in second.stderr and "in use" in second.stderr
        assert httpx.get(f"{app.base_url}/healthz", timeout=5).status_code == 200  # the first one serves on
    finally:
        _stop_app(app)


def _start_embedded(data_dir: Path) -> AppServer:
    """`python -m webapp` with no REDIS_URL: the app starts its own redis-server."""
    env_without_redis = {"REDIS_URL": "", "OPENAI_API_KEY": ""}
    return _start_app(data_dir, env_without_redis)


def test_embedded_redis_keeps_conversations_across_restarts(tmp_path: Path) -> None:
    app = _start_embedded(tmp_path)
    socket_path = tmp_path / "redis" / "redis.sock"
    try:
        assert socket_path.exists()
        with httpx.Client(base_url=app.base_url, timeout=30) as client:
            chat = start_chat(client)
            turn = stream_turn(client, chat, "remember me")
            assert turn.ended and "演示" in turn.text
            cookies = dict(client.cookies)
    finally:
        _stop_app(app)
    # stopped with the app, its AOF on disk
    assert not socket_path.exists() or not _redis_running(tmp_path)
    assert (tmp_path / "redis" / "appendonlydir").exists() or (tmp_path / "redis" / "appendonly.aof").exists()

    app = _start_embedded(tmp_path)
    try:
        with httpx.Client(base_url=app.base_url, timeout=30, cookies=cookies) as client:
            history = client.get("/chat/history", params={"session_id": chat["session_id"]}).json()
        assert [m["role"] for m in history["messages"]] == ["assistant", "user", "assistant"]
        assert history["messages"][1]["content"] == "remember me"
    finally:
        _stop_app(app)


def _redis_running(data_dir: Path) -> bool:
    pid_file = data_dir / "redis" / "redis.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text()), 0)
        return True
    except (ProcessLookupError, ValueError):
        return False


def test_the_embedded_redis_stops_with_its_app_however_the_app_dies(tmp_path: Path) -> None:
    """SIGKILL (a crash, the OOM killer) gives the app no chance to stop its redis-server: the kernel
    sends it SIGTERM (issue 34). Five kills, no orphan; each next start finds its data."""
    orphans = []
    for attempt in range(5):
        app = _start_embedded(tmp_path)
        try:
            with httpx.Client(base_url=app.base_url, timeout=30) as client:
                assert stream_turn(client, start_chat(client), f"kill {attempt}").ended
            pid = int((tmp_path / "redis" / "redis.pid").read_text())
        finally:
            app.process.send_signal(signal.SIGKILL)
            app.process.wait()
        try:
            wait_until(lambda: not pid_alive(pid), timeout=5)
        except AssertionError:
            orphans.append(pid)
            os.kill(pid, signal.SIGKILL)
    assert orphans == []


def test_a_second_app_on_the_same_data_directory_refuses_in_one_line_and_touches_nothing(tmp_path: Path) -> None:
    app = _start_embedded(tmp_path)
    try:
        redis_pid = (tmp_path / "redis" / "redis.pid").read_text()
        files = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*"))
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "REDIS_"))},
               "DATA_DIR": str(tmp_path), "PORT": str(free_port()), "HOST": "127.0.0.1", "OPENAI_API_KEY": "",
               "SECRET_KEY": TEST_SECRET_KEY}  # as the first one has it
        started = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "webapp"], cwd=REPO_ROOT, env=env, capture_output=True,
                                text=True, timeout=60)

        assert second.returncode == 2 and time.monotonic() - started < 10
        lines = [line for line in second.stderr.splitlines() if line.strip() and " WARNING " not in line]
        assert len(lines) == 1, second.stderr
        assert str(tmp_path) in lines[0] and "DATA_DIR" in lines[0] and str(app.process.pid) in lines[0]
        assert (tmp_path / "redis" / "redis.pid").read_text() == redis_pid and pid_alive(int(redis_pid))
        assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == files
        with httpx.Client(base_url=app.base_url, timeout=30) as client:  # the first app serves on
            assert stream_turn(client, start_chat(client), "still here").ended
        assert "left by an earlier run" not in app.log() and "restarting" not in app.log()
    finally:
        _stop_app(app)


@pytest.fixture(scope="module")
def two_workers(redis_server, upstream, tmp_path_factory: pytest.TempPathFactory):
    app = _start_app(
        tmp_path_factory.mktemp("workers"),
        {
            "REDIS_URL": redis_server.url,
            "OPENAI_API_KEY": "test-key",
            "OPENAI_BASE_URL": upstream.base_url,
            "WEB_CONCURRENCY": "2",
        },
    )
    yield app
    _stop_app(app)


def test_a_turn_can_be_followed_and_cancelled_from_any_worker(two_workers: AppServer) -> None:
    with httpx.Client(base_url=two_workers.base_url, timeout=30) as client:
        session = create_session(client)
        text = unique("workers") + " [[tokens:80]] [[delay:25]]"
        started = post_turn(client, session["id"], text).json()
        # fresh connections land on either worker; each must see the whole reply
        replies = set()
        for _ in range(4):
            with httpx.Client(base_url=two_workers.base_url, timeout=30, cookies=client.cookies) as other:
                with other.stream("GET", started["events_url"]) as response:
                    events = read_sse(response)
            assert events[-1]["data"]["type"] == "end"
            replies.add("".join(e["data"].get("content", "") for e in events if e["data"]["type"] == "chunk"))
        assert len(replies) == 1 and replies.pop().startswith("ctx=2")

        started = post_turn(client, session["id"], unique("stop") + " [[tokens:200]] [[delay:30]]").json()
        time.sleep(0.3)
        for _ in range(3):  # whichever worker answers, the turn stops
            with httpx.Client(base_url=two_workers.base_url, timeout=30, cookies=client.cookies) as other:
                assert other.post(f"/api/turns/{started['turn_id']}/cancel").status_code == 202

        def saved() -> dict | None:
            items = messages_of(client, session["id"])["items"]
            return items[-1] if items[-1]["role"] == "assistant" and len(items) == 5 else None

        last = wait_until(saved, timeout=10)
        assert last["status"] == "interrupted"
        assert last["content"].startswith("ctx=4") and " t190" not in last["content"]


def test_unknown_page_is_an_html_page_for_browsers_and_json_for_api_clients(client: httpx.Client) -> None:
    page = client.get("/no-such-page", headers={"Accept": "text/html", "Accept-Language": "en"})
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "Page not found" in page.text and 'href="/"' in page.text
    api = client.get("/api/no-such-thing", headers={"Accept-Language": "en"})
    assert api.status_code == 404 and api.json() == {"detail": "Page not found"}


def test_resuming_from_any_event_on_any_worker_gives_the_rest_exactly_once(two_workers: AppServer) -> None:
    """Stream entries batch several chunks; a resume inside one must still start at the right chunk."""
    with httpx.Client(base_url=two_workers.base_url, timeout=30) as client:
        session = create_session(client)
        started = post_turn(client, session["id"], unique("resume") + " [[tokens:60]] [[delay:15]]").json()
        with client.stream("GET", started["events_url"]) as response:
            full = read_sse(response)
        chunks = [e for e in full if e["data"]["type"] == "chunk"]
        whole = "".join(e["data"]["content"] for e in chunks)
        assert len(chunks) >= 3
        for cut in (chunks[0], chunks[len(chunks) // 2], chunks[-2]):
            seen = "".join(e["data"]["content"] for e in chunks[: chunks.index(cut) + 1])
            for _ in range(2):  # fresh connections: either worker
                with httpx.Client(base_url=two_workers.base_url, timeout=30, cookies=client.cookies) as other:
                    with other.stream("GET", started["events_url"], headers={"Last-Event-ID": cut["id"]}) as resp:
                        rest = read_sse(resp)
                assert rest[-1]["data"]["type"] == "end"
                assert seen + "".join(e["data"].get("content", "") for e in rest if e["data"]["type"] == "chunk") == whole


def test_stopping_the_server_mid_reply_keeps_what_was_written(redis_server, upstream, tmp_path: Path) -> None:
    settings = {"REDIS_URL": redis_server.url, "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": upstream.base_url}
    app = _start_app(tmp_path, settings)
    with httpx.Client(base_url=app.base_url, timeout=30) as client:
        session = create_session(client)
        started = post_turn(client, session["id"], unique("shutdown") + " [[tokens:400]] [[delay:30]]").json()
        with client.stream("GET", started["events_url"]) as response:
            for line in response.iter_lines():
                if line.startswith("data:") and "ctx=" in line:
                    break
            stopping = time.monotonic()
            app.process.send_signal(signal.SIGTERM)
            app.process.wait(timeout=15)
        cookies = dict(client.cookies)
    assert time.monotonic() - stopping < 8, "open streams must not hold the shutdown"
    app = _start_app(tmp_path, settings)
    try:
        with httpx.Client(base_url=app.base_url, timeout=30, cookies=cookies) as client:
            items = messages_of(client, session["id"])["items"]
        assert [m["role"] for m in items] == ["assistant", "user", "assistant"]
        assert items[-1]["status"] == "interrupted" and items[-1]["content"].startswith("ctx=2")
    finally:
        _stop_app(app)


def test_a_reply_longer_than_the_turn_timeout_is_stopped_and_kept(redis_server, upstream, tmp_path: Path) -> None:
    app = _start_app(tmp_path, {
        "REDIS_URL": redis_server.url, "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": upstream.base_url,
        "TURN_TIMEOUT_SECONDS": "10",
    })
    try:
        with httpx.Client(base_url=app.base_url, timeout=30, headers={"Accept-Language": "en"}) as client:
            session = create_session(client)
            started = post_turn(client, session["id"], unique("long") + " [[tokens:2000]] [[delay:10]]").json()
            with client.stream("GET", started["events_url"]) as response:
                events = read_sse(response)
            assert events[-1]["data"] == {"type": "error", "content": "The reply took too long and was stopped (what it wrote is kept)"}
            last = messages_of(client, session["id"])["items"][-1]
            assert last["role"] == "assistant" and last["status"] == "error" and last["content"].startswith("ctx=2")
            # the conversation is free again
            assert post_turn(client, session["id"], "next").status_code == 202
    finally:
        _stop_app(app)


def test_logs_have_a_line_per_request_and_per_turn_but_no_message_text(app_server: AppServer, client: httpx.Client) -> None:
    secret = unique("private-words")
    chat = start_chat(client)
    assert stream_turn(client, chat, secret).ended
    log = wait_until(lambda: app_server.log() if "path=/chat/stream status=200" in app_server.log() else None)
    assert "method=GET path=/chat/stream status=200" in log
    assert "status=complete" in log and "ttft_ms=" in log and "total_ms=" in log
    assert secret not in log


def test_an_empty_secret_key_file_is_refused_not_used(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env.update({"DATA_DIR": str(tmp_path), "REDIS_URL": "unix:///nowhere.sock"})
    result = subprocess.run(
        [sys.executable, "-m", "webapp"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("Invalid value for SECRET_KEY")


def test_a_generated_secret_key_is_kept_across_starts(tmp_path: Path) -> None:
    from webapp.config import _secret_from_data_dir

    first = _secret_from_data_dir(tmp_path)
    assert len(first) >= 32 and _secret_from_data_dir(tmp_path) == first
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]


def _healthz_twice(base_url: str, idle_seconds: float) -> tuple[int, int]:
    """Two requests on one HTTP/1.1 connection, `idle_seconds` apart: their statuses (0: the app had
    closed the connection meanwhile)."""
    import http.client
    from urllib.parse import urlsplit

    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        statuses = []
        for pause in (0, idle_seconds):
            time.sleep(pause)
            try:
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                response.read()
                statuses.append(response.status)
            except ConnectionError:  # (RemoteDisconnected, a reset, a broken pipe)
                statuses.append(0)
        return statuses[0], statuses[1]
    finally:
        connection.close()


def test_an_idle_connection_stays_open_longer_than_a_load_balancers_idle_timeout(
    app_server: AppServer, redis_server, tmp_path: Path,
) -> None:
    """KEEP_ALIVE_SECONDS (75 by default, uvicorn's own is 5): a proxy or a browser that reuses its
    connection after a pause (a reply that took a while) finds it open, rather than racing the app's
    close (a reset, a 502 behind a load balancer). A short setting does close an idle one."""
    assert _healthz_twice(app_server.base_url, 6) == (200, 200)  # past uvicorn's 5 s
    app = _start_app(tmp_path, {"REDIS_URL": redis_server.url, "OPENAI_API_KEY": "", "KEEP_ALIVE_SECONDS": "1"})
    try:
        assert _healthz_twice(app.base_url, 2.5) == (200, 0)
    finally:
        _stop_app(app)
