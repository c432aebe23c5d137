"""What the scaling grid (scaling/params.yaml) costs on this machine, before running it: one pretraining step per
family and width, timed on one thread (as `lmlab fanout scaling/dvc.yaml` runs each stage), and the hours its
stages take at that rate.

    python bench/scaling_cost.py [--grid scaling/params.yaml] [--scale tiny] [--jobs 2] [--steps 5] [--warmup 2]

Each point composes `lmlab pretrain` as the study's stage does (the family, params.yaml's `scale`, `model.width`,
`model.embed_dim=null`, Gated DeltaNet's `model.head_dim`), builds the model and times forward, backward and
AdamW's step on a training batch (`batches.batch_size` x `batches.bptt` tokens) after `--warmup` untimed steps,
the median of `--steps`, and a validation batch's forward. A stage trains `short` steps, then continues from each
budget's cooldown start to the next (wsd: `optim.cooldown`), validating every `val_every` steps on
`batches.val_max_tokens`. One JSON line per point goes to stdout, a table to stderr with the grid's hours on
`--jobs` cores. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml
from hydra import compose, initialize_config_dir
from timing import step_seconds

from lmlab.cli.schemas import register_configs, typed
from lmlab.core.malloc import steady_malloc
from lmlab.models import build_model, family_config
from lmlab.training.optim import cooldown_start

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 8000  # the main pipeline's tokenizer


def seconds(overrides: list[str], args: argparse.Namespace) -> tuple[float, float, object]:
    """A training step's and a validation batch's seconds for the composed run, and its config."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = typed(compose(config_name="pretrain", overrides=[*overrides, "logger=none"]))
    torch.manual_seed(0)
    model = build_model(family_config(cfg.model), VOCAB).train()
    tokens = torch.randint(0, VOCAB, (cfg.batches.batch_size, model.window(cfg.batches.bptt) + 1))
    return (*step_seconds(model, tokens[:, :-1], tokens[:, 1:], args.steps, args.warmup), cfg)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", type=Path, default=ROOT / "scaling/params.yaml")
    p.add_argument("--jobs", type=int, default=2, help="stages at once (one thread each)")
    p.add_argument(
        "--scale", default=yaml.safe_load((ROOT / "params.yaml").read_text())["scale"], help="default: params.yaml's"
    )
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    steady_malloc()
    register_configs("pretrain")
    grid = yaml.safe_load(args.grid.read_text())
    points = [(family, {"width": width}) for family in grid["families"] for width in grid["widths"]]
    points += [("gated_deltanet", size) for size in grid.get("gated_deltanet", {}).get("sizes", [])]
    budgets = list(grid["budgets"].values())
    total = 0.0
    print(f"{'family':>15} {'width':>6} {'ms/step':>8} {'ms/val batch':>12} {'min/stage':>10}", file=sys.stderr)
    for family, size in points:
        overrides = [f"model={family}", f"scale={args.scale}", "model.embed_dim=null"]
        overrides += [f"model.{key}={value}" for key, value in size.items()]
        step, forward, cfg = seconds(overrides, args)
        steps, start = 0, 0
        for budget in budgets:  # each budget continues the previous one's run from its cooldown start
            steps += budget - start
            start = cooldown_start(cfg.optim, budget)
        per_val = (cfg.batches.val_max_tokens or 0) / (cfg.batches.batch_size * cfg.batches.bptt)
        validations = steps / grid["val_every"]
        stage = steps * step + validations * per_val * forward
        total += stage * len(grid["seeds"])
        print(json.dumps({"family": family, **size, "step_s": step, "val_batch_s": forward, "stage_s": stage}))
        print(
            f"{family:>15} {size['width']:>6} {step * 1e3:>8.1f} {forward * 1e3:>12.1f} {stage / 60:>10.1f}",
            file=sys.stderr,
        )
    print(
        f"{len(points) * len(grid['seeds'])} stages: {total / 3600:.1f} thread-hours, {total / 3600 / args.jobs:.1f} h "
        f"on {args.jobs} cores (one thread each)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
