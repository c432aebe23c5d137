"""staged_dir: a stage's output appears whole or not at all, and survives a kill mid-swap."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmlab.data.atomic import staged_dir


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
