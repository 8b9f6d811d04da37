"""Every test that drives a browser is marked `browser`, so it runs in the browser tier.

The tier of a test is read from its markers only (tests/conftest.py). A browser test left
unmarked would run among the real-process tests: Playwright's sync API keeps its event loop
running in the main thread once started, and every later `asyncio.run` there fails. The test
files are read as source (no app, no browser): a test launches a browser when it asks for a
fixture that does (`browser`, `open_page`, or one of a module's own fixtures built on them),
or uses Playwright itself.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
PLAYWRIGHT = ("sync_playwright", "async_playwright")
SHARED_FIXTURE_FILES = ("conftest.py", "ui_fixtures.py")  # ui_fixtures' fixtures are imported by conftest


@dataclass
class Module:
    path: Path
    fixtures: dict[str, ast.FunctionDef] = field(default_factory=dict)
    tests: list[tuple[ast.FunctionDef, list[ast.expr]]] = field(default_factory=list)  # with their class's decorators
    marks: list[ast.expr] = field(default_factory=list)  # `pytestmark`


def _is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return ast.unparse(target) in ("pytest.fixture", "fixture")


def _fixture_name(function: ast.FunctionDef) -> str:
    for decorator in function.decorator_list:
        if isinstance(decorator, ast.Call) and _is_fixture(decorator):
            for keyword in decorator.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
    return function.name


def read_module(path: Path) -> Module:
    module = Module(path)
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if any(_is_fixture(d) for d in node.decorator_list):
                module.fixtures[_fixture_name(node)] = node  # type: ignore[assignment]
            elif node.name.startswith("test"):
                module.tests.append((node, []))  # type: ignore[arg-type]
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if any(_is_fixture(d) for d in item.decorator_list):
                        module.fixtures[_fixture_name(item)] = item  # type: ignore[assignment]
                    elif item.name.startswith("test"):
                        module.tests.append((item, node.decorator_list))  # type: ignore[arg-type]
        elif isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets
        ):
            value = node.value
            module.marks = list(value.elts) if isinstance(value, (ast.List, ast.Tuple)) else [value]
    return module


def _requests(function: ast.FunctionDef, class_marks: list[ast.expr] | None = None) -> set[str]:
    """The fixtures a function asks for: its parameters and `usefixtures`."""
    names = {arg.arg for arg in function.args.args + function.args.kwonlyargs}
    for decorator in [*function.decorator_list, *(class_marks or [])]:
        if isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "pytest.mark.usefixtures":
            names |= {str(arg.value) for arg in decorator.args if isinstance(arg, ast.Constant)}
    return names


def _uses_playwright(function: ast.FunctionDef) -> bool:
    return any(isinstance(node, ast.Name) and node.id in PLAYWRIGHT or
               isinstance(node, ast.Attribute) and node.attr in PLAYWRIGHT for node in ast.walk(function))


def _marked_browser(marks: list[ast.expr]) -> bool:
    return any(ast.unparse(mark).startswith("pytest.mark.browser") for mark in marks)


def _label(path: Path) -> str:
    return str(path.relative_to(TESTS.parent)) if path.is_relative_to(TESTS.parent) else path.name


def unmarked_browser_tests(test_files: list[Path], shared_files: list[Path]) -> tuple[list[str], list[str]]:
    """(every test that launches a browser, those of them without the `browser` marker), as file::name."""
    shared = [read_module(path) for path in shared_files]
    modules = [read_module(path) for path in test_files]

    def launches(module: Module, name: str, seen: frozenset[str] = frozenset()) -> bool:
        # a module's own fixture wins over a shared one of the same name, as in pytest
        function = module.fixtures.get(name) or next((m.fixtures[name] for m in shared if name in m.fixtures), None)
        if function is None or name in seen:
            return False
        owner = module if name in module.fixtures else next(m for m in shared if name in m.fixtures)
        return _uses_playwright(function) or any(
            launches(owner, requested, seen | {name}) for requested in _requests(function)
        )

    found, unmarked = [], []
    for module in modules:
        for test, class_marks in module.tests:
            if _uses_playwright(test) or any(launches(module, name) for name in _requests(test, class_marks)):
                where = f"{_label(module.path)}::{test.name}"
                found.append(where)
                if not _marked_browser([*module.marks, *class_marks, *test.decorator_list]):
                    unmarked.append(where)
    return found, unmarked


def shared_fixture_files() -> list[Path]:
    return [path for path in TESTS.rglob("*.py") if path.name in SHARED_FIXTURE_FILES]


def test_every_test_that_launches_a_browser_is_marked_browser() -> None:
    test_files = sorted(TESTS.rglob("test_*.py"))
    found, unmarked = unmarked_browser_tests(test_files, shared_fixture_files())
    assert unmarked == [], "mark these `pytest.mark.browser` (pytestmark for a whole file): they launch Chromium"
    # the check sees the browser tests it is there for (it is not passing by finding none)
    files = {name.split("::")[0] for name in found}
    assert {"tests/test_ui_browser.py", "tests/test_xss_browser.py", "tests/test_features_browser.py",
            "tests/test_versions_browser.py"} <= files
    assert "tests/test_accounts.py::test_sign_up_and_chat_in_chromium" in found


def test_a_new_browser_test_without_the_marker_is_caught(tmp_path: Path) -> None:
    new = tmp_path / "test_new_browser.py"
    new.write_text(
        "import pytest\n\n"
        "@pytest.fixture\n"
        "def signed_in_page(open_page):\n    return open_page('/')\n\n"
        "def test_through_a_fixture(signed_in_page):\n    pass\n\n"
        "def test_with_the_browser(browser, app_server):\n    pass\n\n"
        "@pytest.mark.usefixtures('browser')\n"
        "def test_using_it(app_server):\n    pass\n\n"
        "def test_own_playwright():\n"
        "    from playwright.sync_api import sync_playwright\n"
        "    with sync_playwright() as p:\n        pass\n\n"
        "@pytest.mark.browser\n"
        "def test_marked(open_page):\n    pass\n\n"
        "def test_over_http(client):\n    pass\n"
    )
    found, unmarked = unmarked_browser_tests([new], shared_fixture_files())
    names = [name.split("::")[1] for name in unmarked]
    assert names == ["test_through_a_fixture", "test_with_the_browser", "test_using_it", "test_own_playwright"]
    assert len(found) == 5  # the marked one launches a browser too; the HTTP one does not


def test_a_whole_file_is_marked_by_its_pytestmark(tmp_path: Path) -> None:
    marked = tmp_path / "test_marked_browser.py"
    marked.write_text("import pytest\n\npytestmark = [pytest.mark.browser]\n\n"
                      "def test_page(open_page):\n    pass\n")
    found, unmarked = unmarked_browser_tests([marked], shared_fixture_files())
    assert len(found) == 1 and unmarked == []
