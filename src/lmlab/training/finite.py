"""Training stops at the first non-finite loss, before what it did to the weights reaches a checkpoint or a
metrics file, without waiting on the accelerator every step.

The training loss is watched on its device (`FiniteLoss`, a callback of every Trainer: pretraining, LM
adaptation, fine-tuning, synthetic tasks): each step folds its finiteness into a flag that holds the step and
value of the first non-finite one, and the host reads that flag only where it reads numbers anyway or must: at
the logging interval, at every validation, before every checkpoint is saved and at the end of the fit (as
`torch.amp.GradScaler` defers its `found_inf`). The steps after a non-finite one run on weights that are
never saved. Validation losses, already on the host, go through `require_finite` before Lightning checkpoints
them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lmlab.core.errors import LmlabError


class NonFiniteLoss(LmlabError):
    """The loss became NaN or infinite; training stopped."""


def require_finite(module: L.LightningModule, name: str, loss: float, stopped: str) -> None:
    """Raise `NonFiniteLoss` on every rank at once when `loss` (`name`, e.g. val/loss, a number on the host) is
    NaN or infinite; `stopped` says what the stop spared ("before checkpointing it")."""
    trainer = module.trainer
    if trainer.sanity_checking or trainer.strategy.reduce_boolean_decision(math.isfinite(loss), all=True):
        return
    raise non_finite(trainer, name, loss, module.global_step, stopped)


def non_finite(trainer: L.Trainer, name: str, value: float, step: int, stopped: str) -> NonFiniteLoss:
    lr = trainer.optimizers[0].param_groups[-1]["lr"] if trainer.optimizers else float("nan")
    return NonFiniteLoss(
        f"{name} became {value} at step {step} (lr {lr:.3g}); stopped {stopped}. {last_good(trainer)}. "
        "Lower the learning rate or set trainer.gradient_clip_val"
    )


class FiniteLoss(Callback):
    """The training loss's finiteness, kept on its device and read at the points named in the module's doc.
    The task names its loss (`loss_name`: train/loss, finetune/train/loss)."""

    def __init__(self) -> None:
        self.step = 0
        self.first: torch.Tensor | None = None  # [step, value] of the first non-finite loss; step -1: none yet

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = (outputs["loss"] if isinstance(outputs, dict) else outputs).detach().double()
        if self.first is None:
            self.first = torch.tensor([-1.0, 0.0], dtype=torch.float64, device=loss.device)
        fresh = ~torch.isfinite(loss) & (self.first[0] < 0)
        self.first = torch.where(fresh, torch.stack([loss.new_tensor(float(self.step)), loss]), self.first)
        if trainer.global_step % trainer.log_every_n_steps == 0 and not trainer.fit_loop._should_accumulate():
            self.check(trainer, pl_module, "at the logging interval")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module, "before validating")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: Any) -> None:
        self.check(trainer, pl_module, "before saving a checkpoint")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module, "before writing the metrics")

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule, where: str) -> None:
        """Read the flag (a host sync) and stop every rank at once if any saw a non-finite loss."""
        step, value = self.first.tolist() if self.first is not None else (-1.0, 0.0)
        if trainer.strategy.reduce_boolean_decision(step < 0, all=True):
            return
        name = getattr(pl_module, "loss_name", "train/loss")
        if step < 0:  # another rank's
            raise non_finite(trainer, name, math.nan, trainer.global_step, f"{where} (on another rank)")
        raise non_finite(trainer, name, value, int(step), f"{where}, and nothing since was saved")


def last_good(trainer: L.Trainer) -> str:
    """Where the run can go on from: the newest checkpoint this run wrote, if any."""
    saved = [Path(cb.dirpath) / "last.ckpt" for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
    existing = [path for path in saved if path.is_file()]
    if existing:
        return f"The last good checkpoint is {existing[0]}"
    return "No checkpoint was written before it"
