"""The package's shape: imports point down the layers, no import cycle, no oversized module.

Read from the source files' syntax trees, so that an import hidden inside a function counts the
same as one at the top of a module (it still ties the two modules together at run time).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "conun"

# Lowest first. A module may import modules of its own layer or of lower layers only.
LAYERS: list[tuple[str, ...]] = [
    ("conun.version", "conun.io", "conun.config", "conun.reproducibility", "conun.distributed"),
    ("conun.data", "conun.models", "conun.losses", "conun.evaluation", "conun.viz"),
    ("conun.engine",),
    ("conun.methods",),
    ("conun.workflows", "conun.bench", "conun.report", "conun.api"),
    ("conun.cli", "conun.__main__", "conun"),
]

# viz draws figures from saved results: it never runs models through the engine or workflows.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "conun.viz": ("conun.engine", "conun.methods", "conun.workflows", "conun.evaluation"),
}

MAX_LINES = 750


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(target: str) -> str | None:
    """The conun module that ``target`` names (a module, or a name inside a module)."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def imports_of(name: str) -> Iterator[tuple[str, int, bool]]:
    """(imported conun module, line, inside a function) for every import statement of ``name``."""
    path = MODULES[name]
    yield from imports_in(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")


def imports_in(source: str, name: str, is_package: bool) -> Iterator[tuple[str, int, bool]]:
    """:func:`imports_of` for the source of module ``name``."""
    tree = ast.parse(source)
    functions = [
        node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    local = {id(inner) for function in functions for inner in ast.walk(function)}
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import submodule` imports the submodule.
            targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
        for target in targets:
            if target == "conun" or target.startswith("conun."):
                resolved = _resolve(target)
                if resolved is not None and resolved != name:
                    yield resolved, node.lineno, id(node) in local


def layer_of(name: str) -> int:
    best = (-1, -1)  # (prefix length, layer)
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = (len(prefix), rank)
    if best[1] < 0:
        raise AssertionError(f"module {name} is in no layer: add its package to LAYERS")
    return best[1]


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        layer_of(name)


def test_imports_point_down_the_layers() -> None:
    upward = []
    for name in MODULES:
        for target, line, _ in imports_of(name):
            if layer_of(target) > layer_of(name):
                upward.append(f"{MODULES[name].relative_to(PACKAGE)}:{line} imports {target}")
            for package, banned in FORBIDDEN.items():
                if name.startswith(package) and target.startswith(banned):
                    upward.append(f"{MODULES[name].relative_to(PACKAGE)}:{line} imports {target}")
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    graph = {name: sorted({target for target, _, _ in imports_of(name)}) for name in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for following in graph[node]:
            if state.get(following) == 1:
                return [*path[path.index(following) :], following]
            if following not in state:
                cycle = visit(following)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in graph:
        if start not in state:
            cycle = visit(start)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_function_local_conun_imports() -> None:
    # The package's root resolves its public names lazily through importlib (PEP 562), which
    # is not an import statement; every other conun import sits at the top of its module.
    local = [
        f"{MODULES[name].relative_to(PACKAGE)}:{line} imports {target}"
        for name in MODULES
        for target, line, inside in imports_of(name)
        if inside
    ]
    assert not local, "conun imports inside functions:\n" + "\n".join(local)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_oversized(name: str) -> None:
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(PACKAGE)} has {lines} lines"


def test_the_walker_finds_function_local_and_relative_imports() -> None:
    source = (
        "from conun.config import ConfigError\n"
        "from . import stopping\n"
        "def f():\n"
        "    from conun.methods import get_method\n"
        "    return get_method\n"
    )
    found = sorted(imports_in(source, "conun.engine.unlearning", is_package=False))
    assert found == [
        ("conun.config", 1, False),
        ("conun.engine.stopping", 2, False),
        ("conun.methods", 4, True),
    ]
    assert layer_of("conun.methods") > layer_of("conun.engine.unlearning")
