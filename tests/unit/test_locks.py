"""The locks agree with the ranges they were made from (`bash .ci/lock`).

requirements.in and tests/requirements.in are edited by hand; requirements.txt and
tests/requirements.txt are generated from them and pin every package. A package added to a
range file and not locked (or dropped from one and still locked as its direct dependency), a
range the locked version no longer meets, or a pin without hashes fails here, in a second,
instead of on a fresh machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PAIRS = (("requirements.in", "requirements.txt"), ("tests/requirements.in", "tests/requirements.txt"))
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@dataclass
class Locked:
    versions: set[str] = field(default_factory=set)
    hashes: int = 0
    via: set[str] = field(default_factory=set)  # what asked for it: "-r requirements.in", a package


def ranges(path: Path) -> dict[str, Requirement]:
    """The direct dependencies of a range file, by canonical name (options such as -c skipped)."""
    found: dict[str, Requirement] = {}
    for line in path.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def locked(path: Path) -> dict[str, Locked]:
    """Every pinned package of a lock: its version(s) (one per marker), hash count and `via` notes."""
    found: dict[str, Locked] = {}
    current: Locked | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        match = PIN.match(raw)
        if match:
            current = found.setdefault(canonicalize_name(match.group(1)), Locked())
            current.versions.add(match.group(2))
        elif current is not None and line.startswith("--hash="):
            current.hashes += 1
        elif current is not None and line.startswith("# via"):
            current.via.update(part for part in (line[len("# via"):].strip(),) if part)
        elif current is not None and line.startswith("#   "):
            current.via.add(line[1:].strip())
    return found


def locked_versions(path: Path) -> dict[str, set[str]]:
    return {name: entry.versions for name, entry in locked(path).items()}


def problems(range_file: Path, lock_file: Path) -> list[str]:
    """What disagrees between a range file and its lock, each said in a line; empty when they agree."""
    wanted, pinned = ranges(range_file), locked(lock_file)

    def from_range_file(note: str) -> bool:  # uv notes it as `-r <path as given>`
        return note.startswith("-r ") and Path(note[3:]).name == range_file.name

    found: list[str] = []
    if "bash .ci/lock" not in lock_file.read_text()[:300]:
        found.append(f"{lock_file.name} does not say it was made by `bash .ci/lock`")
    for name, requirement in sorted(wanted.items()):
        entry = pinned.get(name)
        if entry is None:
            found.append(f"{name} is in {range_file.name} but not in {lock_file.name}")
            continue
        for version in sorted(entry.versions):
            if not requirement.specifier.contains(Version(version), prereleases=True):
                found.append(f"{name}=={version} in {lock_file.name} is outside {requirement} in {range_file.name}")
        if not any(from_range_file(note) for note in entry.via):
            found.append(f"{lock_file.name} does not note {name} as asked for by {range_file.name}")
    for name, entry in sorted(pinned.items()):
        if entry.hashes == 0:
            found.append(f"{name} in {lock_file.name} has no hash")
        asked_by_others = {note for note in entry.via if not from_range_file(note) and not note.startswith("-c ")}
        if name not in wanted and any(from_range_file(note) for note in entry.via) and not asked_by_others:
            found.append(f"{name} is locked as a direct dependency but is no longer in {range_file.name}")
    return found


@pytest.mark.parametrize(("range_name", "lock_name"), PAIRS)
def test_each_lock_agrees_with_its_range_file(range_name: str, lock_name: str) -> None:
    found = problems(ROOT / range_name, ROOT / lock_name)
    assert found == [], "run `bash .ci/lock` and commit both files:\n  " + "\n  ".join(found)


def test_the_tests_lock_takes_the_apps_versions_of_the_packages_both_use() -> None:
    app, tests = locked(ROOT / "requirements.txt"), locked(ROOT / "tests/requirements.txt")
    differ = {name: (app[name].versions, tests[name].versions) for name in app.keys() & tests.keys()
              if app[name].versions != tests[name].versions}
    assert differ == {}, "tests/requirements.in constrains to ../requirements.txt; run `bash .ci/lock`"
    assert {"redis", "orjson", "aiohttp", "yarl"} <= app.keys() & tests.keys()


def test_a_range_added_without_regenerating_is_caught(tmp_path: Path) -> None:
    range_file, lock_file = tmp_path / "requirements.in", tmp_path / "requirements.txt"
    lock_file.write_text((ROOT / "requirements.txt").read_text())
    original = (ROOT / "requirements.in").read_text()

    range_file.write_text(original + "rich>=13\n")
    assert problems(range_file, lock_file) == ["rich is in requirements.in but not in requirements.txt"]

    range_file.write_text(original.replace("orjson>=3.9,<4", "orjson>=99"))
    assert problems(range_file, lock_file) == [
        f"orjson=={next(iter(locked(lock_file)['orjson'].versions))} in requirements.txt "
        "is outside orjson>=99 in requirements.in"]

    range_file.write_text(re.sub(r"(?m)^nh3.*\n", "", original))
    assert problems(range_file, lock_file) == [
        "nh3 is locked as a direct dependency but is no longer in requirements.in"]


def test_every_locked_package_is_pinned_exactly_with_hashes() -> None:
    for _, lock_name in PAIRS:
        text = (ROOT / lock_name).read_text()
        requirement_lines = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
        assert requirement_lines, lock_name
        loose = [line for line in requirement_lines if not PIN.match(line)]
        assert loose == [], f"{lock_name} has lines that are not exact pins: {loose}"
