"""``lmlab export``: a pretraining run (or checkpoint) as a self-contained folder, optionally pushed to the Hub."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmlab.core.errors import LmlabError

SUMMARY = "a pretraining run as a self-contained folder (safetensors, config, tokenizer, model card); --push-to-hub"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lmlab export",
        description="Write a pretraining run's model as a folder that lmlab.load() and `lmlab generate "
        "checkpoint=<folder>` read on any machine: model.safetensors (no pickle), config.json (the family and "
        "every model key), tokenizer.model and a model card (README.md). A failed export leaves no folder "
        "behind. docs/hub.md describes the folder.",
    )
    p.add_argument("source", type=Path, help="a pretraining run folder (its checkpoints/best.ckpt) or checkpoint")
    p.add_argument("out", type=Path, help="the folder to write: a new one, or an export it replaces")
    p.add_argument(
        "--evaluation",
        nargs=2,
        type=Path,
        metavar=("METRICS_JSON", "EVAL_FOLDER"),
        help="the `lmlab evaluate` of this run whose test figures the card shows (its metrics file and its "
        "<eval_dir>/<family> folder); default: where the pipeline evaluates a pipeline run",
    )
    p.add_argument(
        "--format",
        choices=("lmlab", "transformers"),
        default="lmlab",
        help="lmlab (default: every family, read by lmlab.load) or transformers (the Transformer family as "
        "GPT-NeoX, read by AutoModelForCausalLM and lm_eval --model hf)",
    )
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="then push the folder to this Hugging Face Hub repo")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    return p


def main(argv: list[str]) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.private and not args.push_to_hub:
        p.error("--private applies to the repo --push-to-hub creates: give --push-to-hub REPO_ID")
    # the job's code (torch) only once the arguments are read: `lmlab --help` imports this module for SUMMARY
    from lmlab.hub.card import Evaluation
    from lmlab.hub.export import export
    from lmlab.hub.remote import check_repo_id, push

    try:
        if args.push_to_hub:
            check_repo_id(args.push_to_hub)
        evaluation = (
            Evaluation(*args.evaluation, "run `lmlab evaluate` for this run, or give its files")
            if args.evaluation
            else None
        )
        loaded = export(args.source, args.out, evaluation, args.push_to_hub, args.format == "transformers")
        print(f"exported {loaded.config['family']} ({loaded.model.num_params:,} parameters) to {args.out}")
        if args.push_to_hub:
            print(f"pushed {args.out} to {push(args.out, args.push_to_hub, args.private)}")
    except LmlabError as err:
        print(f"lmlab export: error: {err}", file=sys.stderr)
        return 2
    return 0
