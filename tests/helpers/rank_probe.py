"""`lmlab` plus a callback that makes every rank record what it trained with, for DDP under multiruns and sweeps.

    python tests/helpers/rank_probe.py pretrain <overrides>

is the plain CLI; at the end of training each rank writes ``<its run folder>/rank<r>.json``: the run
mode and task overrides Hydra started it with, the world size, the optimizer's base learning rate,
and per step the learning rate and a checksum of the weights. Lightning's DDP launcher re-runs this
script (its path is ``sys.argv[0]``) for rank 1, so the ranks it starts record too. (``ddp_probe.py``
is the torchrun-style counterpart: it starts the ranks itself.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig


class RankProbe(L.Callback):
    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        with torch.no_grad():
            weights = sum(p.detach().double().sum().item() for p in pl_module.parameters())
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.steps.append({"step": trainer.global_step, "lr": lr, "weights": weights})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        hydra = HydraConfig.get()
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "mode": hydra.mode.name,
            "overrides": list(hydra.overrides.task),
            "base_lr": trainer.optimizers[0].param_groups[0]["initial_lr"],
            "steps": self.steps,
        }
        (Path(hydra.runtime.output_dir) / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def main() -> None:
    import lmlab.training.job
    from lmlab.cli import main as lmlab_main

    make_trainer = lmlab.training.job.make_trainer

    def probed(*args: Any, **kwargs: Any) -> L.Trainer:
        trainer = make_trainer(*args, **kwargs)
        trainer.callbacks.append(RankProbe())
        return trainer

    lmlab.training.job.make_trainer = probed
    lmlab_main()


if __name__ == "__main__":
    main()
