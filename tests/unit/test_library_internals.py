"""The library private parts the app relies on are still there, and pinned where they were tested.

A failure here after an upgrade names each changed part (webapp/base/library_internals.py):
update the override, then its range in requirements.in and the lock (`bash .ci/lock`), or for
the standard library the Python of the Dockerfile's image.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from webapp.base.library_internals import OVERRIDES, PYTHON, Override, problems

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements.in"
LOCK = ROOT / "requirements.txt"
DOCKERFILE = ROOT / "Dockerfile"
DISTRIBUTIONS = [override for override in OVERRIDES if override.library != PYTHON]
STANDARD_LIBRARY = [override for override in OVERRIDES if override.library == PYTHON]
COMPATIBLE_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*~=\s*([0-9][0-9.]*)")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def compatible_pins() -> dict[str, str]:
    """Each `name~=version` line of requirements.in, by normalized distribution name."""
    pins: dict[str, str] = {}
    for line in REQUIREMENTS.read_text().splitlines():
        match = COMPATIBLE_PIN.match(line)
        if match:
            pins[normalized(match.group(1))] = match.group(2)
    return pins


def test_every_private_part_the_app_relies_on_is_still_there() -> None:
    found = problems()
    assert found == [], "library internals changed:\n  " + "\n  ".join(found)


@pytest.mark.parametrize("override", DISTRIBUTIONS, ids=lambda override: override.library)
def test_each_override_is_pinned_to_the_release_series_it_was_tested_with(override: Override) -> None:
    pins = compatible_pins()
    pin = pins.get(normalized(override.library))
    assert pin is not None, f"{override.library} has no ~= range in requirements.in ({override.where})"
    # `~=8.1.0` allows 8.1.*: the series is the pin without its last component
    series = pin.rsplit(".", 1)[0]
    assert series == override.tested, (
        f"requirements.in allows {override.library}~={pin} (series {series}.*), "
        f"but {override.where} was tested with {override.tested}.*"
    )
    locked = re.search(rf"(?im)^{re.escape(override.library)}==([0-9][^\s;\\]*)", LOCK.read_text())
    assert locked is not None and locked.group(1).startswith(f"{override.tested}."), (
        f"requirements.txt locks {override.library} at {locked and locked.group(1)}, outside {override.tested}.*")


@pytest.mark.parametrize("override", STANDARD_LIBRARY, ids=lambda override: override.where)
def test_each_standard_library_override_is_tested_with_the_python_the_image_ships(override: Override) -> None:
    image = re.search(r"(?m)^FROM python:(\d+\.\d+)", DOCKERFILE.read_text())
    assert image is not None, "the Dockerfile no longer starts from a python:X.Y image"
    assert image.group(1) == override.tested, (
        f"the Dockerfile ships Python {image.group(1)}, but {override.where} was tested with {override.tested}.*")
