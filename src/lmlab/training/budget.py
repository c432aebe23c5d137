"""What every family of a comparison is given the same amount of (`budget.match`).

- ``params`` (the default): the sizes are matched (conf/model, conf/scale_model) and every family trains
  `trainer.max_steps` steps of the same batches.
- ``tokens``: each family trains for `budget.tokens` tokens: its steps follow from the tokens one step reads
  over all ranks (a Transformer reads its context per sequence, a recurrent family its bptt window).
- ``flops``: each family trains for `budget.flops` training FLOPs, counted from its architecture (3 x the
  forward's per token, `PretrainTask.train_flops_per_token`): a family that costs more per token sees fewer.

The steps are fixed before the run starts, so they are part of the schedule the run's identity holds.
"""

from __future__ import annotations

import math

import torch

from lmlab.core.errors import LmlabError
from lmlab.training.config import BudgetConfig, TrainerConfig
from lmlab.training.trainer import on_gpu


def ranks(trainer: TrainerConfig) -> int:
    """The processes a trainer config trains on, as Lightning will start them (checked against the trainer's
    world size once it exists): a device count, a list of ids, or auto / -1 (every GPU where GPUs are asked for
    and present, else one process)."""
    devices = trainer.devices
    if isinstance(devices, str) and devices.strip() not in ("auto", "-1"):
        devices = [d for d in devices.split(",") if d.strip()] if "," in devices else int(devices)
    if isinstance(devices, int) and devices > 0:
        count = devices
    elif not isinstance(devices, int | str):  # a list of device ids
        count = len(devices)
    else:
        count = torch.cuda.device_count() if on_gpu(trainer.accelerator) and torch.cuda.is_available() else 1
    return count * trainer.num_nodes


def steps(budget: BudgetConfig, trainer: TrainerConfig, tokens_per_step: int, train_flops_per_token: float) -> int:
    """The optimizer steps that spend the budget: `trainer.max_steps` for match=params, else enough steps to
    reach `budget.tokens` or `budget.flops` (rounded up). `tokens_per_step`: one rank's tokens per micro-batch."""
    if budget.match == "params":
        return trainer.max_steps
    amount = budget.tokens if budget.match == "tokens" else budget.flops
    if amount <= 0:
        example = "2e6 training tokens" if budget.match == "tokens" else "1e13 training FLOPs"
        raise LmlabError(
            f"budget.match={budget.match} needs budget.{budget.match} > 0 (per family, e.g. {example}); it is {amount}"
        )
    per_step = tokens_per_step * trainer.accumulate * ranks(trainer)
    if budget.match == "flops":
        per_step *= train_flops_per_token
    return max(1, math.ceil(amount / per_step))


def spent(budget: BudgetConfig) -> str:
    """What the steps were chosen to spend, for the run's first log line ("" for match=params)."""
    return "" if budget.match == "params" else f" (budget: {getattr(budget, budget.match):.3g} {budget.match})"
