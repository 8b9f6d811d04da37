"""The README's test command sets everything up by itself, in a new empty virtual environment,
from the locks, and the tests then pass there.

A missing install step (a package the app imports but .ci/run does not install) would
pass on every developer machine that has it already, and fail a user's first try.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT
from tests.unit.test_locks import locked_versions

_SKIPPED_ANYWHERE = shutil.ignore_patterns(".git", ".venv", ".uv", "test-artifacts", "__pycache__", ".pytest_cache")


def skip_on_copy(folder: str, names: list[str]) -> set[str]:
    """What a clean clone would not have: caches anywhere, and the app's own data directory at the top
    (not webapp/core/data, which the app ships)."""
    skipped = set(_SKIPPED_ANYWHERE(folder, names))
    if Path(folder) == REPO_ROOT and "data" in names:
        skipped.add("data")
    return skipped


# Real tests, one of each kind the suite relies on, not only collection: collection passed on the
# day pytest 9.2 broke schemathesis' plugin and the suite failed (issue 30).
FRESH_RUN = (
    "tests/unit",  # the in-process tier, the lock check among it
    "tests/test_openapi_fuzz.py",  # schemathesis' pytest plugin
    "tests/test_ui_browser.py::test_three_messages_stream_and_text_grows_before_the_end",  # playwright
)


@pytest.mark.fresh_setup
def test_ci_run_installs_the_locks_into_a_new_empty_virtualenv_and_the_tests_pass(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT, checkout, ignore=skip_on_copy)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    empty = subprocess.run([venv / "bin" / "python", "-c", "import fastapi"], capture_output=True)
    assert empty.returncode != 0, "the new virtual environment is expected to start empty"

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "TEST_REDIS")}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}",
               TEST_ARTIFACTS=str(tmp_path / "artifacts"))
    report = tmp_path / "report.xml"
    result = subprocess.run(["bash", ".ci/run", *FRESH_RUN, "-p", "no:cacheprovider", f"--junitxml={report}"],
                            cwd=checkout, env=env, capture_output=True, text=True, timeout=900)
    # (pip's notes about package index locations it skips would push the error out of view)
    output = "\n".join(line for line in (result.stdout + result.stderr).splitlines()
                        if "is ignored: it is neither a file nor a directory" not in line)
    assert result.returncode == 0, output[-4000:]
    assert f"python: {venv / 'bin' / 'python'}" in output

    # exactly the locked versions went in, and nothing the locks do not name
    frozen = subprocess.run([venv / "bin" / "python", "-m", "pip", "freeze", "--all"],
                            capture_output=True, text=True, check=True).stdout
    installed = {canonicalize_name(name): version for name, _, version in
                 (line.partition("==") for line in frozen.splitlines() if "==" in line)}
    pins = locked_versions(checkout / "requirements.txt") | locked_versions(checkout / "tests/requirements.txt")
    for name, versions in pins.items():
        if name in installed:
            assert installed[name] in versions, f"{name} {installed[name]} installed, the lock says {versions}"
    assert {"fastapi", "pytest", "schemathesis", "playwright"} <= installed.keys()
    assert installed.keys() - pins.keys() <= {"pip", "setuptools", "wheel"}, installed.keys() - pins.keys()

    cases = ElementTree.parse(report).getroot().iter("testcase")
    outcomes = {f"{case.get('classname')}.{case.get('name')}": [child.tag for child in case] for case in cases}
    assert len(outcomes) > 100, "the in-process tier is expected to run in full"
    for plugin_test in ("test_openapi_fuzz.test_the_json_api_never_answers_5xx",
                        "test_ui_browser.test_three_messages_stream_and_text_grows_before_the_end"):
        ran = [outcome for name, outcome in outcomes.items() if name.endswith(plugin_test)]
        assert ran == [[]], f"{plugin_test}: {ran} (expected one pass, not skipped)\n{output[-2000:]}"
    failed = [name for name, outcome in outcomes.items() if {"failure", "error"} & set(outcome)]
    assert not failed, output[-2000:]  # (an expected failure, xfail, is reported as skipped: it counts as run)
