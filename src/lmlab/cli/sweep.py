"""``lmlab sweep sweeps/<name>.yaml --count N [-j J]``: run a W&B sweep file offline, with W&B's sweep engine."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from rich.console import Console

from lmlab.core.errors import LmlabError

SUMMARY = "run a W&B sweep file offline, trial by trial (sweeps/<name>.yaml --count N [-j J])"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lmlab sweep",
        description="Run a W&B sweep file (the one `wandb sweep` takes) with no W&B server: W&B's own engine "
        "(the `sweeps` package) proposes each trial, which runs the file's command as its own process, run "
        "folder and offline W&B run (tagged sweep:<sweep id>). State lives in <out>/<sweep id>/sweep.json: the "
        "same command continues an interrupted sweep, resuming trials that were cut off mid-way. A ranked "
        "table ends the run. Run from the project root.",
    )
    p.add_argument("file", type=Path, help="the sweep file, e.g. sweeps/smoke.yaml")
    p.add_argument(
        "--count",
        type=int,
        help="trials in the sweep, counting those already run (default for a grid: all its points)",
    )
    p.add_argument("-j", "--jobs", type=int, default=1, help="trials run at once (default 1)")
    p.add_argument(
        "--out", type=Path, default=Path("outputs/sweeps"), help="where sweeps live (default: outputs/sweeps)"
    )
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    console = Console(width=max(120, shutil.get_terminal_size().columns), highlight=False)
    try:
        from lmlab.tools.sweep_trials import run_sweep

        return run_sweep(args.file, args.count, args.jobs, args.out, console)
    except ModuleNotFoundError as err:
        if err.name != "sweeps":
            raise
        print(
            "lmlab sweep: error: W&B's sweep engine is not installed: pip install --no-deps sweeps==0.3.0 "
            "(`make setup` does; --no-deps because it declares numpy<2 but works with numpy 2)",
            file=sys.stderr,
        )
        return 2
    except LmlabError as err:
        print(f"lmlab sweep: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before any trial started (the runner handles it once they run)
        return 130
