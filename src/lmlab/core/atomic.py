"""Outputs appear whole or not at all: a file is written beside itself and renamed over; a stage's folder is
built in a hidden sibling and swapped in; files of one job spread over several folders are published as a set,
a manifest of their sha256s written last. What lmlab wrote as JSON is read back here too, checked: a file
damaged since (by hand, a full disk, an older version) is an error naming it and what rebuilds it."""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import reprlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from lmlab.core.errors import DiskFull, LmlabError

Types = type | tuple[type, ...]
NUMBER = (int, float)
TYPE_NAMES = {
    NUMBER: "a number",
    int: "an integer",
    str: "a string",
    list: "a list",
    dict: "an object",
    bool: "true or false",
}
JSON_NAMES = {dict: "object", list: "list", str: "string", int: "number", float: "number", bool: "boolean"}


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield an empty staging folder that replaces ``out`` only if the block succeeds.

    A full disk while the block fills it is an error naming the folder (or the file, when the OSError names one).
    """
    staging = out.with_name(f".{out.name}.staging")
    old = out.with_name(f".{out.name}.old")
    if old.exists() and not out.exists():
        os.replace(old, out)  # an earlier run was killed between the two renames below
    # what a killed run left: a half-filled staging folder, or (killed after the swap) the replaced output
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with naming_full_disk(staging):
            staging.mkdir(parents=True)
            yield staging
        if out.exists():
            os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def staged_into(folder: Path, elsewhere: str) -> Iterator[Path]:
    """Yield an empty staging folder whose files and folders replace those of the same names in ``folder`` only
    if the block succeeds: for outputs that share their folder with others' (the main report's files sit beside
    the other studies' folders in reports/), which `staged_dir` cannot swap whole. A full disk is an error
    naming ``folder`` and `elsewhere`, the setting that moves it."""
    staging = folder.with_name(f".{folder.name}.entries.staging")
    shutil.rmtree(staging, ignore_errors=True)  # what a killed run left
    try:
        with naming_full_disk(folder, elsewhere):
            staging.mkdir(parents=True)
            yield staging
        folder.mkdir(parents=True, exist_ok=True)
        for item in staging.iterdir():
            if item.is_dir():
                shutil.rmtree(folder / item.name, ignore_errors=True)
            os.replace(item, folder / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def naming_full_disk(path: Path, elsewhere: str | None = None) -> Iterator[None]:
    """A full disk (ENOSPC) while the block writes ``path`` (a file, or a folder being filled) becomes an
    error naming it: the OSError of a failed write names no file, so "Errno 28" alone does not say which disk."""
    try:
        yield
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        raise full_disk_error(Path(err.filename) if err.filename else path, elsewhere) from err


def full_disk_error(path: Path, elsewhere: str | None = None) -> DiskFull:
    """What to say when the disk holding ``path`` is full; ``elsewhere`` is the setting that moves it (None: the
    CLI names the config key whose folder holds ``path``)."""
    move = f"set {elsewhere} to a folder on a disk with room" if elsewhere else "move it to a disk with room"
    return DiskFull(
        f"no space left on the device while writing {path}: this step needs more free space there. Free some on "
        f"that disk (`df -h` shows what each has left) or {move}, then run again; finished outputs were kept.",
        path,
    )


@contextmanager
def scratch_dir(prefix: str, parent: Path | None = None) -> Iterator[Path]:
    """A temporary folder ``<prefix><pid>-<random>`` in ``parent`` (default: the temp folder), removed after use.

    A killed process cannot remove its own, so this first removes those whose process no longer runs (and older
    ones with no PID in their name): leftovers go at the next run, while a running download keeps its folder.
    """
    parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    pattern = re.compile(rf"{re.escape(prefix)}(?:(\d+)-)?[a-z0-9_]{{8}}")  # tempfile's 8 random characters
    for folder in parent.glob(f"{prefix}*"):
        match = pattern.fullmatch(folder.name)
        if match and folder.is_dir() and not (match[1] and _running(int(match[1]))):
            shutil.rmtree(folder, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-", dir=parent) as tmp:
        yield Path(tmp)


def _running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (another user's counts: it may be a download too)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only checks
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def write_atomic(path: Path, data: bytes | memoryview, elsewhere: str | None = None) -> None:
    """Write whole or not at all: a kill mid-write or a full disk leaves the previous file, and a reader never
    sees half. The temporary file sits beside ``path`` (a rename within one filesystem is atomic; a move across
    filesystems is a copy), one per process (DDP ranks may write the same file); the ones of killed writers go
    at the next write. A full disk is an error naming ``path`` and the setting (``elsewhere``) that moves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = stale.name[len(path.name) + 2 : -len(".tmp")]
        if pid.isdigit() and not _running(int(pid)):
            stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with naming_full_disk(path, elsewhere):
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):  # on a read-only disk, this fails too: the write's error is the one to tell
            tmp.unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def published_together(manifest: Path) -> Iterator[dict[str, Path]]:
    """Yield a dict the block fills with the files it writes, by role (``{"metrics": ..., "sample": ...}``);
    when the block succeeds, ``manifest`` records each one's sha256. The old manifest goes first, so a set cut
    short (a kill, a full disk) has none, and a file of another run beside the set differs from it: readers
    take the files as one job's output only through `check_published`."""
    manifest.unlink(missing_ok=True)
    files: dict[str, Path] = {}
    yield files
    write_json(manifest, {"files": {role: sha256_file(path) for role, path in sorted(files.items())}})


def check_published(manifest: Path, files: Mapping[str, Path], rebuild: str) -> None:
    """The ``files`` a reader takes as one set (by role; absent ones included) are the set ``manifest``
    recorded: each listed one present with the content it had, none present that it does not list."""
    if not manifest.is_file():
        raise LmlabError(
            f"no {manifest}, the record of one run's files ({', '.join(str(p) for p in files.values())}): a run "
            f"cut short (a kill, a full disk) leaves none, and its files may be of two runs: {rebuild}"
        )
    recorded = read_json(manifest, rebuild, {"files": dict})["files"]
    for role, path in files.items():
        if role not in recorded and path.exists():
            raise LmlabError(f"{path} is not of the run {manifest} records (it wrote no {role!r}): {rebuild}")
        if role in recorded and (not path.is_file() or sha256_file(path) != recorded[role]):
            change = "was changed or replaced" if path.is_file() else "is missing"
            raise LmlabError(f"{path} {change} since the run {manifest} records wrote it: {rebuild}")


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def read_json(
    path: Path, rebuild: str, required: Mapping[str, Types] | None = None, optional: Mapping[str, Types] | None = None
) -> dict[str, Any]:
    """The JSON object in `path`, with the `required` keys (and any `optional` ones present) of the given types.

    Anything else (a missing file, not JSON, not an object, a missing key, a wrong type) is an LmlabError
    naming the file and what is wrong, ending with `rebuild`: the command or DVC stage that writes it again.
    Checked on reading, so that a damaged file never surfaces later as a bare KeyError or TypeError."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise LmlabError(f"no {path}: {rebuild}") from None
    except ValueError as err:  # JSONDecodeError, or bytes that are not text
        raise LmlabError(f"{path} is not valid JSON ({err}): {rebuild}") from err
    if not isinstance(data, dict):
        raise LmlabError(f"{path} holds a JSON {JSON_NAMES.get(type(data), 'null')}, not an object: {rebuild}")
    check_keys(data, path, rebuild, required, optional)
    return data


def check_keys(
    data: Mapping[str, Any],
    path: Path,
    rebuild: str,
    required: Mapping[str, Types] | None = None,
    optional: Mapping[str, Types] | None = None,
    within: str = "",
) -> None:
    """`read_json`'s key checks, for an object nested in `path` at `within` (``"splits.train."``)."""
    for key, types in {**(optional or {}), **(required or {})}.items():
        if key not in data:
            if required and key in required:
                raise LmlabError(f"{path} has no key {within + key!r}: {rebuild}")
            continue
        value = data[key]
        if isinstance(value, bool) != (types is bool) or not isinstance(value, types):  # JSON's true is no number
            raise LmlabError(f"{path}: {within + key!r} is {reprlib.repr(value)}, not {TYPE_NAMES[types]}: {rebuild}")
