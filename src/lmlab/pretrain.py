"""`lmlab pretrain`: train one model family on the tokenized corpus and record the run.

Callable without the CLI (tests do): `pretrain(cfg, run_dir)` returns the final metrics.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from lmlab.config import OptimConfig, PretrainConfig, TrainerConfig
from lmlab.data.lm import Corpus
from lmlab.errors import LmlabError
from lmlab.models import build_model
from lmlab.runs import RunFolder, code_version, write_json
from lmlab.tasks.optim import build_optimizer, build_schedule
from lmlab.tasks.pretrain import PretrainData, PretrainTask
from lmlab.training import ValCurve, config_dict, finish_logger, make_logger, make_trainer

log = logging.getLogger(__name__)


# The code a checkpoint's training depends on (the pretrain stages' code deps in dvc.yaml).
TRAINING_CODE = (
    "models/__init__.py",
    "models/base.py",
    "models/recurrent.py",
    "models/transformer.py",
    "tasks/optim.py",
    "tasks/pretrain.py",
    "data/lm.py",
    "pretrain.py",
    "training.py",
)


def identity(cfg: PretrainConfig) -> dict[str, Any]:
    """What a checkpoint belongs to. Trainer settings (devices, logging, steps) may change across a resume,
    except what the learning-rate schedule is computed from: a resumed run must follow the schedule an
    uninterrupted one would have, so a cosine decay's length (`optim.decay_steps`, else `trainer.max_steps`)
    and a plateau schedule's validation interval are part of it. Train longer with a fixed `decay_steps`."""
    full = config_dict(cfg)
    return {
        "data": cfg.data.name,
        "tokenizer": cfg.tokenizer.name,
        **{key: full[key] for key in ("model", "task", "optim")},
        "schedule": schedule_identity(cfg.optim, cfg.trainer),
        "code": code_version(TRAINING_CODE),
    }


def schedule_identity(optim: OptimConfig, trainer: TrainerConfig) -> dict[str, int]:
    """The trainer settings the learning rate at a given step depends on."""
    if optim.schedule == "cosine":
        return {"decay_steps": optim.decay_steps or trainer.max_steps, "accumulate": trainer.accumulate}
    if optim.schedule == "plateau":
        return {"val_every": trainer.val_every, "accumulate": trainer.accumulate}
    return {"accumulate": trainer.accumulate}


def pretrain(cfg: PretrainConfig, run_dir: Path) -> dict[str, Any]:
    if cfg.trainer.threads > 0:
        torch.set_num_threads(cfg.trainer.threads)
    corpus = open_corpus(cfg)
    L.seed_everything(cfg.task.seed, workers=True, verbose=False)
    model = build_model(cfg.model, corpus.vocab_size)
    build_schedule(build_optimizer(model, cfg.optim), cfg.optim, cfg.trainer.max_steps, cfg.trainer.val_every)
    # only a valid config may reset the run folder (resume=auto removes the checkpoints of a changed one)
    run = RunFolder(run_dir)
    # `wandb agent` and `lmlab sweep` name each trial's run in WANDB_RUN_ID (in a sweep W&B ignores any other id)
    given_id = os.environ.get("WANDB_RUN_ID")
    checkpoint, run_id = run.start(cfg.resume, identity(cfg), secrets.token_hex(4), rank_zero_only.rank == 0, given_id)
    window = cfg.task.bptt if model.stateful else cfg.model.context
    if cfg.trainer.compile:
        model.compile()
    task = PretrainTask(
        model,
        cfg.optim,
        cfg.trainer.max_steps,
        cfg.trainer.val_every,
        corpus.tokens_per_byte("val"),
        corpus={"name": cfg.data.name, "tokenizer": cfg.tokenizer.name, "folder": str(corpus.folder)},
    )
    data = PretrainData(corpus, cfg.task, model.stateful, window, cfg.trainer.accumulate)

    tags = [cfg.model.family, cfg.data.name, cfg.tokenizer.name]
    logger = make_logger(cfg.logger, run_dir, run_id, cfg.name, "pretrain", tags, config_dict(cfg))
    trainer = make_trainer(cfg.trainer, run_dir, logger, [ValCurve(run_dir / "val_curve.csv")])
    if logger is not None:
        logger.log_hyperparams({"model/params": model.num_params})
    log.info(
        "pretraining %s (%s parameters) on %s, run folder %s%s",
        cfg.model.family,
        f"{model.num_params:,}",
        corpus.folder,
        run_dir,
        f", resuming from {checkpoint}" if checkpoint else "",
    )
    failed = True
    try:
        trainer.fit(task, datamodule=data, ckpt_path=checkpoint, weights_only=True)
        failed = False
    finally:
        if trainer.is_global_zero:
            finish_logger(logger, failed)
    metrics = final_metrics(trainer, task)
    if trainer.is_global_zero:
        write_json(run_dir / "metrics.json", metrics)
        if cfg.metrics_file:
            write_json(Path(cfg.metrics_file), metrics)
    return metrics


def open_corpus(cfg: PretrainConfig) -> Corpus:
    folder = cfg.paths.tokenized(cfg.data.name, cfg.tokenizer)
    if not (folder / "meta.json").is_file():
        name, tok = cfg.data.name, cfg.tokenizer
        raise LmlabError(
            f"no tokenized corpus at {folder}; make it with `dvc repro tokenize` (for the choices in params.yaml) "
            f"or by hand:\n  lmlab download data={name} only=data\n  lmlab split data={name} only=data\n"
            f"  lmlab tokenize data={name} tokenizer={tok.type} tokenizer.vocab_size={tok.vocab_size} '~task_data'"
        )
    return Corpus.open(folder)


def final_metrics(trainer: L.Trainer, task: PretrainTask) -> dict[str, Any]:
    """The figures a comparison needs, with the names the logger used (DESIGN.md's vocabulary)."""
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")} or task.last_val
    best = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    return {
        **logged,
        "best/val/loss": float(best) if best is not None else logged.get("val/loss"),
        "model/params": task.model.num_params,
        "model/embedding_params": task.model.num_embedding_params,
        "train/steps": trainer.global_step,
        "train/tokens": task.tokens_seen,
        "train/tokens_per_sec": task.tokens_per_sec,
        "train/wall_seconds": task.wall_seconds,
    }
