"""The package tree is the architecture: imports only point down, and no module imports itself back.

    main, __main__      start and assembly           (may import every layer)
    web/                the HTTP edge                (core, storage, llm, base)
    core/               the rules, no HTTP           (storage, llm, base)
    storage/  llm/      Redis; the model providers   (base)
    base/  config.py    what every layer shares      (nothing of the app)

Every import counts: at the top of a module, inside a function, or for type checking only (a
lazy import once hid a cycle: security -> error_handlers -> htmx -> security).
"""

from __future__ import annotations

import ast
from pathlib import Path

WEBAPP = Path(__file__).resolve().parents[2] / "webapp"
RANKS = {"base": 0, "config": 0, "storage": 1, "llm": 1, "core": 2, "web": 3, "main": 4, "__main__": 4, "__init__": 0}
PEERS_MAY_NOT_MEET = {("storage", "llm"), ("llm", "storage")}


def module_of(path: Path) -> str:
    parts = list(path.relative_to(WEBAPP.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts.pop()
    return ".".join(parts)


def imports() -> dict[str, set[str]]:
    """Each webapp module -> the webapp modules it imports (a name imported from a package that is a
    module of its own counts as that module)."""
    modules = {module_of(path): path for path in WEBAPP.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{module}: relative import (webapp's imports are absolute)"
                if node.module and node.module.startswith("webapp"):
                    for alias in node.names:
                        candidate = f"{node.module}.{alias.name}"
                        found.add(candidate if candidate in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith("webapp."))
        graph[module] = {name for name in found if name in modules and name != module}
    return graph


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_imports_only_point_down() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in imports().items() for target in targets
        if RANKS[layer(target)] > RANKS[layer(module)] or (layer(module), layer(target)) in PEERS_MAY_NOT_MEET
    )
    assert upward == [], "imports that point up (or across storage/llm):\n  " + "\n  ".join(upward)


def test_there_are_no_import_cycles() -> None:
    graph = imports()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert cycles == [], "import cycles:\n  " + "\n  ".join(" -> ".join(cycle) for cycle in cycles)


def test_every_module_lives_in_a_layer() -> None:
    top = sorted(path.name for path in WEBAPP.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "config.py", "main.py"]
    assert {path.name for path in WEBAPP.iterdir() if path.is_dir() and path.name != "__pycache__"} == {
        "base", "storage", "llm", "core", "web"}
    assert all(RANKS.get(layer(module)) is not None for module in imports())


def test_no_class_is_over_300_lines() -> None:
    """A class that grows past this is two concepts (the Store was 966 lines, TurnWriter 430)."""
    long = []
    for path in WEBAPP.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 300:
                long.append(f"{module_of(path)}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert long == [], long
