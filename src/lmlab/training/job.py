"""The one skeleton of the training jobs (pretrain, finetune, synth): each job says what it trains, this runs it.

The order is the same for every job and is what resume and DDP rely on: everything that can fail on the config
or the data is built before the run folder changes (`prepare`, then `RunFolder.plan`); then the logger,
callbacks and Trainer; `RunFolder.begin`; the fit, with the logger finished whatever happens; then the
figures in `metrics.json` (and the DVC stage's `metrics_file`), written by rank zero.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lmlab.core import metrics as M
from lmlab.core.atomic import write_json
from lmlab.core.errors import Stopped
from lmlab.training.callbacks import CheckpointOnStop, ValCurve, build_callbacks
from lmlab.training.config import RunConfig
from lmlab.training.logger import finish_logger, make_logger
from lmlab.training.runs import Extension, RunFolder, Start, train_held
from lmlab.training.trainer import config_dict, make_trainer


@dataclass
class Fit:
    """What a job hands the skeleton once its model, task and data are built."""

    task: L.LightningModule
    data: L.LightningDataModule
    identity: dict[str, Any]  # what a checkpoint belongs to (`RunFolder.plan` resumes only a match)
    tags: list[str]  # the W&B tags beyond cfg.tags
    run_name: str  # the W&B run's name (`trainer.run_name`)
    label: str  # the progress line's
    curve: tuple[str, ...] = M.PRETRAIN_CURVE  # val_curve.csv's columns
    callbacks: list[Callback] = field(default_factory=list)  # the job's own, beyond the curve and cfg.callbacks
    hyperparams: dict[str, Any] = field(default_factory=dict)  # logged once the run begins (M.PARAMS, ...)
    monitor: str = M.VAL_LOSS  # what best.ckpt keeps
    mode: str = "min"
    extension: Extension | None = None  # how a finished run continues to another budget (wsd)


class TrainingJob:
    """One training run in its held folder. A job supplies `prepare`, `announce`, `metrics` and `summary`, and
    where it needs them the hooks `check`, `started` and `closing`; `run` is the skeleton."""

    kind: ClassVar[str]  # the W&B job type: pretrain | finetune | synth
    log: ClassVar[logging.Logger]  # the job module's logger: its lines read as the job's

    def __init__(self, cfg: RunConfig, run: RunFolder) -> None:
        self.cfg, self.run_folder = cfg, run

    def prepare(self) -> Fit:
        """Check the config, open the data, seed, build the model, task and data; nothing on disk changes."""
        raise NotImplementedError

    def check(self, trainer: L.Trainer) -> None:
        """Refuse a Trainer the job cannot use, before the run folder changes."""

    def started(self, trainer: L.Trainer) -> dict[str, Any]:
        """Work after the folder is the run's and before the fit; returns more hyperparameters to log."""
        return {}

    def announce(self, trainer: L.Trainer, start: Start) -> str:
        """The line that says what the run does."""
        raise NotImplementedError

    def closing(self, logger: Logger | None) -> None:
        """Rank zero's last words to the logger, fit finished or not."""

    def metrics(self, trainer: L.Trainer) -> dict[str, Any]:
        """The run's final figures (every rank computes them; rank zero writes them)."""
        raise NotImplementedError

    def summary(self, metrics: dict[str, Any], written: Path) -> str:
        """The line that says what the run reached."""
        raise NotImplementedError

    def run(self) -> dict[str, Any]:
        cfg, run = self.cfg, self.run_folder
        if cfg.trainer.threads > 0:
            torch.set_num_threads(cfg.trainer.threads)
        fit = self.prepare()
        # `wandb agent` and `lmlab sweep` name each trial's run in WANDB_RUN_ID (in a sweep W&B ignores any other id)
        given_id = os.environ.get("WANDB_RUN_ID")
        start = run.plan(cfg.resume, fit.identity, secrets.token_hex(4), given_id, fit.extension, cfg.keep_replaced)
        tags = [*fit.tags, *cfg.tags]
        logger = make_logger(
            cfg.logger, run.path, start.run_id, cfg.name, self.kind, tags, config_dict(cfg), fit.run_name
        )
        callbacks = [ValCurve(run.path / "val_curve.csv", fit.curve), *build_callbacks(cfg.callbacks), *fit.callbacks]
        trainer = make_trainer(
            cfg.trainer, run.path, logger, callbacks, monitor=fit.monitor, mode=fit.mode, label=fit.label
        )
        self.check(trainer)
        run.begin(start, trainer.is_global_zero)
        hyperparams = {**fit.hyperparams, **self.started(trainer)}
        if logger is not None:
            logger.log_hyperparams(hyperparams)
        if trainer.is_global_zero:
            self.log.info(self.announce(trainer, start))
        failed = True
        try:
            fit_or_stop(trainer, fit.task, fit.data, start.checkpoint, run)
            failed = False
        finally:
            if trainer.is_global_zero:
                self.closing(logger)
                finish_logger(logger, failed)
        metrics = self.metrics(trainer)
        if trainer.is_global_zero:
            write_json(run.path / "metrics.json", metrics)
            if cfg.metrics_file:
                write_json(Path(cfg.metrics_file), metrics)
            self.log.info(self.summary(metrics, run.path / "metrics.json"))
        return metrics


def fit_or_stop(
    trainer: L.Trainer, task: L.LightningModule, data: L.LightningDataModule, checkpoint: Path | None, run: RunFolder
) -> None:
    """`trainer.fit`, and a SIGTERM during it as `Stopped`, saying what `resume=auto` continues from: Lightning
    ends a SIGTERMed fit with a SystemExit of code 0, which would pass a stopped job off as a finished one."""
    try:
        trainer.fit(task, datamodule=data, ckpt_path=checkpoint, weights_only=True)
    except SIGTERMException:
        saved = next((c.saved_step for c in trainer.callbacks if isinstance(c, CheckpointOnStop)), None)
        last = run.last_checkpoint
        kept = (
            f"step {saved} saved in {last}"
            if saved is not None
            else f"{last} (its last validation) kept"
            if last.is_file()
            else "no checkpoint yet"
        )
        raise Stopped(f"{kept}; the same command continues the run (resume=auto)") from None


def train(job: type[TrainingJob], cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """A training verb's entry: its config checked in full, its run folder held, the job run in it."""
    return train_held(cfg, run_dir, lambda cfg, run: job(cfg, run).run())
