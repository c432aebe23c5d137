"""The values a config key accepts, declared beside the key (`at_least`, `one_of`, ...) and checked for a whole
config by `check_values` before a verb changes anything on disk: the rule library every schema uses."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from lmlab.core.errors import LmlabError


# ----- the values a key accepts, declared beside the key and checked by `check_values` -----
def at_least(low: float, default: Any) -> Any:
    """A count or size: ``>= low``."""
    return field(default=default, metadata={"rule": (f">= {low}", lambda v: v >= low)})


def above(low: float, default: Any) -> Any:
    return field(default=default, metadata={"rule": (f"> {low}", lambda v: v > low)})


def fraction(default: float) -> Any:
    """A probability of dropping (dropout), a share of documents: in [0, 1)."""
    return field(default=default, metadata={"rule": ("in [0, 1)", lambda v: 0 <= v < 1)})


def one_of(choices: tuple[str, ...], default: str) -> Any:
    return field(default=default, metadata={"rule": (f"one of {', '.join(choices)}", lambda v: v in choices)})


def plain_name(value: Any) -> bool:
    """A name that becomes one folder or file under its root: not empty, not absolute, no separator, not `.` or
    `..`, no NUL; so a write under `paths.data_dir` (or a metrics folder) stays there."""
    return (
        isinstance(value, str) and value not in ("", ".", "..") and not any(bad in value for bad in ("/", "\\", "\0"))
    )


PLAIN_NAME = "a plain name (no /, \\ or .., not absolute): it names a folder or file"


def path_name(default: Any) -> Any:
    """A name that becomes a path (`plain_name`)."""
    return field(default=default, metadata={"rule": (PLAIN_NAME, plain_name)})


def path_names(default: Any) -> Any:
    """A list of names that become paths, or None."""
    check = lambda v: all(plain_name(n) for n in v)  # noqa: E731
    return field(default=default, metadata={"rule": (f"a list, each {PLAIN_NAME}", check)})


def confined(root: Path, part: str) -> Path:
    """``root / part`` for a name from a config, refused where it would leave ``root`` (`plain_name`): the
    check for the code that builds paths without a verb's `check_values` before it."""
    if not plain_name(part):
        raise LmlabError(f"{part!r} is not {PLAIN_NAME}: it would be written outside {root}")
    return root / part


def rule(description: str, check: Callable[[Any], bool], default: Any) -> Any:
    return field(default=default, metadata={"rule": (description, check)})


def dotted(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config sections as dotted keys, the way Hydra overrides name them (keys starting with `_` are
    bookkeeping, such as W&B's `_wandb`, and are left out)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if str(key).startswith("_"):
            continue
        if isinstance(value, Mapping):
            flat |= dotted(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_values(cfg: Any, prefix: str = "") -> None:
    """Refuse a value outside its key's rule (`at_least`, `fraction`, `one_of`, ...), naming the key and what
    it accepts: every verb checks its whole config before it changes anything on disk. None (an optional
    key left unset) passes."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            check_values(value, f"{prefix}{f.name}.")
        elif "rule" in f.metadata and value is not None and value is not MISSING:
            description, ok = f.metadata["rule"]
            try:
                good = bool(ok(value))
            except (TypeError, ValueError):
                good = False
            if not good:
                raise LmlabError(f"{prefix}{f.name}={value!r}: must be {description}")


# ----- where a verb writes, checked by `check_writable` before the work -----
def output_file(default: Any) -> Any:
    """A file the verb writes (its folder must take new files: writes are atomic renames beside it)."""
    return field(default=default, metadata={"output": "file"})


def output_dir(default: Any) -> Any:
    """A folder the verb writes into."""
    return field(default=default, metadata={"output": "folder"})


def check_writable(cfg: Any, prefix: str = "") -> None:
    """Refuse an output (`output_file`, `output_dir`) that cannot be written, naming the key and the folder:
    checked before the work, so that a read-only disk or folder is not found after minutes of it."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            check_writable(value, f"{prefix}{f.name}.")
        elif "output" in f.metadata and isinstance(value, str) and value is not MISSING:
            path = Path(value)
            if (problem := unwritable(path if f.metadata["output"] == "folder" else path.parent)) is not None:
                raise LmlabError(f"{prefix}{f.name}={value}: {problem}; give {prefix}{f.name} a folder lmlab may write")


def unwritable(folder: Path) -> str | None:
    """Why files cannot be made in `folder` (where it does not exist yet, in the nearest folder above that
    does), or None. `os.access` answers as the writes would: for root too, whom a read-only file system stops
    and a folder's mode does not."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = os.statvfs(existing).f_flag & os.ST_RDONLY
        return f"cannot write in {existing} ({'a read-only file system' if read_only else 'no write permission'})"
    return None
