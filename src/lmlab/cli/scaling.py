"""``lmlab scaling fit``: scaling laws per family fitted to any pretraining runs (run folders, W&B runs or a
sweep's); ``lmlab scaling point``: one finished run as a point of the scaling study (scaling/dvc.yaml's stages)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmlab.core.errors import LmlabError

SUMMARY = "fit scaling laws per family (frontier, L(C), L(N), N_opt, crossovers) to pretraining runs"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="lmlab scaling", description=SUMMARY + "; the method: docs/scaling.md")
    verbs = top.add_subparsers(dest="verb", required=True, metavar="{fit,point}")
    p = verbs.add_parser(
        "fit",
        help="fit the laws to run folders or W&B runs and write scaling.md and its plots",
        description="Fit each family's compute frontier L(C) = a C^-b + c, L(N) in non-embedding parameters and "
        "the compute-optimal size N_opt(C) = k C^e, with 95% bootstrap intervals over runs, and where each "
        "family's frontier crosses the reference's; writes scaling.md and its plots into --out. The method and "
        "its rules: docs/scaling.md.",
    )
    p.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help="folders searched for pretraining run folders (metrics.json and config); one holding none is read "
        "as W&B runs",
    )
    p.add_argument("--project", help="read the runs from the W&B API instead: entity/project")
    p.add_argument("--group", help="W&B runs: only those of this group")
    p.add_argument("--tag", action="append", default=[], help="W&B runs: only those with this tag (repeatable)")
    p.add_argument("--sweep", help="W&B runs: only those of this sweep (W&B sweep id, or an `lmlab sweep` id)")
    # not under reports/: that folder is the report stage's DVC output, which `dvc repro` replaces
    p.add_argument("--out", type=Path, default=Path("scaling_fits"), help="report folder (default: scaling_fits)")
    p.add_argument("--family-key", default="model.family", help="config key naming the family (default: model.family)")
    p.add_argument("--size-key", default="model.width", help="config key naming the size (default: model.width)")
    p.add_argument("--reference", default="transformer", help="the family crossovers are measured against")
    p.add_argument(
        "--curves",
        action="store_true",
        help="fit the validation curves' points too, flagged as such (a cosine run's intermediate loss is not "
        "the loss of a run that long: use the runs' ends where you can)",
    )
    p.add_argument("--resamples", type=int, help="bootstrap resamples (default: the fits' own, 1000)")
    point = verbs.add_parser(
        "point",
        help="write a finished run's end as a point of the scaling study (its metrics file)",
        description="Write the run's final figures, family, size, budget, seed, validation curve and (with "
        "--position-windows) its last checkpoint's test loss by position as one JSON file: the scaling study's "
        "metrics file, which `lmlab report study=scaling` reads (scaling/dvc.yaml runs it after each budget).",
    )
    point.add_argument("run", type=Path, help="a finished pretraining run folder")
    point.add_argument("--budget", type=float, required=True, help="the grid's budget this run ended (a label)")
    point.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    point.add_argument("--size-key", default="model.width", help="config key naming the size (default: model.width)")
    point.add_argument(
        "--position-windows",
        type=int,
        default=0,
        help="test windows of the training length for the loss by position (default 0: not measured)",
    )
    return top


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return fit(args) if args.verb == "fit" else point(args)


def point(args: argparse.Namespace) -> int:
    from lmlab.core.atomic import write_json
    from lmlab.tools.scaling_points import study_point

    try:
        if args.position_windows < 0:
            raise LmlabError(f"--position-windows {args.position_windows}: give 0 (none) or more windows")
        if not (args.run / "metrics.json").is_file():
            raise LmlabError(f"{args.run}: no metrics.json; give a finished pretraining run folder")
        write_json(args.out, study_point(args.run, args.budget, args.position_windows, args.size_key))
    except LmlabError as err:
        print(f"lmlab scaling point: error: {err}", file=sys.stderr)
        return 2
    print(f"lmlab scaling point: {args.run} at budget {args.budget:g} -> {args.out}")
    return 0


def fit(args: argparse.Namespace) -> int:
    from lmlab.analysis.power_laws import RESAMPLES
    from lmlab.analysis.scaling import write_files
    from lmlab.tools.scaling_runs import read_runs
    from lmlab.tools.wandb_runs import Filters

    try:
        if not args.paths and not args.project:
            raise LmlabError("give the folders that hold the runs, or --project entity/project")
        args.resamples = RESAMPLES if args.resamples is None else args.resamples
        if args.resamples < 100:
            raise LmlabError(f"--resamples {args.resamples}: at least 100 for a 95% interval")
        filters = Filters(group=args.group, tags=tuple(args.tag), sweep=args.sweep, job_type="pretrain")
        measured = read_runs(args.paths, args.project, filters, args.family_key, args.size_key, args.curves)
        written = write_files(measured, args.out, args.resamples, args.reference)
    except LmlabError as err:
        print(f"lmlab scaling fit: error: {err}", file=sys.stderr)
        return 2
    print(written[0].read_text(), end="")
    print(f"lmlab scaling fit: wrote {', '.join(map(str, written))}")
    return 0
