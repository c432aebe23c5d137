"""A throwaway copy of the project (configs, dvc.yaml, sources) to run the CLI and DVC in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COPIED = ("conf", "dvc.yaml", "params.yaml", ".dvc/config", ".dvc/plots", ".dvcignore", "src/lmlab")


def copy_files(dest: Path, names: tuple[str, ...]) -> Path:
    """Copy the project's files and folders `names` (no caches) into ``dest``."""
    for name in names:
        source, target = ROOT / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    return dest


def copy_project(dest: Path) -> Path:
    """Copy what the pipeline reads into ``dest`` and make it a fresh git + DVC repo."""
    copy_files(dest, COPIED)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def env() -> dict[str, str]:
    """Environment whose PATH finds this interpreter's ``lmlab`` and ``dvc`` scripts first.

    Without WANDB_SERVICE: W&B sets it in a process that starts a run (tests do, in-process), and a child
    that inherits it logs through that process's service, where a killed child's run stays registered.
    """
    bin_dir = str(Path(sys.executable).parent)
    inherited = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**inherited, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1"}


def lmlab(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lmlab", *args], cwd=cwd, env=env(), capture_output=True, text=True)


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args], cwd=cwd, env=env(), capture_output=True, text=True
    )
