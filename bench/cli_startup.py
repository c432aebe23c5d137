"""Start-up time of the CLI: `lmlab pretrain --help`, `lmlab --help`, `--cfg job` and one TAB completion.

    python bench/cli_startup.py [--runs 7]

Each command runs as a subprocess of the installed `lmlab` script, from the project root, the way a
person types it; the figure is its wall time. The reference, measured in the same run, is
`python -c "import torch, lightning"`: what every verb paid before it printed anything. Rounds run the
commands in turn, each round starting one command later, so that a noisy machine slows them alike.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LMLAB = str(Path(sys.executable).parent / "lmlab")
REFERENCE = "import torch, lightning (reference)"
TAB_LINE = "lmlab pretrain model="
COMMANDS: dict[str, tuple[list[str], dict[str, str]]] = {
    REFERENCE: ([sys.executable, "-c", "import torch, lightning"], {}),
    "lmlab --help": ([LMLAB, "--help"], {}),
    "lmlab pretrain --help": ([LMLAB, "pretrain", "--help"], {}),
    "lmlab pretrain --cfg job": ([LMLAB, "pretrain", "--cfg", "job"], {}),
    # what one TAB runs (the function `-sc install=bash` registers calls it)
    f"TAB: {TAB_LINE}": ([LMLAB, "pretrain", "-sc", "query=bash"], {"COMP_LINE": TAB_LINE}),
}


def timed(argv: list[str], extra_env: dict[str, str]) -> float:
    """Wall seconds of one run; exits with its stderr if it fails."""
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=ROOT, env={**os.environ, **extra_env}, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{result.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each command (after one untimed)")
    args = parser.parse_args()

    names = list(COMMANDS)
    for name in names:  # warm the file cache: the first start of torch reads ~1 GB from disk
        timed(*COMMANDS[name])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.runs):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            seconds[name].append(timed(*COMMANDS[name]))

    reference = statistics.median(seconds[REFERENCE])
    print(
        f"\nCLI start-up, {args.runs} runs each (alternating), {os.cpu_count()} cores, "
        f"python {sys.version.split()[0]}, {os.uname().machine}"
    )
    print(f"{'command':38s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'median / reference':>19s}")
    for name in names:
        runs = seconds[name]
        median = statistics.median(runs)
        print(f"{name:38s} {median:9.2f} {min(runs):7.2f} {max(runs):7.2f} {median / reference:19.2f}")


if __name__ == "__main__":
    main()
