"""``lmlab scaling``: scaling laws per family fitted to any pretraining runs (run folders, W&B runs or a sweep's)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmlab.core.errors import LmlabError

SUMMARY = "fit scaling laws per family (frontier, L(C), L(N), N_opt, crossovers) to pretraining runs"


def parser() -> argparse.ArgumentParser:
    from lmlab.analysis.power_laws import RESAMPLES

    p = argparse.ArgumentParser(
        prog="lmlab scaling",
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
    p.add_argument("--resamples", type=int, default=RESAMPLES, help=f"bootstrap resamples (default: {RESAMPLES})")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from lmlab.analysis.scaling import write_files
    from lmlab.tools.scaling_runs import read_runs
    from lmlab.tools.wandb_runs import Filters

    try:
        if not args.paths and not args.project:
            raise LmlabError("give the folders that hold the runs, or --project entity/project")
        if args.resamples < 100:
            raise LmlabError(f"--resamples {args.resamples}: at least 100 for a 95% interval")
        filters = Filters(group=args.group, tags=tuple(args.tag), sweep=args.sweep, job_type="pretrain")
        measured = read_runs(args.paths, args.project, filters, args.family_key, args.size_key, args.curves)
        written = write_files(measured, args.out, args.resamples, args.reference)
    except LmlabError as err:
        print(f"lmlab scaling: error: {err}", file=sys.stderr)
        return 2
    print(written[0].read_text(), end="")
    print(f"lmlab scaling: wrote {', '.join(map(str, written))}")
    return 0
