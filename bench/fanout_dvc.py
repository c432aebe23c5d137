"""`lmlab fanout`'s own cost per stage: the DVC work of handing a stage out and committing it, against `dvc status`
and `dvc commit --force` of the same stage (DVC's own cost, the reference), measured in the same run.

    python bench/fanout_dvc.py [--stages 150 600] [--rounds 3]   # about 5 minutes

Each stage costs its lane this much between one training and the next: DVC reads the stage's lock file, a YAML file
of every stage of its pipeline, each time it collects the stage and again to update it (18,679 lines for
transfer/dvc.lock's 135 stages: 2.4 s a read here). The project is a throwaway git + DVC repository with a `foreach`
of `--stages` stages, each with the deps and outputs of a study's stage (code files, params, a data file, a metrics
file and a folder), all committed: 600 of them make a lock of a study's size (a study's stage has more deps). Each
round times fanout's hand-out (`hand_out` after the upstream check) and its commit (`commit_if_unchanged`), then the
reference, of one stage (a commit of a finished stage rewrites the same entry), alternating, and counts the lock's
reads. Prints medians of the rounds and the ratio.
Asserts nothing; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from dvc.repo import Repo
from dvc.utils import strictyaml
from dvc.utils.serialize import _yaml

from lmlab.tools import fanout

BIN = Path(sys.executable).parent


def project(root: Path, stages: int) -> None:
    """A repository whose `run` group has `stages` finished, committed stages, each like a study's."""
    root.mkdir()
    for name in ("code_a.py", "code_b.py", "code_c.py", "data.bin"):
        (root / name).write_text(name * 1000)
    (root / "params.yaml").write_text(yaml.safe_dump({"steps": 300, "lr": 0.003, "seeds": list(range(stages))}))
    cmd = "mkdir -p runs/${item} && echo ${item} > runs/${item}/x && echo '{\"loss\": ${item}}' > metrics/${item}.json"
    spec = {
        "stages": {
            "run": {
                "foreach": "${seeds}",
                "do": {
                    "cmd": cmd,
                    "deps": ["code_a.py", "code_b.py", "code_c.py", "data.bin"],
                    "params": ["steps", "lr"],
                    "outs": ["runs/${item}"],
                    "metrics": [{"metrics/${item}.json": {"cache": False}}],
                },
            }
        }
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump(spec))
    for k in range(stages):  # the outputs the stages' commands write, made here: one commit records them all
        outputs(root, k)
    for command in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"], [str(BIN / "dvc"), "commit", "-f", "-q"]):
        subprocess.run(command, cwd=root, check=True, capture_output=True)


def outputs(root: Path, k: int) -> None:
    """What stage `run@k`'s command writes."""
    (root / f"runs/{k}").mkdir(parents=True, exist_ok=True)
    (root / f"runs/{k}/x").write_text(f"{k}\n")
    (root / "metrics").mkdir(exist_ok=True)
    (root / f"metrics/{k}.json").write_text(f'{{"loss": {k}}}\n')


def timed(work: Callable[[], None]) -> tuple[float, int]:
    """Seconds and lock-file reads of `work` (DVC reads a lock by `strictyaml.load`, and again to update it)."""
    reads = 0
    load, update = strictyaml.parse_yaml, _yaml.parse_yaml_for_update

    def counted(parse: Callable[..., Any]) -> Callable[..., Any]:
        def parse_and_count(text: str, path: str, *args: Any, **kwargs: Any) -> Any:
            nonlocal reads
            reads += str(path).endswith(".lock")
            return parse(text, path, *args, **kwargs)

        return parse_and_count

    strictyaml.parse_yaml, _yaml.parse_yaml_for_update = counted(load), counted(update)
    try:
        started = time.perf_counter()
        work()
        return time.perf_counter() - started, reads
    finally:
        strictyaml.parse_yaml, _yaml.parse_yaml_for_update = load, update


def ways(root: Path) -> dict[str, Callable[[], None]]:
    address = "dvc.yaml:run@0"
    stage = fanout.Stage("dvc.yaml", address, ".", "", frozenset({"dvc.yaml:run@1"}))

    def by_fanout() -> None:
        def check_and_hand_out(repo: Repo) -> None:
            now = fanout.collect(repo, stage.dvcfile, address)
            assert not fanout.still_stale(now)  # a finished stage: what fanout checks, then hands out anyway
            fanout.hand_out(repo, stage, now)

        fanout.under_lock(root, check_and_hand_out)
        outputs(root, 0)  # what the command writes, again (hand-out removed them)
        assert fanout.commit_if_unchanged(root, address) is None

    def by_dvc() -> None:
        with Repo(str(root)) as repo:
            target = fanout.target(repo, stage.dvcfile, address)
            assert not repo.status(targets=[target])
            repo.commit(target, force=True)

    return {"fanout: hand out + commit": by_fanout, "dvc status + dvc commit --force": by_dvc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", type=int, nargs="+", default=[150, 600])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for stages in args.stages:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "project"
            project(root, stages)
            os.chdir(root)  # as `lmlab fanout` runs: in the repository (DVC's targets are relative paths)
            lines = len((root / "dvc.lock").read_text().splitlines())
            seconds: dict[str, list[float]] = {}
            reads: dict[str, int] = {}
            for _ in range(args.rounds):
                for name, work in ways(root).items():
                    took, read = timed(work)
                    seconds.setdefault(name, []).append(took)
                    reads[name] = read
            print(f"{stages} stages, dvc.lock {lines:,} lines, median of {args.rounds}:")
            for name, times in seconds.items():
                print(f"  {name:34s} {statistics.median(times):6.2f} s a stage, {reads[name]} lock reads")
            mine, reference = (statistics.median(times) for times in seconds.values())
            print(f"  ratio fanout / dvc: {mine / reference:.2f}")


if __name__ == "__main__":
    main()
