"""Generation cost against length, one sequence, one token at a time (what `lmlab generate` does).

For each family at the pipeline's model size (`conf/model/<family>.yaml`, random weights, vocabulary 8000),
runs `lmlab.jobs.long_context.generation_profile` (what `lmlab evaluate` measures on the trained models) to the
longest length, repeated, and reports at each length L:

- ms per token over the 32 tokens before L (the marginal cost at that length), median of repeats;
- the bytes the family's state holds at L (`lmlab.models.state_bytes`: a recurrent state is constant, a
  Transformer's KV cache grows linearly with L; its rotary context is stretched to the longest length).

Then one thread against two for the same decoding (`lmlab generate`'s `threads`), alternated and repeated,
because single-sequence steps are too small to split across cores.

    .venv/bin/python bench/generation.py
    .venv/bin/python bench/generation.py --lengths 128,1024,8192 --families transformer,lstm --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from omegaconf import OmegaConf

from lmlab.jobs.long_context import TAIL, generation_profile
from lmlab.models import FAMILIES, build_model, family_config

ROOT = Path(__file__).resolve().parents[1]


def model_for(family: str) -> torch.nn.Module:
    spec = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / f"{family}.yaml"))
    torch.manual_seed(0)
    return build_model(family_config(spec), 8000).eval()


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
    print(
        f"one sequence, one thread, ms/token over the {TAIL} tokens before each length "
        f"(median of {args.repeats}) | state KB"
    )
    print(f"{'family':12s}" + "".join(f"{f'L={n}':>20s}" for n in lengths))
    for family in families:
        model = model_for(family)
        runs = [generation_profile(model, lengths) for _ in range(args.repeats)]
        cells = []
        for i in range(len(lengths)):
            ms = statistics.median(run[i]["ms_per_token"] for run in runs)
            cells.append(f"{ms:8.2f} | {runs[0][i]['state_bytes'] / 1024:9.1f}")
        print(f"{family:12s}" + "".join(f"{c:>20s}" for c in cells), flush=True)

    print("\nthreads for one-sequence decoding: ms/token at L=128, alternating 1 and 2 threads")
    for family in families:
        model = model_for(family)
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.repeats):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                times[threads].append(generation_profile(model, [128])[0]["ms_per_token"])
        one, two = statistics.median(times[1]), statistics.median(times[2])
        print(f"{family:12s} 1 thread {one:7.2f}   2 threads {two:7.2f}   ratio 2/1 {two / one:5.2f}", flush=True)
    torch.set_num_threads(1)


if __name__ == "__main__":
    main()
