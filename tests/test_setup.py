"""The README's test command sets everything up by itself, in a new empty virtual environment.

A missing install step (a package the app imports but .ci/run does not install) would
pass on every developer machine that has it already, and fail a user's first try.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SKIP_ON_COPY = shutil.ignore_patterns(".git", ".venv", "data", "test-artifacts", "__pycache__", ".pytest_cache")


@pytest.mark.fresh_setup
def test_ci_run_installs_everything_into_a_new_empty_virtualenv(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT, checkout, ignore=SKIP_ON_COPY)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    empty = subprocess.run([venv / "bin" / "python", "-c", "import fastapi"], capture_output=True)
    assert empty.returncode != 0, "the new virtual environment is expected to start empty"

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}",
               TEST_ARTIFACTS=str(tmp_path / "artifacts"))
    result = subprocess.run(["bash", ".ci/run", "--collect-only", "-p", "no:cacheprovider"], cwd=checkout,
                            env=env, capture_output=True, text=True, timeout=900)
    # (pip's notes about package index locations it skips would push the error out of view)
    output = "\n".join(line for line in (result.stdout + result.stderr).splitlines()
                        if "is ignored: it is neither a file nor a directory" not in line)
    assert result.returncode == 0, output[-4000:]
    assert f"python: {venv / 'bin' / 'python'}" in output
    assert "tests collected" in result.stdout, output[-2000:]
    assert "test_api_seed.py::" in result.stdout  # the real-process tests import the app, its conftest too
    assert " error" not in result.stdout.lower(), output[-2000:]
