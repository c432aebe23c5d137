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
table to stderr. The step form's backward keeps every step's activations: where it would need more than
`--memory-share` of the available memory (estimated from a 64-token window), only the parallel form is
timed and the row says why (`skipped`). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    """Forward and backward of one form over the window (on a GPU, between synchronisations: its queue is inside
    the time)."""
    sync = torch.cuda.synchronize if tokens.is_cuda else (lambda: None)
    model.zero_grad(set_to_none=True)
    sync()
    started = time.perf_counter()
    form(model, tokens).sum().backward()
    sync()
    return time.perf_counter() - started


def saved_bytes_per_token(model: LanguageModel, tokens: torch.Tensor) -> float:
    """What autograd keeps for the step form's backward, per token, over a short window: the step form holds
    every step's activations until the backward, so its memory grows with T (Mamba-2's reached 24 GB at
    T = 4,096, batch 8, and the kernel's OOM killer ended the benchmark)."""
    storages: dict[int, int] = {}  # each storage once: views and the weights every step saves share one

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        stepwise(model, tokens)
    weights = sum(p.untyped_storage().nbytes() for p in model.parameters())
    return max(sum(storages.values()) - weights, 0) / tokens.numel()


def available_bytes(device: torch.device) -> int:
    """Memory the step form's backward may draw on: a GPU's free memory; on the CPU, what the system can give
    without swapping (Linux's MemAvailable; elsewhere the free pages)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def bench(
    family: str, length: int, batch: int, rounds: int, memory_share: float, device: str = "cpu"
) -> dict[str, Any]:
    model = shipped(family).train().to(device)
    tokens = torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(length)).to(device)
    with torch.no_grad():
        diff = (parallel(model, tokens) - stepwise(model, tokens)).abs().max().item()
    seconds(parallel, model, tokens[:, : min(length, 64)])  # warm-up: first-call allocations
    need = saved_bytes_per_token(model, tokens[:, : min(length, 64)]) * batch * length
    room = memory_share * available_bytes(torch.device(device))
    forms = ("parallel", "step") if need <= room else ("parallel",)
    times: dict[str, list[float]] = {form: [] for form in forms}
    for r in range(rounds):
        for name in forms if r % 2 == 0 else forms[::-1]:
            times[name].append(seconds(parallel if name == "parallel" else stepwise, model, tokens))
    par = statistics.median(times["parallel"])
    step = statistics.median(times["step"]) if "step" in times else None
    return {
        "family": family,
        "T": length,
        "batch": batch,
        "parallel_tokens_per_sec": round(batch * length / par, 1),
        "step_tokens_per_sec": round(batch * length / step, 1) if step else None,
        "speedup": round(step / par, 2) if step else None,
        "step_backward_gib": round(need / 2**30, 2),
        "skipped": None
        if step
        else f"the step form's backward needs about {need / 2**30:.1f} GiB, over {memory_share:.0%} of the "
        f"{room / memory_share / 2**30:.1f} GiB available: timed the parallel form only",
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
    parser.add_argument(
        "--memory-share", type=float, default=0.5, help="the most of the available memory the step form may take"
    )
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
            rows.append(bench(family, length, args.batch, args.rounds, args.memory_share))
            print(json.dumps(rows[-1]), flush=True)
            if rows[-1]["skipped"]:
                print(f"{family} T={length}: {rows[-1]['skipped']}", file=sys.stderr)
    print(
        f"\n{'family':10s} {'T':>6s} {'parallel tok/s':>15s} {'step tok/s':>11s} {'speedup':>8s} {'max diff':>9s}",
        file=sys.stderr,
    )
    for r in rows:
        step = (
            f"{r['step_tokens_per_sec']:11,.0f} {r['speedup']:8.2f}"
            if r["step_tokens_per_sec"]
            else f"{'skipped':>20s}"
        )
        print(
            f"{r['family']:10s} {r['T']:6d} {r['parallel_tokens_per_sec']:15,.0f} {step} {r['max_abs_diff']:9.1e}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
