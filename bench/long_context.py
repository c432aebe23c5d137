"""Loss by position and past the training window for pretraining checkpoints, side by side.

What `lmlab evaluate` measures for the pipeline's runs (`lmlab.jobs.long_context`), for any checkpoints: e.g. runs
trained longer than `make run`'s budget, where a model has learned to use its context.

    .venv/bin/python bench/long_context.py outputs/pretrain/transformer/<time>/checkpoints/best.ckpt ...
    .venv/bin/python bench/long_context.py --window 64 --windows 256 <checkpoints>
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lmlab.data.corpus import Corpus
from lmlab.jobs.long_context import beyond_training, by_position, stretched, window_losses
from lmlab.training.checkpoints import load_language_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--window", type=int, default=64, help="the training window (bptt or context)")
    parser.add_argument("--windows", type=int, default=256, help="test windows of 4x the training window")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    longest = 4 * args.window
    for path in args.checkpoints:
        lm = load_language_model(path)
        corpus = Corpus.open(Path(lm.corpus["folder"]), how_to_make="tokenize the corpus the run was trained on")
        model = stretched(lm.model, longest) or lm.model
        length = longest if model.max_positions is None or model.max_positions >= longest else args.window
        nats = window_losses(model, corpus.tokens("test"), length, args.windows, 16, "cpu")
        family = lm.model.cfg.family
        print(f"\n{family} ({path}, step {lm.step}): loss by position, {len(nats)} windows from a fresh state")
        print("  " + "  ".join(f"[{r['position_from']},{r['position_to']}) {r['loss']:.3f}" for r in by_position(nats)))
        for row in beyond_training(nats, args.window):
            where = f"positions {row['position_from']}-{row['position_to'] - 1}"
            print(f"  {row['factor']}x ({where}): {row['loss']:.3f} [{row['low']:.3f}, {row['high']:.3f}]")


if __name__ == "__main__":
    main()
