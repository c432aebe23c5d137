"""The two forms of a recurrent family: a whole window at once (training's parallel form) against a token at a time
with the carried state (generation's and the recurrence's own form), forward and backward.

    python bench/recurrence.py [--families mingru,minlstm,mamba2,gated_deltanet] [--lengths 256,1024,4096]
        [--batch 8] [--rounds 3]

Each family is built at its shipped size (conf/model/<family>.yaml, vocabulary 8000, dropout off). For each
length T one round times, on the same random tokens, forward + backward of the sum of the log-probabilities
over the window (parallel) and over T single-token calls chained by the state (step); rounds alternate the
order (P S S P ...), medians are reported. `max_abs_diff` compares the two forms' log-probabilities (no
gradient), the agreement the family contract asks to 1e-4. One JSON line per family and length goes to
stdout (`family`, `T`, `parallel_tokens_per_sec`, `step_tokens_per_sec`, `speedup`, `max_abs_diff`), a
table to stderr. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from lmlab.core.malloc import steady_malloc
from lmlab.models import FAMILIES, LanguageModel, build_model

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 8000


def shipped(family: str) -> LanguageModel:
    values = yaml.safe_load((ROOT / "conf" / "model" / f"{family}.yaml").read_text())
    values |= {"embed_dropout": 0.0, "dropout": 0.0, "output_dropout": 0.0}
    torch.manual_seed(0)
    return build_model(values, VOCAB)


def parallel(model: LanguageModel, tokens: torch.Tensor) -> torch.Tensor:
    logits, _ = model(tokens, model.init_state(tokens.size(0)))
    return logits.log_softmax(-1)


def stepwise(model: LanguageModel, tokens: torch.Tensor) -> torch.Tensor:
    state, steps = model.init_state(tokens.size(0)), []
    for t in range(tokens.size(1)):
        logits, state = model(tokens[:, t : t + 1], state)
        steps.append(logits.log_softmax(-1))
    return torch.cat(steps, dim=1)


def seconds(
    form: Callable[[LanguageModel, torch.Tensor], torch.Tensor], model: LanguageModel, tokens: torch.Tensor
) -> float:
    """Forward and backward of one form over the window."""
    model.zero_grad(set_to_none=True)
    started = time.perf_counter()
    form(model, tokens).sum().backward()
    return time.perf_counter() - started


def bench(family: str, length: int, batch: int, rounds: int) -> dict[str, float | int | str]:
    model = shipped(family).train()
    tokens = torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(length))
    with torch.no_grad():
        diff = (parallel(model, tokens) - stepwise(model, tokens)).abs().max().item()
    seconds(parallel, model, tokens[:, : min(length, 64)])  # warm-up: first-call allocations
    times: dict[str, list[float]] = {"parallel": [], "step": []}
    for r in range(rounds):
        for name in ("parallel", "step") if r % 2 == 0 else ("step", "parallel"):
            times[name].append(seconds(parallel if name == "parallel" else stepwise, model, tokens))
    par, step = statistics.median(times["parallel"]), statistics.median(times["step"])
    return {
        "family": family,
        "T": length,
        "batch": batch,
        "parallel_tokens_per_sec": round(batch * length / par, 1),
        "step_tokens_per_sec": round(batch * length / step, 1),
        "speedup": round(step / par, 2),
        "max_abs_diff": diff,
        "params": model.num_params,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--families", default="mingru,minlstm,mamba2,gated_deltanet", help="comma-separated stateful families"
    )
    parser.add_argument("--lengths", default="256,1024,4096", help="comma-separated window lengths T")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    steady_malloc()  # as every lmlab job does
    families = args.families.split(",")
    unknown = [f for f in families if f not in FAMILIES or not FAMILIES[f].model.stateful]
    if unknown:
        stateful = [name for name, family in FAMILIES.items() if family.model.stateful]
        parser.error(f"--families: {', '.join(unknown)} is not a stateful family; use some of {', '.join(stateful)}")
    rows = []
    for family in families:
        for length in (int(t) for t in args.lengths.split(",")):
            rows.append(bench(family, length, args.batch, args.rounds))
            print(json.dumps(rows[-1]), flush=True)
    print(
        f"\n{'family':10s} {'T':>6s} {'parallel tok/s':>15s} {'step tok/s':>11s} {'speedup':>8s} {'max diff':>9s}",
        file=sys.stderr,
    )
    for r in rows:
        print(
            f"{r['family']:10s} {r['T']:6d} {r['parallel_tokens_per_sec']:15,.0f} {r['step_tokens_per_sec']:11,.0f} "
            f"{r['speedup']:8.2f} {r['max_abs_diff']:9.1e}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
