"""The environment refusing a write (a read-only disk or folder, a file where a folder should be): an error in
lmlab's words naming the folder and the key that moves it, before the work where it can be known before, and
never a traceback after it."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lmlab.cli import unwritable_message
from lmlab.core.atomic import write_atomic
from lmlab.core.errors import LmlabError
from lmlab.core.rules import check_writable, output_dir, output_file
from tests.helpers.project import ROOT, env


def read_only(folder: Path) -> list[str]:
    """A command prefix that runs its command with `folder` mounted read-only (a user and mount namespace:
    a real read-only file system, which stops root too, as a folder's mode does not)."""
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && shift && exec "$@"'
    prefix = ["unshare", "-rm", "sh", "-c", script, str(folder), "--"]
    if shutil.which("unshare") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("no user and mount namespaces here (unshare -rm) to mount a folder read-only")
    return prefix


@pytest.mark.parametrize(
    ("verb", "overrides", "key"),
    [
        ("pretrain", ["model=gru", "hydra.run.dir={ro}/run"], "hydra.run.dir={ro}/run"),
        ("pretrain", ["model=gru", "hydra.run.dir={ro}"], "hydra.run.dir={ro}"),  # a finished run's folder
        ("pretrain", ["model=gru", "metrics_file={ro}/gru.json", "hydra.run.dir={rw}/run"], "metrics_file={ro}"),
        ("evaluate", ["family=gru", "metrics_dir={ro}/metrics", "eval_dir={rw}/eval"], "out={ro}/metrics/gru.json"),
        ("report", ["out_dir={ro}/reports"], "out_dir={ro}/reports"),
    ],
)
def test_a_read_only_folder_is_refused_before_the_work_naming_the_key(
    tmp_path: Path, verb: str, overrides: list[str], key: str
) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    (ro / ".hydra").mkdir(parents=True)
    args = [o.format(ro=ro, rw=rw) for o in overrides]
    command = [*read_only(ro), sys.executable, "-m", "lmlab", verb, *args]
    result = subprocess.run(command, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert key.format(ro=ro) in result.stderr and "(a read-only file system)" in result.stderr, result.stderr
    assert "a folder lmlab may write" in result.stderr and "Traceback" not in result.stderr


@dataclass
class Outputs:
    metrics_file: str | None = output_file(None)
    out_dir: str = output_dir("reports")


def test_a_file_where_an_output_folder_should_be_is_named(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file")
    check_writable(Outputs(str(tmp_path / "new" / "m.json"), str(tmp_path / "reports")))  # folders to be made: fine
    with pytest.raises(LmlabError, match=r"metrics_file=.*taken/m.json: .*taken is a file, not a folder; give"):
        check_writable(Outputs(str(tmp_path / "taken" / "m.json")))
    with pytest.raises(LmlabError, match=r"out_dir=.*taken/deeper: .*taken is a file, not a folder"):
        check_writable(Outputs(None, str(tmp_path / "taken" / "deeper")))


def test_a_write_refused_mid_job_names_the_file_and_the_key_that_holds_it(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"paths": {"data_dir": str(tmp_path)}, "metrics_dir": str(tmp_path / "metrics")})
    err = OSError(errno.EROFS, "Read-only file system", str(tmp_path / "metrics" / ".gru.json.1.tmp"))
    message = unwritable_message(err, cfg)
    assert message.startswith(f"cannot write {tmp_path}/metrics/.gru.json.1.tmp (Read-only file system)")
    assert "it is under metrics_dir" in message  # the deepest key holding it, not paths.data_dir


def test_a_refused_write_reports_its_own_error_not_the_cleanup_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a read-only disk removing the temporary file fails too; that second error hid the first."""

    def refuse(path: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(Path, "write_bytes", refuse)
    monkeypatch.setattr(Path, "unlink", refuse)
    with pytest.raises(OSError, match=r"\.m\.json\.\d+\.tmp") as raised:
        write_atomic(tmp_path / "m.json", b"{}")
    assert raised.value.errno == errno.EROFS and raised.value.__context__ is None
