"""Generation cost against length, one sequence, one token at a time (what `lmlab generate` does).

For each family at the pipeline's model size (`conf/model/<family>.yaml`, random weights, vocabulary 8000;
the Transformer's context raised to the longest length so its KV cache is never restarted), feeds L tokens
one by one and reports:

- ms per token over the last 64 tokens before length L (the marginal cost at that length), median of repeats;
- the bytes the family's state holds after L tokens (`lmlab.models.state`'s tensors: a recurrent state is
  constant, a Transformer's KV cache grows linearly with L).

Then one thread against two for the same decoding (`lmlab generate`'s `threads`), alternated and repeated,
because single-sequence steps are too small to split across cores.

    .venv/bin/python bench/generation.py
    .venv/bin/python bench/generation.py --lengths 128,1024,8192 --families transformer,lstm --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from lmlab.models import FAMILIES, build_model, family_config, state_bytes

ROOT = Path(__file__).resolve().parents[1]
TAIL = 64  # tokens timed at the end of each length


def model_for(family: str, longest: int) -> torch.nn.Module:
    spec = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / f"{family}.yaml"))
    if "context" in spec:
        spec["context"] = max(spec["context"], longest)
    torch.manual_seed(0)
    return build_model(family_config(spec), 8000).eval()


@torch.inference_mode()
def run_to(model: torch.nn.Module, length: int) -> tuple[float, int]:
    """ms per token over the last `TAIL` of `length` tokens, and the state's bytes after them."""
    state = model.init_state(1)
    token = torch.zeros(1, 1, dtype=torch.long)
    started = 0.0
    for position in range(length):
        if position == length - TAIL:
            started = time.perf_counter()
        logits, state = model(token, state)
        token = logits[:, -1].argmax(-1, keepdim=True)
    return (time.perf_counter() - started) * 1000 / TAIL, state_bytes(state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="128,512,2048,8192")
    parser.add_argument("--families", default="rnn,lstm,gru,transformer,mingru,mamba2")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    families = args.families.split(",")
    unknown = set(families) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; choose from {', '.join(FAMILIES)}")

    torch.set_num_threads(1)
    print(f"one sequence, one thread, ms/token over the last {TAIL} tokens (median of {args.repeats}) | state KB")
    print(f"{'family':12s}" + "".join(f"{f'L={n}':>20s}" for n in lengths))
    for family in families:
        model = model_for(family, max(lengths))
        cells = []
        for length in lengths:
            runs = [run_to(model, length) for _ in range(args.repeats)]
            ms = statistics.median(r[0] for r in runs)
            cells.append(f"{ms:8.2f} | {runs[0][1] / 1024:9.1f}")
        print(f"{family:12s}" + "".join(f"{c:>20s}" for c in cells), flush=True)

    print("\nthreads for one-sequence decoding: ms/token at L=128, alternating 1 and 2 threads")
    for family in families:
        model = model_for(family, 128)
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.repeats):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                times[threads].append(run_to(model, 128)[0])
        one, two = statistics.median(times[1]), statistics.median(times[2])
        print(f"{family:12s} 1 thread {one:7.2f}   2 threads {two:7.2f}   ratio 2/1 {two / one:5.2f}", flush=True)
    torch.set_num_threads(1)


if __name__ == "__main__":
    main()
