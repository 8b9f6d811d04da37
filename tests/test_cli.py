"""`python -m webapp` as a user types it: --help, --version, and a misspelt name in .env."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import REPO_ROOT, RedisServer, free_port
from webapp import __version__
from webapp.base.processes import stop_process
from webapp.config import Settings


def run_webapp(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "REDIS_"))}
    environment.update(PYTHONPATH=str(REPO_ROOT), DATA_DIR=str(cwd / "data"), **(env or {}))
    return subprocess.run([sys.executable, "-m", "webapp", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=60)


def test_help_lists_every_setting_with_its_default_and_starts_nothing(tmp_path: Path) -> None:
    # an invalid value would stop a start; --help still answers, and creates nothing
    result = run_webapp("--help", cwd=tmp_path, env={"PORT": "not-a-number"})

    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ") and line.strip()}
    for name in Settings.model_fields:
        assert name.upper() in lines, f"{name.upper()} missing from --help"
    assert lines["PORT"].split()[1:3] == ["8000", "1..65535"]
    assert lines["OPENAI_MODEL"].split()[1] == "gpt-4o-mini"
    assert lines["OPENAI_API_KEY"].split()[1] == "(unset)"
    assert lines["LOG_LEVEL"].split()[1:3] == ["info", "critical|error|warning|info|debug"]
    assert lines["METRICS_ENABLED"].split()[1] == "true"
    assert "create-user" in result.stdout
    assert not (tmp_path / "data").exists(), "--help generated a key or started Redis"


def test_version_prints_the_version_and_exits(tmp_path: Path) -> None:
    result = run_webapp("--version", cwd=tmp_path)

    assert result.returncode == 0
    assert result.stdout.strip() == f"python -m webapp {__version__}"
    assert not (tmp_path / "data").exists()


def test_misspelt_settings_in_env_file_are_named_with_the_closest_known_one(
    tmp_path: Path, redis_server: RedisServer,
) -> None:
    (tmp_path / ".env").write_text(
        "OPENAI_APIKEY=sk-typo\n"        # close to OPENAI_API_KEY: the demo model would be used silently
        "PROT=9000\n"                    # close to PORT
        "REDIS_PASSWORD=secret\n"        # our REDIS_ family, but no such setting
        "log_level=warning\n"            # a real one, in lower case: fine
        "POSTGRES_PASSWORD=other-app\n"  # another tool's, in a shared .env: left alone
        "COMPOSE_PROJECT_NAME=chat\n"
    )
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "REDIS_"))}
    environment.update(PYTHONPATH=str(REPO_ROOT), DATA_DIR=str(tmp_path / "data"), HOST="127.0.0.1",
                       PORT=str(port), REDIS_URL=redis_server.url, PYTHONUNBUFFERED="1")
    log_path = tmp_path / "app.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "webapp"], cwd=tmp_path, env=environment,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
    finally:
        stop_process(process)
    warnings = [line for line in log_path.read_text().splitlines() if "unknown setting" in line]

    assert any("OPENAI_APIKEY" in line and "OPENAI_API_KEY" in line for line in warnings), warnings
    assert any("PROT " in line and "PORT?" in line for line in warnings), warnings
    assert any("REDIS_PASSWORD" in line for line in warnings), warnings
    assert len(warnings) == 3, warnings
    assert "sk-typo" not in log_path.read_text(), "a value from .env (maybe a secret) was logged"
