"""The one optimizer and learning-rate schedule builder, for pretraining, fine-tuning and LM adaptation.

Parameters come in layer groups (pretraining: one group, the whole model;
fine-tuning: embeddings ... head), each with its learning-rate scale; within a
group matrices and embeddings get weight decay, biases and norm gains never
(as in GPT-2 and nanoGPT). A schedule multiplies every group's learning rate;
`active(layer, step)` lets a task hold a layer group at 0 (gradual unfreezing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from lmlab.core.errors import LmlabError
from lmlab.core.rules import check_values
from lmlab.training.config import OptimConfig, TrainerConfig


def check(cfg: OptimConfig) -> None:
    """Refuse a config no task can honour, before anything is built or written."""
    check_values(cfg, "optim.")
    if cfg.name == "adamw" and (len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas)):
        raise LmlabError(f"optim.betas={list(cfg.betas)}: give two numbers in [0, 1)")


def param_groups(layers: Sequence[Iterable[nn.Parameter]], lr: float, scales: Sequence[float], decay: float) -> list:
    """Torch parameter groups: per layer group (tagged ``layer``), its matrices with `decay` and the rest without."""
    groups = []
    for layer, (params, scale) in enumerate(zip(layers, scales, strict=True)):
        trainable = [p for p in params if p.requires_grad]
        for decayed in (True, False):
            chosen = [p for p in trainable if (p.dim() >= 2) == decayed]
            if chosen:
                groups.append(
                    {"params": chosen, "lr": lr * scale, "weight_decay": decay if decayed else 0.0, "layer": layer}
                )
    return groups


def build_optimizer(
    layers: Sequence[Iterable[nn.Parameter]] | nn.Module, cfg: OptimConfig, scales: Sequence[float] | None = None
) -> torch.optim.Optimizer:
    """AdamW (fused when every parameter is on a GPU) or SGD over `layers`, layer group g at ``lr * scales[g]``."""
    check(cfg)
    if isinstance(layers, nn.Module):
        layers = [list(layers.parameters())]
    groups = param_groups(layers, cfg.lr, scales or [1.0] * len(layers), cfg.weight_decay)
    if cfg.name == "adamw":
        on_gpu = all(p.is_cuda for group in groups for p in group["params"])
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=on_gpu or None)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def cooldown_start(cfg: OptimConfig, max_steps: int) -> int:
    """wsd: the step its cooldown begins; before it the schedule is the same for every budget."""
    return max(cfg.warmup_steps, max_steps - math.ceil(cfg.cooldown * max_steps))


def lr_factor(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Multiplier of `cfg.lr` at optimizer step `step`: linear warmup, then constant, cosine to `min_lr`, or
    (wsd) constant and a 1-sqrt cooldown to `min_lr` over the last `cooldown` share of the steps, the shape
    Hägele et al. (2024) found to match cosine at any budget."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    floor = cfg.min_lr / cfg.lr if cfg.lr else 0.0
    if cfg.schedule == "wsd":
        begin = cooldown_start(cfg, max_steps)
        if step < begin:
            return 1.0
        progress = min(1.0, (step - begin) / max(1, max_steps - begin))
        return floor + (1.0 - floor) * (1.0 - math.sqrt(progress))
    if cfg.schedule != "cosine":
        return 1.0
    decay_steps = cfg.decay_steps or max_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, decay_steps - cfg.warmup_steps))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_schedule(
    optimizer: torch.optim.Optimizer,
    cfg: OptimConfig,
    max_steps: int,
    val_every: int,
    monitor: str = "val/loss",
    active: Callable[[int, int], bool] | None = None,
) -> dict[str, Any]:
    """A Lightning scheduler config: stepped every optimizer step, or after each validation for `plateau`
    (lowering the learning rate when `monitor` stops falling). `active(layer, step)` False holds that
    layer group's learning rate at 0."""
    check(cfg)
    if cfg.schedule == "plateau":
        if active is not None:
            raise LmlabError(
                "optim.schedule=plateau cannot hold layer groups frozen (finetune.unfreeze_every > 0): "
                "use optim.schedule=cosine or constant, or finetune.unfreeze_every=0"
            )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
        return {"scheduler": scheduler, "interval": "step", "frequency": val_every, "monitor": monitor}

    def factor(layer: int) -> Callable[[int], float]:
        if active is None:
            return lambda step: lr_factor(step, cfg, max_steps)
        return lambda step: lr_factor(step, cfg, max_steps) * float(active(layer, step))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(g["layer"]) for g in optimizer.param_groups])
    return {"scheduler": scheduler, "interval": "step", "frequency": 1}


def schedule_identity(optim: OptimConfig, trainer: TrainerConfig) -> dict[str, int]:
    """The trainer settings the learning rate at a given step depends on: part of a run's identity, so a
    resumed run follows the schedule an uninterrupted one would have."""
    if optim.schedule == "cosine":
        return {"decay_steps": optim.decay_steps or trainer.max_steps, "accumulate": trainer.accumulate}
    if optim.schedule == "wsd":
        return {"max_steps": trainer.max_steps, "accumulate": trainer.accumulate}
    if optim.schedule == "plateau":
        return {"val_every": trainer.val_every, "accumulate": trainer.accumulate}
    return {"accumulate": trainer.accumulate}
