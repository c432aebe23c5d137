"""A study's wall time two ways on this machine: `lmlab fanout -j 2` (two one-thread trainings side by side, as the
studies run) against `dvc repro` (one stage at a time, each training on two threads), with the figures of both.

    python bench/fanout_wall.py [--rounds 2] [--steps 200] [--families lstm,transformer,mingru]

The study is the synthetic one (synth/dvc.yaml) on a small grid: MQAR 64/4 at width 64 for each family, the wider
and the longer setting for the Transformer, parity at width 64 for each family and Mamba-2 with negative
eigenvalues; `--steps` steps each (too few to solve, so that no run stops early and both ways train the same
steps). Each measurement runs in a fresh copy of the project under a temporary folder, the report stage included;
the ways alternate, so that a noisy machine slows them alike. Prints each round's wall times, their medians and
ratio, and the largest difference between the two ways' final validation loss and accuracy over the runs of the
last round (one thread against two sums in another order: not bit-identical). Asserts nothing; run it on a
quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' throwaway project copy (tests/helpers/project.py)
from tests.helpers.project import copy_files, copy_project  # noqa: E402

BIN = Path(sys.executable).parent
WAYS = {
    "fanout -j 2, 1 thread each": (
        1,
        [["lmlab", "fanout", "synth/dvc.yaml", "-j", "2"], ["dvc", "repro", "synth/dvc.yaml"]],
    ),
    "dvc repro, 2 threads": (2, [["dvc", "repro", "synth/dvc.yaml"]]),
}


def project(dest: Path, families: list[str], steps: int, threads: int) -> Path:
    """A copy of the project whose synth study is the small grid, its stages training on `threads` threads."""
    copy_files(copy_project(dest), ("synth/dvc.yaml", "synth/params.yaml"))
    params = yaml.safe_load((dest / "synth/params.yaml").read_text())
    params["families"], params["recall_families"] = families, ["transformer"]
    params["mqar"] |= {"steps": steps, "val_every": steps // 2, "lrs": [0.003]}
    params["mqar"]["short"]["widths"] = [64]
    params["mqar"]["wide"]["widths"] = [128]
    params["mqar"]["long"]["widths"] = [64]
    params["parity"] |= {"steps": steps, "val_every": steps // 2, "lrs": [0.003], "negative_eigenvalues": ["mamba2"]}
    (dest / "synth/params.yaml").write_text(yaml.safe_dump(params))
    conf = dest / "conf/synth.yaml"
    synth = yaml.safe_load(conf.read_text())
    synth["trainer"]["threads"] = threads
    conf.write_text(yaml.safe_dump(synth, sort_keys=False))
    return dest


def measure(way: str, tmp: Path, args: argparse.Namespace) -> tuple[float, dict[str, dict[str, float]]]:
    """Wall seconds of the study run `way` in a fresh copy, and each run's final figures."""
    threads, commands = WAYS[way]
    families = args.families.split(",")
    root = project(Path(tempfile.mkdtemp(dir=tmp)) / "project", families, args.steps, threads)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    started = time.perf_counter()
    for command in commands:
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"{' '.join(command)} failed in {root}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    seconds = time.perf_counter() - started
    figures = {
        str(path.relative_to(root / "synth/metrics")): json.loads(path.read_text())
        for path in sorted((root / "synth/metrics").rglob("*.json"))
    }
    shutil.rmtree(root)
    return seconds, {name: {k: m[k] for k in ("val/loss", "val/acc", "train/steps")} for name, m in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--families", default="lstm,transformer,mingru")
    args = parser.parse_args()
    names = list(WAYS)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    figures: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="fanout-wall-") as folder:
        for round_ in range(args.rounds):
            for name in names[round_ % 2 :] + names[: round_ % 2]:
                wall, figures[name] = measure(name, Path(folder), args)
                seconds[name].append(wall)
                print(f"round {round_ + 1}: {name}: {wall:.0f} s ({len(figures[name])} runs)", flush=True)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name in names:
        print(f"{name:>28}: median {medians[name]:.0f} s of {', '.join(f'{s:.0f}' for s in seconds[name])}")
    print(f"dvc repro (2 threads) / fanout (1 thread x 2): {medians[names[1]] / medians[names[0]]:.2f}x the wall time")
    one, two = (figures[name] for name in names)
    if one.keys() != two.keys():
        sys.exit(f"the two ways made different runs: {sorted(one)} and {sorted(two)}")
    for key in ("val/loss", "val/acc"):
        worst = max(one, key=lambda run: abs(one[run][key] - two[run][key]))
        print(f"largest |difference| in {key}: {abs(one[worst][key] - two[worst][key]):.2e} ({worst})")
    print(
        f"steps: {sorted({m['train/steps'] for m in one.values()})} (1 thread), "
        f"{sorted({m['train/steps'] for m in two.values()})} (2 threads)"
    )


if __name__ == "__main__":
    main()
