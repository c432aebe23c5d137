"""staged_dir: a stage's output appears whole or not at all, and survives a kill mid-swap; read_json: a damaged
file lmlab wrote is an error naming it and what rebuilds it."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmlab.core.atomic import NUMBER, read_json, staged_dir, write_atomic, write_json
from lmlab.core.errors import LmlabError


def test_success_replaces_the_output_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with staged_dir(out) as staging:
        (staging / "new.txt").write_text("new")
        assert not (out / "new.txt").exists()  # nothing visible before the block ends
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failure_keeps_the_earlier_output_and_leaves_no_staging(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_dir(out) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("killed")
    assert (out / "old.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_run_killed_between_the_renames_gets_its_output_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old = tmp_path / ".out.old"  # where the earlier output sat when the kill came
    old.mkdir()
    (old / "done.txt").write_text("finished work")
    (tmp_path / ".out.staging").mkdir()  # and a staging folder left behind
    with pytest.raises(RuntimeError), staged_dir(out):
        raise RuntimeError("this run fails too")
    assert (out / "done.txt").read_text() == "finished work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ----- read_json: what lmlab wrote, read back checked -----


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", r"is not valid JSON \(Expecting value"),
        (b'{"a": 1', r"is not valid JSON"),
        (b"\xff\xfe{}", r"is not valid JSON"),
        (b'"a"', r"holds a JSON string, not an object"),
        (b'{"b": 1}', r"has no key 'a'"),
        (b'{"a": "1"}', r"'a' is '1', not a number"),
        (b'{"a": true}', r"'a' is True, not a number"),
        (b'{"a": 1, "c": [1]}', r"'c' is \[1\], not a string"),
    ],
)
def test_read_json_names_the_file_what_is_wrong_and_how_to_rebuild_it(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "made.json"
    path.write_bytes(content)
    with pytest.raises(LmlabError, match=problem) as caught:
        read_json(path, "run `make it` again", {"a": NUMBER}, optional={"c": str})
    message = str(caught.value)
    assert message.startswith(str(path)) and message.endswith(": run `make it` again")


def test_read_json_returns_what_write_json_wrote_and_names_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "made.json"
    write_json(path, {"a": 1, "b": {"c": [1.5]}})
    assert read_json(path, "run `make it`", {"a": int, "b": dict}) == {"a": 1, "b": {"c": [1.5]}}
    with pytest.raises(LmlabError, match=r"^no .*other\.json: run `make it`$"):
        read_json(tmp_path / "other.json", "run `make it`")


def test_write_atomic_removes_the_temporary_files_of_killed_writers_only(tmp_path: Path) -> None:
    """A writer killed mid-write leaves `.<name>.<pid>.tmp`; the next write removes it once that process is gone,
    and leaves a running writer's (another DDP rank's) alone."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / f".last.ckpt.{int(dead.stdout)}.tmp"
    running = tmp_path / f".last.ckpt.{os.getppid()}.tmp"
    other = tmp_path / ".best.ckpt.1.tmp"
    for leftover in (killed, running, other):
        leftover.write_bytes(b"half")
    write_atomic(tmp_path / "last.ckpt", b"whole")
    assert (tmp_path / "last.ckpt").read_bytes() == b"whole"
    assert not killed.exists() and running.exists() and other.exists()


def test_write_atomic_on_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "metrics.json"
    write_atomic(path, b"old")

    def full(self: Path, data: bytes) -> int:
        Path.open(self, "wb").write(bytes(data)[:2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(LmlabError, match=f"no space left on the device while writing {re.escape(str(path))}"):
        write_atomic(path, b"new and longer")
    assert path.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [path]
