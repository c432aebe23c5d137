"""Offline W&B runs read back by W&B's own reader (`wandb leet inspect`), as a user would inspect them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def leet_inspect(path: Path, *flags: str) -> str:
    wandb = Path(sys.executable).parent / "wandb"
    result = subprocess.run([str(wandb), "leet", "inspect", *flags, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wandb_summary(path: Path) -> dict[str, Any]:
    """The run as W&B sees it: id, exit code, tags, config, summary."""
    return json.loads(leet_inspect(path, "--summary", "--json"))


def wandb_records(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's summary object and its raw records (history, run, ...)."""
    records = [json.loads(line) for line in leet_inspect(path, "--json").splitlines() if line.strip()]
    return wandb_summary(path), records
