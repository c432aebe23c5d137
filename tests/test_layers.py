"""The package tree is the architecture: each layer imports only the layers below it, and no module imports
itself back through others (docs/architecture.md, "Code")."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers.project import ROOT

SRC = ROOT / "src"
# a package -> the packages (or single modules) it may import; imports inside functions count too
MAY_IMPORT = {
    "core": set(),
    "models": {"core"},
    "data": {"core"},
    "analysis": {"core"},
    "training": {"core", "models", "data"},
    "tasks": {"core", "models", "data", "training", "analysis"},
    # a model outside the run folders (export, load, the Hub): beside the jobs, which load through it
    "hub": {"core", "models", "data", "training", "analysis"},
    "jobs": {"core", "models", "data", "training", "tasks", "analysis", "hub"},
    # the tools compose a verb's config as the CLI does (cli.schemas)
    "tools": {"core", "analysis", "data", "training", "jobs", "lmlab.cli.schemas"},
    "cli": {"core", "models", "data", "training", "tasks", "jobs", "analysis", "tools", "hub"},
    "lmlab": {"cli", "hub"},  # __init__ (lmlab.load), __main__
}


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "lmlab").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports() -> dict[str, set[str]]:
    """Each lmlab module -> the lmlab modules it imports (a name imported from a package counts as its module
    when it is one)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name in known}
            elif isinstance(node, ast.ImportFrom) and node.module in known:
                for alias in node.names:
                    found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module)
        graph[name] = found - {name}
    return graph


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in MAY_IMPORT) else "lmlab"


def allowed(importer: str, imported: str) -> bool:
    own, other = layer(importer), layer(imported)
    rules = MAY_IMPORT[own]
    return own == other or other in rules or any(imported == r or imported.startswith(r + ".") for r in rules)


def test_every_package_is_a_known_layer() -> None:
    assert {layer(m) for m in modules()} <= set(MAY_IMPORT)


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = [f"{a} imports {b}" for a, bs in imports().items() for b in sorted(bs) if not allowed(a, b)]
    assert not wrong, "\n".join(wrong)


def circles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    found = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                found.append(" -> ".join([*path[path.index(other) :], other]))
            elif other not in state:
                visit(other, [*path, other])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_no_import_circle() -> None:
    found = circles(imports())
    assert not found, "\n".join(found)


def test_the_checks_can_fail() -> None:
    """A models -> training import is refused, and the circle search finds a planted circle."""
    assert not allowed("lmlab.models.base", "lmlab.training.config")
    assert allowed("lmlab.tools.sweep", "lmlab.cli.schemas") and not allowed("lmlab.tools.sweep", "lmlab.cli")
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
