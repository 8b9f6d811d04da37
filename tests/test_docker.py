"""The Docker image builds, starts as a user would run it, and answers /readyz.

Needs a usable Docker (the daemon reachable) and the network to pull `python:3.11-slim` and
the requirements: without them the test is skipped, saying which was missing, never failed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import REPO_ROOT

NETWORK_TROUBLE = re.compile(
    r"(failed to (resolve|fetch|do request|authorize)|pull access denied|TLS handshake timeout|i/o timeout|"
    r"Temporary failure in name resolution|Failed to establish a new connection|Network is unreachable|"
    r"connection refused|no such host|toomanyrequests|ProxyError|ReadTimeoutError)",
    re.IGNORECASE,
)


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def base_image() -> str:
    line = next(line for line in (REPO_ROOT / "Dockerfile").read_text().splitlines() if line.startswith("FROM "))
    return line.split()[1]


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed")
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=20)
    except subprocess.TimeoutExpired:
        pytest.skip("docker info did not answer within 20 s")
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"Docker is not usable here: {reason}")
    pulled = docker("pull", base_image(), timeout=600)
    if pulled.returncode != 0:
        pytest.skip(f"could not pull the base image {base_image()}: {pulled.stderr.strip()[-300:]}")
    tag = f"chat-webapp-test:{uuid.uuid4().hex[:8]}"
    built = docker("build", "--pull=false", "-t", tag, str(REPO_ROOT), timeout=1200)
    if built.returncode != 0:
        log = built.stdout + built.stderr
        if NETWORK_TROUBLE.search(log):  # e.g. pip cannot reach the package index
            pytest.skip(f"the image build could not reach the network: {NETWORK_TROUBLE.search(log).group(0)}")
        pytest.fail(f"docker build failed:\n{log[-4000:]}")
    try:
        yield tag
    finally:
        docker("image", "rm", "-f", tag)


def test_the_image_runs_as_a_user_and_answers_readyz(image: str) -> None:
    name = f"chat-webapp-test-{uuid.uuid4().hex[:8]}"
    started = docker("run", "-d", "--name", name, "-p", "127.0.0.1::8000", image)
    assert started.returncode == 0, started.stderr
    try:
        port = docker("port", name, "8000/tcp").stdout.strip().splitlines()[0].rsplit(":", 1)[1]
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        output = docker("logs", name)
        logs = output.stdout + output.stderr
        assert ready is not None and ready.status_code == 200, logs[-3000:]
        assert ready.json() == {"ready": True, "checks": {"redis": True}}
        assert docker("exec", name, "id", "-u").stdout.strip() != "0", "the app runs as root"
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200  # the empty chat
        assert "embedded redis-server" in logs  # no REDIS_URL: the image starts its own, in /data
    finally:
        docker("rm", "-f", name)


def test_dockerfile_and_compose_use_the_readmes_commands_and_a_durable_redis() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "RUN pip install -r requirements.txt" in dockerfile
    assert 'CMD ["python", "-m", "webapp"]' in dockerfile
    assert re.search(r"^USER (?!root)\S+", dockerfile, re.MULTILINE)
    assert "HEALTHCHECK" in dockerfile and "/readyz" in dockerfile
    compose = (REPO_ROOT / "compose.yaml").read_text()
    assert "redis://redis:6379" in compose
    for option in ('"--appendonly", "yes"', '"--maxmemory-policy", "noeviction"', "redis-data:/data"):
        assert option in compose
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".git" in ignored and "data" in ignored
