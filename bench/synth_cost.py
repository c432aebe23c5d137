"""What a synthetic-task grid costs on this machine, before running it: one optimizer step per family, width and
setting, timed on one thread (as `dvc repro synth/dvc.yaml` runs each stage), and the hours a run of `--budget`
steps would take at that rate.

    python bench/synth_cost.py [--task mqar] [--families rnn,lstm,...] [--widths 64,128,256]
        [--settings 64:4,128:8,256:16] [--budget 12000] [--steps 5] [--warmup 2]

Each point composes `lmlab synth` as the pipeline does (`conf/synth.yaml`, `conf/synth_model/`, the family's
`model.width`; for MQAR `task.seq_len:task.pairs` from `--settings`, for parity `task.seq_len` alone), builds
the model as the job does (`jobs.synth.fitted_model_config`), and times forward, backward and AdamW's step on
a training batch of the task (`task.batch_size` examples), after `--warmup` untimed steps; the median of
`--steps`. Validation, logging and Lightning's loop are left out (about 1 ms a step against the plain loop:
docs/benchmarks.md). One JSON line per point goes to stdout, a table to stderr with the sum over the grid: the
worst case, every run at its budget; training to a criterion stops the solvers early. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from timing import step_seconds

from lmlab.cli.schemas import register_configs, typed
from lmlab.core.malloc import steady_malloc
from lmlab.data.synthetic import IGNORE
from lmlab.jobs.synth import fitted_model_config
from lmlab.models import FAMILIES, build_model
from lmlab.tasks.synthetic import TRAIN, make_examples, vocab_size

ROOT = Path(__file__).resolve().parents[1]


def train_seconds(
    task: str, family: str, width: int, seq_len: int, pairs: int | None, args: argparse.Namespace
) -> float:
    overrides = [f"task={task}", f"model={family}", f"model.width={width}", f"task.seq_len={seq_len}", "logger=none"]
    overrides += [f"task.pairs={pairs}"] if pairs else []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = typed(compose(config_name="synth", overrides=overrides))
    torch.manual_seed(0)
    model = build_model(fitted_model_config(cfg), vocab_size(cfg.task)).train()
    batch = make_examples(cfg.task, cfg.task.batch_size, seq_len, (TRAIN,))
    return step_seconds(model, batch.inputs, batch.targets, args.steps, args.warmup, IGNORE, forward=False)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="mqar", choices=["mqar", "parity"])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--widths", default="64,128,256")
    parser.add_argument("--settings", default="64:4,128:8,256:16", help="seq_len:pairs (MQAR) or seq_len (parity)")
    parser.add_argument("--budget", type=int, default=12000, help="steps a run trains at most")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    steady_malloc()
    register_configs("synth")
    rows = []
    for setting in args.settings.split(","):
        seq_len, _, pairs = setting.partition(":")
        for width in map(int, args.widths.split(",")):
            for family in args.families.split(","):
                seconds = train_seconds(args.task, family, width, int(seq_len), int(pairs) if pairs else None, args)
                rows.append(
                    {
                        "task": args.task,
                        "family": family,
                        "width": width,
                        "seq_len": int(seq_len),
                        "pairs": int(pairs) if pairs else None,
                        "ms_per_step": round(seconds * 1000, 2),
                        "budget_hours": round(seconds * args.budget / 3600, 3),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    print(
        f"\n{'family':15s} {'width':>5s} {'T':>5s} {'pairs':>5s} {'ms/step':>8s} {'h at budget':>12s}", file=sys.stderr
    )
    for r in rows:
        print(
            f"{r['family']:15s} {r['width']:5d} {r['seq_len']:5d} {r['pairs'] or '':>5} {r['ms_per_step']:8.1f} "
            f"{r['budget_hours']:12.2f}",
            file=sys.stderr,
        )
    total = sum(r["budget_hours"] for r in rows)
    print(
        f"\n{len(rows)} runs (one learning rate): {total:.1f} h of one thread if every run trains {args.budget:,} "
        f"steps; x the learning rates tried",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
