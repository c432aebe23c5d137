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
from lightning.pytorch.callbacks import Callback

from lmlab import budget
from lmlab import metrics as M
from lmlab.config import PretrainConfig
from lmlab.data.atomic import write_json
from lmlab.data.corpus import Corpus
from lmlab.errors import LmlabError
from lmlab.models import build_model, family_config
from lmlab.runs import STABLE_CHECKPOINT, Extension, RunFolder, code_version, open_corpus, train_held
from lmlab.tasks import optim
from lmlab.tasks.pretrain import PretrainData, PretrainTask
from lmlab.training import (
    CheckpointAt,
    ValCurve,
    build_callbacks,
    config_dict,
    device_line,
    finish_logger,
    make_logger,
    make_trainer,
    run_name,
)

log = logging.getLogger(__name__)


def identity(cfg: PretrainConfig, corpus: Corpus) -> dict[str, Any]:
    """What a checkpoint belongs to. Trainer settings (devices, logging, steps) may change across a resume,
    except what the learning-rate schedule is computed from (`optim.schedule_identity`): a resumed run must
    follow the schedule an uninterrupted one would have. Train longer with `optim.schedule=wsd` (`extension`),
    `constant`, or a fixed `optim.decay_steps`."""
    full = config_dict(cfg)
    return {
        "data": cfg.data.name,
        "tokenizer": cfg.tokenizer.name,
        "corpus": corpus.digest(task=False),
        **{key: full[key] for key in ("model", "batches", "optim")},
        "schedule": optim.schedule_identity(cfg.optim, cfg.trainer),
        "code": code_version("lmlab.pretrain"),
    }


def extension(cfg: PretrainConfig, corpus: Corpus) -> Extension | None:
    """wsd: the schedule is the same for every budget until the cooldown, so a run of another `max_steps`
    continues from its checkpoint at or before this budget's cooldown start (`stable.ckpt` of a finished run)."""
    if cfg.optim.schedule != "wsd":
        return None
    free = {**identity(cfg, corpus), "schedule": {"accumulate": cfg.trainer.accumulate}}
    return Extension(free, optim.cooldown_start(cfg.optim, cfg.trainer.max_steps))


def pretrain(cfg: PretrainConfig, run_dir: Path) -> dict[str, Any]:
    return train_held(cfg, run_dir, train_in)


def train_in(cfg: PretrainConfig, run: RunFolder) -> dict[str, Any]:
    """The run in its held folder: everything that can fail on the config or the data is built before `run.begin`
    changes the folder."""
    if cfg.trainer.threads > 0:
        torch.set_num_threads(cfg.trainer.threads)
    cfg.model = family_config(cfg.model)
    optim.check(cfg.optim)
    corpus = open_corpus(cfg.paths, cfg.data.name, cfg.tokenizer)
    L.seed_everything(cfg.batches.seed, workers=True, verbose=False)
    model = build_model(cfg.model, corpus.vocab_size)
    window = model.window(cfg.batches.bptt)
    task = PretrainTask(
        model,
        window,
        cfg.optim,
        cfg.trainer.max_steps,
        cfg.trainer.val_every,
        corpus.tokens_per_byte("val"),
        corpus={"name": cfg.data.name, "tokenizer": cfg.tokenizer.name, "folder": str(corpus.folder)},
    )
    # budget.match=tokens|flops: this family's steps, before the schedule (and so the run's identity) is fixed
    per_rank = cfg.batches.batch_size * window
    task.max_steps = cfg.trainer.max_steps = budget.steps(cfg.budget, cfg.trainer, per_rank, task.train_flops_per_token)
    # `wandb agent` and `lmlab sweep` name each trial's run in WANDB_RUN_ID (in a sweep W&B ignores any other id)
    given_id = os.environ.get("WANDB_RUN_ID")
    start = run.plan(
        cfg.resume, identity(cfg, corpus), secrets.token_hex(4), given_id, extension(cfg, corpus), cfg.keep_replaced
    )
    if cfg.trainer.compile:
        model.compile()
    data = PretrainData(corpus, cfg.batches, model.stateful, window, cfg.trainer.accumulate)

    tags = [cfg.model.family, cfg.data.name, cfg.tokenizer.name, *cfg.tags]
    name = run_name(cfg.logger, "pretrain", cfg.model.family, seed=cfg.seed)
    logger = make_logger(cfg.logger, run.path, start.run_id, cfg.name, "pretrain", tags, config_dict(cfg), name)
    callbacks: list[Callback] = [ValCurve(run.path / "val_curve.csv"), *build_callbacks(cfg.callbacks)]
    if cfg.optim.schedule == "wsd":
        stable = optim.cooldown_start(cfg.optim, cfg.trainer.max_steps)
        callbacks.append(CheckpointAt(stable, run.checkpoints / STABLE_CHECKPOINT))
    trainer = make_trainer(cfg.trainer, run.path, logger, callbacks, label=f"pretrain {cfg.model.family}")
    if cfg.budget.match != "params" and trainer.world_size != budget.ranks(cfg.trainer):
        raise LmlabError(
            f"budget.match={cfg.budget.match} counted {budget.ranks(cfg.trainer)} processes from "
            f"trainer.devices={cfg.trainer.devices!r}, but the trainer started {trainer.world_size}: give "
            "trainer.devices as a number"
        )
    run.begin(start, trainer.is_global_zero)
    if logger is not None:
        logger.log_hyperparams({M.PARAMS: model.num_params})
    if trainer.is_global_zero:
        log.info(
            "pretraining %s (%s parameters) on %s for %d steps%s, %s, run folder %s%s",
            cfg.model.family,
            f"{model.num_params:,}",
            corpus.folder,
            cfg.trainer.max_steps,
            budget.spent(cfg.budget),
            device_line(trainer),
            run.path,
            f", resuming from {start.checkpoint}" if start.checkpoint else "",
        )
    failed = True
    try:
        trainer.fit(task, datamodule=data, ckpt_path=start.checkpoint, weights_only=True)
        failed = False
    finally:
        if trainer.is_global_zero:
            finish_logger(logger, failed)
    metrics = final_metrics(trainer, task)
    if trainer.is_global_zero:
        write_json(run.path / "metrics.json", metrics)
        if cfg.metrics_file:
            write_json(Path(cfg.metrics_file), metrics)
        log.info(
            "pretrained %s: %d steps, %s tokens in %.0f s (%s tokens/s); val loss %.4f (best %.4f), ppl %.1f, "
            "bpb %.3f -> %s",
            cfg.model.family,
            metrics[M.TRAIN_STEPS],
            f"{metrics[M.TRAIN_TOKENS]:,}",
            metrics[M.TRAIN_WALL_SECONDS],
            f"{metrics[M.TRAIN_TOKENS_PER_SEC]:,.0f}",
            metrics.get(M.VAL_LOSS, float("nan")),
            metrics[M.BEST_VAL_LOSS] if metrics[M.BEST_VAL_LOSS] is not None else float("nan"),
            metrics.get(M.VAL_PPL, float("nan")),
            metrics.get(M.VAL_BPB, float("nan")),
            run.path / "metrics.json",
        )
    return metrics


def final_metrics(trainer: L.Trainer, task: PretrainTask) -> dict[str, Any]:
    """The figures a comparison needs, with the names the logger used (DESIGN.md's vocabulary)."""
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")} or task.last_val
    best = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    return {
        **logged,
        M.BEST_VAL_LOSS: float(best) if best is not None else logged.get(M.VAL_LOSS),
        M.PARAMS: task.model.num_params,
        M.EMBEDDING_PARAMS: task.model.num_embedding_params,
        M.TRAIN_STEPS: trainer.global_step,
        M.TRAIN_TOKENS: task.tokens_seen,
        M.TRAIN_FLOPS: task.train_flops,
        M.TRAIN_TOKENS_PER_SEC: task.tokens_per_sec,
        M.TRAIN_WALL_SECONDS: task.wall_seconds,
    }
