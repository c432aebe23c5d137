"""``lmlab compare``: rank W&B runs read back from run folders or the W&B API (table, markdown, CSV, plots)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from lmlab.core.errors import LmlabError
from lmlab.tools.rank import write_ranking
from lmlab.tools.wandb_runs import Filters, load_runs

SUMMARY = "rank runs read back from offline W&B run folders or the W&B API (table, markdown, CSV, plots)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lmlab compare",
        description="Rank W&B runs by one metric: a table here, and compare.md, compare.csv, curves.png and "
        "best_per_family.png in --out. Only finished runs are ranked; failed, crashed and running ones are "
        "listed after them with their state.",
    )
    p.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help="folders searched recursively for W&B run folders (offline-run-*); default: outputs and data/runs",
    )
    p.add_argument("--project", help="read the runs from the W&B API instead: entity/project")
    p.add_argument("--group", help="only runs of this group (the experiment `name`)")
    p.add_argument("--tag", action="append", default=[], help="only runs with this tag (repeat: with all of them)")
    p.add_argument("--sweep", help="only runs of this sweep: a W&B sweep id, or an `lmlab sweep` id (tag sweep:<id>)")
    p.add_argument(
        "--job-type",
        choices=("pretrain", "finetune", "evaluate"),
        help="only runs of this job type (default: the job types that log --metric)",
    )
    p.add_argument("--metric", default="val/bpb", help="the metric to rank by (default: val/bpb)")
    direction = p.add_mutually_exclusive_group()
    direction.add_argument(
        "--max",
        dest="maximize",
        action="store_true",
        default=None,
        help="higher is better (default for acc, f1, tokens_per_sec)",
    )
    direction.add_argument("--min", dest="maximize", action="store_false", help="lower is better (default otherwise)")
    # not under reports/: that folder is the report stage's DVC output, which `dvc repro` replaces
    p.add_argument("--out", type=Path, default=Path("compare"), help="report folder (default: compare)")
    p.add_argument("--family-key", default="model.family", help="config key naming the family (default: model.family)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    filters = Filters(group=args.group, tags=tuple(args.tag), sweep=args.sweep, job_type=args.job_type)
    try:
        runs, sources = load_runs(args.paths, args.project, filters)
        write_ranking(runs, args.metric, args.maximize, args.family_key, args.out, sources, Console())
    except LmlabError as err:
        print(f"lmlab compare: error: {err}", file=sys.stderr)
        return 2
    return 0
