"""Outputs appear whole or not at all: a file is written beside itself and renamed over; a stage's folder is
built in a hidden sibling and swapped in."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield an empty staging folder that replaces ``out`` only if the block succeeds."""
    staging = out.with_name(f".{out.name}.staging")
    old = out.with_name(f".{out.name}.old")
    if old.exists() and not out.exists():
        os.replace(old, out)  # an earlier run was killed between the two renames below
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write whole or not at all: a kill mid-write leaves the previous file, and a reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: DDP ranks may write the same file
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
