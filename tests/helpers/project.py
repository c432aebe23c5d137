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


WANDB_DIRS = ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")


def wandb_dirs(tmp: Path) -> dict[str, str]:
    """W&B's config, cache and data folders under `tmp`: nothing a test's W&B run writes lands in $HOME."""
    return {var: str(tmp / var.lower()) for var in WANDB_DIRS}


def cli_env(tmp: Path, **extra: str) -> dict[str, str]:
    """env() for a process that makes W&B runs of its own: W&B's default mode (offline, the config's), no API key,
    sweep or run identity inherited from the caller, its folders under `tmp` (`wandb_dirs`); `extra` on top."""
    inherited = env()
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_TAGS", "LMLAB_TEST_STALL_AT"):
        inherited.pop(var, None)
    return inherited | wandb_dirs(tmp) | extra


def start(args: list[str], cwd: Path, run_env: dict[str, str]) -> subprocess.Popen[str]:
    """`python <args>` in the background, its stdout and stderr together (`finish` collects them)."""
    return subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Wait for a `start`ed process; its output as a CompletedProcess's stdout."""
    out = proc.communicate(timeout=timeout)[0]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
