"""Training stops at the first non-finite loss, before the step reaches the weights or a checkpoint.

Every task (pretraining, LM adaptation, fine-tuning) calls `require_finite` on its training loss
before backward and on its validation loss before Lightning checkpoints it: NaN weights are never
saved, and the metrics files never hold a NaN.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch

from lmlab.core.errors import LmlabError


class NonFiniteLoss(LmlabError):
    """The loss became NaN or infinite; training stopped."""


def require_finite(module: L.LightningModule, name: str, loss: torch.Tensor | float, stopped: str) -> None:
    """Raise `NonFiniteLoss` on every rank at once when `loss` (`name`, e.g. train/loss) is NaN or infinite;
    `stopped` says what the stop spared ("before updating the weights")."""
    trainer = module.trainer
    if trainer.sanity_checking:
        return
    value = float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
    if trainer.strategy.reduce_boolean_decision(math.isfinite(value), all=True):
        return
    lr = trainer.optimizers[0].param_groups[-1]["lr"] if trainer.optimizers else float("nan")
    raise NonFiniteLoss(
        f"{name} became {value} at step {module.global_step} (lr {lr:.3g}); stopped {stopped}. "
        f"{last_good(trainer)}. Lower the learning rate or set trainer.gradient_clip_val"
    )


def last_good(trainer: L.Trainer) -> str:
    """Where the run can go on from: the newest checkpoint this run wrote, if any."""
    saved = [Path(cb.dirpath) / "last.ckpt" for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
    existing = [path for path in saved if path.is_file()]
    if existing:
        return f"The last good checkpoint is {existing[0]}"
    return "No checkpoint was written before it"
