"""Optimizers and learning-rate schedules from `OptimConfig`, shaped as `configure_optimizers` returns them."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from lmlab.config import OptimConfig
from lmlab.errors import LmlabError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant", "plateau")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and embeddings (dim >= 2), never biases or norm gains, as in GPT-2 and nanoGPT."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "adamw":
        on_gpu = all(p.is_cuda for p in model.parameters())
        return torch.optim.AdamW(
            param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), fused=on_gpu or None
        )
    if cfg.name == "sgd":
        return torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)
    raise LmlabError(f"optim.name={cfg.name!r} is not an optimizer; use one of {', '.join(OPTIMIZERS)}")


def lr_factor(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Multiplier of `cfg.lr` at optimizer step `step`: linear warmup, then constant or cosine to `min_lr`."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule != "cosine":
        return 1.0
    decay_steps = cfg.decay_steps or max_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, decay_steps - cfg.warmup_steps))
    floor = cfg.min_lr / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int, val_every: int) -> dict:
    """A Lightning scheduler config: stepped every optimizer step, or after each validation for `plateau`."""
    if cfg.schedule not in SCHEDULES:
        raise LmlabError(f"optim.schedule={cfg.schedule!r} is not a schedule; use one of {', '.join(SCHEDULES)}")
    if cfg.schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
        return {"scheduler": scheduler, "interval": "step", "frequency": val_every, "monitor": "val/loss"}
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, max_steps))
    return {"scheduler": scheduler, "interval": "step", "frequency": 1}
