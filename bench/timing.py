"""A training step's cost on the CPU, one way for the grid cost benches (bench/synth_cost.py,
bench/scaling_cost.py): what they time must be the same step, so that their hours compare."""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


def step_seconds(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    warmup: int,
    ignore_index: int = -100,
    forward: bool = True,
) -> tuple[float, float]:
    """The median seconds of a training step (forward, cross-entropy, backward, AdamW's step; its rate does not
    change the time) and, with `forward`, of a forward without gradients (a validation batch; else 0), over
    `steps` rounds after `warmup` untimed ones."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train, evaluated = [], []
    for k in range(warmup + steps):
        started = time.perf_counter()
        logits, _ = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        middle = time.perf_counter()
        if forward:
            with torch.no_grad():
                model(inputs)
        if k >= warmup:
            train.append(middle - started)
            evaluated.append(time.perf_counter() - middle)
    return statistics.median(train), statistics.median(evaluated) if forward else 0.0
