"""``lmlab fanout <dvc.yaml>...``: run pipelines' stale stages side by side, here or as a cluster's job array,
and record each in the lock file as `dvc repro` would (`lmlab.tools.fanout` says why that is honest)."""

from __future__ import annotations

import argparse
import json
import logging
import threading
from functools import partial
from pathlib import Path

from rich.console import Console

from lmlab.core.errors import LmlabError

SUMMARY = "run DVC pipelines' stale stages N at a time, or list them for a job array, then dvc commit each"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lmlab fanout",
        description="Run the stale stages of DVC pipeline files N at a time, each as soon as the stale stages "
        "upstream of it are committed (their own commands, from their wdir; the first file's stages first, so that "
        "a second study keeps the cores busy through the first one's last stages), and `dvc commit` each as it "
        "finishes if nothing it depends on changed while it ran. A stage downstream of a stale stage not run here "
        "(another file's, another group's) is left for `dvc repro`. "
        "--list shows what would run and touches nothing. Elsewhere: --hand-out prints one shell line per stage "
        "for a job array (sbatch --array, GNU parallel), noting each and removing its outputs as a run would, "
        "and --commit records the ones that finished.",
    )
    p.add_argument("dvcfiles", nargs="+", metavar="dvcfile", help="pipeline files, e.g. synth/dvc.yaml")
    p.add_argument("-j", "--jobs", type=int, default=2, help="stages at once (default 2; one thread each for lmlab)")
    p.add_argument(
        "--only",
        default="",
        help="only these stage groups or stage-name patterns, comma-separated (e.g. mqar,parity or "
        "'mqar_long@transformer-*')",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--list", action="store_true", help="print the stale stages' shell lines and run nothing (changes nothing)"
    )
    mode.add_argument(
        "--hand-out",
        action="store_true",
        help="hand the stages out to run elsewhere: print their shell lines, note their deps and remove their "
        "outputs (but persistent ones), as a run would; --commit after",
    )
    mode.add_argument("--commit", action="store_true", help="commit the handed-out stages that have finished")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if args.jobs < 1:
        console.print(f"lmlab fanout: error: --jobs {args.jobs}: give 1 or more")
        return 2
    from dvc.repo import Repo  # DVC's import takes a second: not for --help

    logging.getLogger("dvc.dvcfile").setLevel(logging.WARNING)  # not "Updating lock file" at each commit: we say it

    from lmlab.tools import fanout

    try:
        root = Path(Repo.find_root())
        dvcfiles = [in_repository(root, dvcfile) for dvcfile in args.dvcfiles]
        if args.commit:
            return commit(root, dvcfiles, console)
        with Repo(str(root)) as repo:
            stages, left = fanout.stale_stages(repo, dvcfiles, [g for g in args.only.split(",") if g])
            after = f"; {len(left)} left for `dvc repro {' '.join(args.dvcfiles)}` after" if left else ""
            if args.list:
                for stage in stages:
                    print(fanout.command_line(stage))
                console.print(
                    f"{len(stages)} stale stages of {', '.join(dvcfiles)} (nothing run, nothing changed){after}"
                )
                return 0
            if args.hand_out:  # an array's tasks run at once: only those whose upstream stages are up to date
                ready = [stage for stage in stages if not stage.after]
                for stage in ready:  # each noted and its outputs removed, under the repository's lock
                    handed = fanout.under_lock(root, partial(fanout.hand_out, stage=stage), console.print)
                    print(fanout.command_line(handed))
                later = len(stages) - len(ready) + len(left)
                console.print(
                    f"{len(ready)} stages handed out; then `lmlab fanout {' '.join(args.dvcfiles)} --commit`"
                    + (f"; {later} wait for them (hand out again after the commit)" if later else "")
                )
                return 0
        console.print(
            f"{len(stages)} stale stages of {', '.join(dvcfiles)}, {args.jobs} at a time, each as soon as the "
            f"stages upstream of it are committed (logs in {root / fanout.FOLDER}){after}"
        )
        failed = fanout.run_here(root, stages, args.jobs, console.print, threading.Event())
    except LmlabError as err:
        console.print(f"lmlab fanout: error: {err}")
        return 2
    console.print(f"{len(stages) - len(failed)} of {len(stages)} stages done and committed")
    return 1 if failed else 0


def in_repository(root: Path, dvcfile: str) -> str:
    """`dvcfile` relative to the repository's root, as DVC names a stage's file."""
    try:
        return Path(dvcfile).resolve().relative_to(root).as_posix()
    except ValueError:
        raise LmlabError(f"{dvcfile} is outside the DVC repository ({root})") from None


def commit(root: Path, dvcfiles: list[str], console: Console) -> int:
    """Commit every stage of `dvcfiles` handed out by --hand-out whose command has finished."""
    from dvc.exceptions import DvcException

    from lmlab.tools import fanout

    notes = [json.loads(note.read_text()) for note in sorted((root / fanout.FOLDER).glob("*.json"))]
    notes = [note for note in notes if note["dvcfile"] in dvcfiles]
    if not notes:
        console.print(f"no stage of {', '.join(dvcfiles)} is handed out: `lmlab fanout --hand-out` hands them out")
        return 1
    left = 0
    for note in notes:
        address = note["stage"]
        try:
            problem = fanout.commit_if_unchanged(root, address, console.print)
        except DvcException as err:  # its outputs are not there: still running, or failed
            problem = f"not finished ({err})"
        left += problem is not None
        console.print(f"not committed  {address}: {problem}" if problem else f"committed  {address}")
    console.print(f"{len(notes) - left} of {len(notes)} handed-out stages committed")
    return 1 if left else 0
