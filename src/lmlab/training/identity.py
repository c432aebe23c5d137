"""What a run's identity holds, so that `resume=auto` continues only a run made by the same code from the same
config: a digest of the code its verb runs (`code_version`) and a fingerprint of the config values it reads."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Any

SCHEMA = "config.py"  # each package's schemas: what a run reads from them is in its identity, as values


def code_modules(module: str) -> list[Path]:
    """The package's source files `module` imports at module level, directly or through others: the code a
    run of it depends on. Imports inside functions are left out: they are how a module avoids loading what
    only some of its callers need (the CLI's config check imports the model families only for a model)."""
    package = Path(__file__).parents[1]
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or not name.startswith("lmlab"):
            continue
        parts = name.split(".")[1:]
        path = package.joinpath(*parts).with_suffix(".py")
        if not path.is_file():
            path = package.joinpath(*parts, "__init__.py")
        if not path.is_file():
            continue  # a name imported from a module, not a module
        seen[name] = path
        todo += [".".join(name.split(".")[:k]) for k in range(1, len(name.split(".")))]  # the parent packages
        for node in module_level(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                todo += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return sorted(seen.values())


def module_level(tree: ast.AST) -> list[ast.AST]:
    """The nodes of a module outside function bodies."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            todo += list(ast.iter_child_nodes(node))
    return nodes


def code_text(source: str) -> str:
    """A module's source as its code identity reads it: the module-level imports as one sorted list, where an
    lmlab import counts by the names it brings, not the module they come from (that module's content counts
    by itself), and blank lines collapsed. A module moved or renamed, and its importers' import lines rewritten
    and re-sorted, reads the same."""
    tree = ast.parse(source)
    lines = source.splitlines()
    imports: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for k in range(node.lineno - 1, node.end_lineno or node.lineno):
                lines[k] = ""
            names = ", ".join(sorted(f"{a.name} as {a.asname}" if a.asname else a.name for a in node.names))
            module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
            if isinstance(node, ast.ImportFrom) and not module.startswith("lmlab"):
                imports.add(f"from {'.' * node.level}{module} import {names}")
            elif isinstance(node, ast.ImportFrom):
                imports.add(f"from lmlab import {names}")
            else:
                imports |= {f"import {name}" for name in names.split(", ") if not name.startswith("lmlab")}
    body = "\n".join(line for k, line in enumerate(lines) if line.strip() or (k and lines[k - 1].strip()))
    return "\n".join(sorted(imports)) + "\n\n" + body


def code_version(module: str) -> str:
    """A digest of the code `module` runs (`code_modules`), each file by its content (`code_text`), not its
    path: a run trained by other code is not resumed, an edit elsewhere in the package (which makes DVC rerun
    the stage) resumes the finished run at once, and so does a pure move of modules. The schemas (`config.py`)
    are left out: a run's identity holds the config values it reads from them, so a key or verb added there
    does not retrain runs it does not change."""
    texts = sorted(
        hashlib.sha256(code_text(path.read_text()).encode()).hexdigest()
        for path in code_modules(module)
        if path.name != SCHEMA
    )
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


def fingerprint(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys
