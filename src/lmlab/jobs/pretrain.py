"""`lmlab pretrain`: train one model family on the tokenized corpus and record the run.

Callable without the CLI (tests do): `pretrain(cfg, run_dir)` returns the final metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L

from lmlab.core import metrics as M
from lmlab.core.errors import LmlabError
from lmlab.data.corpus import Corpus
from lmlab.data.lm import PretrainData
from lmlab.jobs.config import PretrainConfig
from lmlab.models import build_model, family_config
from lmlab.tasks.language_model import PretrainTask
from lmlab.training import budget, optim
from lmlab.training.callbacks import CheckpointAt
from lmlab.training.identity import code_version
from lmlab.training.job import Fit, TrainingJob, train
from lmlab.training.logger import run_name
from lmlab.training.runs import STABLE_CHECKPOINT, Extension, Start, open_corpus
from lmlab.training.trainer import config_dict, device_line

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
        "code": code_version("lmlab.jobs.pretrain"),
    }


def extension(cfg: PretrainConfig, corpus: Corpus) -> Extension | None:
    """wsd: the schedule is the same for every budget until the cooldown, so a run of another `max_steps`
    continues from its checkpoint at or before this budget's cooldown start (`stable.ckpt` of a finished run)."""
    if cfg.optim.schedule != "wsd":
        return None
    free = {**identity(cfg, corpus), "schedule": {"accumulate": cfg.trainer.accumulate}}
    return Extension(free, optim.cooldown_start(cfg.optim, cfg.trainer.max_steps))


def pretrain(cfg: PretrainConfig, run_dir: Path) -> dict[str, Any]:
    return train(Pretraining, cfg, run_dir)


class Pretraining(TrainingJob):
    kind, log = "pretrain", log
    cfg: PretrainConfig

    def prepare(self) -> Fit:
        cfg = self.cfg
        cfg.model = family_config(cfg.model)
        optim.check(cfg.optim)
        self.corpus = corpus = open_corpus(cfg.paths, cfg.data.name, cfg.tokenizer)
        L.seed_everything(cfg.batches.seed, workers=True, verbose=False)
        self.model = model = build_model(cfg.model, corpus.vocab_size)
        window = model.window(cfg.batches.bptt)
        self.task = task = PretrainTask(
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
        steps = budget.steps(cfg.budget, cfg.trainer, per_rank, task.train_flops_per_token)
        task.max_steps = cfg.trainer.max_steps = steps
        callbacks = []
        if cfg.optim.schedule == "wsd":
            stable = optim.cooldown_start(cfg.optim, cfg.trainer.max_steps)
            callbacks.append(CheckpointAt(stable, self.run_folder.checkpoints / STABLE_CHECKPOINT))
        if cfg.trainer.compile:
            model.compile()
        return Fit(
            task=task,
            data=PretrainData(corpus, cfg.batches, model.stateful, window, cfg.trainer.accumulate),
            identity=identity(cfg, corpus),
            extension=extension(cfg, corpus),
            tags=[cfg.model.family, cfg.data.name, cfg.tokenizer.name],
            run_name=run_name(cfg.logger, "pretrain", cfg.model.family, seed=cfg.seed),
            label=f"pretrain {cfg.model.family}",
            callbacks=callbacks,
            hyperparams={M.PARAMS: model.num_params},
        )

    def check(self, trainer: L.Trainer) -> None:
        cfg = self.cfg
        if cfg.budget.match != "params" and trainer.world_size != budget.ranks(cfg.trainer):
            raise LmlabError(
                f"budget.match={cfg.budget.match} counted {budget.ranks(cfg.trainer)} processes from "
                f"trainer.devices={cfg.trainer.devices!r}, but the trainer started {trainer.world_size}: give "
                "trainer.devices as a number"
            )

    def announce(self, trainer: L.Trainer, start: Start) -> str:
        cfg = self.cfg
        return (
            f"pretraining {cfg.model.family} ({self.model.num_params:,} parameters) on {self.corpus.folder} for "
            f"{cfg.trainer.max_steps} steps{budget.spent(cfg.budget)}, {device_line(trainer)}, run folder "
            f"{self.run_folder.path}" + (f", resuming from {start.checkpoint}" if start.checkpoint else "")
        )

    def metrics(self, trainer: L.Trainer) -> dict[str, Any]:
        return final_metrics(trainer, self.task)

    def summary(self, metrics: dict[str, Any], written: Path) -> str:
        best = metrics[M.BEST_VAL_LOSS] if metrics[M.BEST_VAL_LOSS] is not None else float("nan")
        loss, ppl, bpb = (metrics.get(key, float("nan")) for key in (M.VAL_LOSS, M.VAL_PPL, M.VAL_BPB))
        return (
            f"pretrained {self.cfg.model.family}: {metrics[M.TRAIN_STEPS]} steps, {metrics[M.TRAIN_TOKENS]:,} tokens "
            f"in {metrics[M.TRAIN_WALL_SECONDS]:.0f} s ({metrics[M.TRAIN_TOKENS_PER_SEC]:,.0f} tokens/s); val loss "
            f"{loss:.4f} (best {best:.4f}), ppl {ppl:.1f}, bpb {bpb:.3f} -> {written}"
        )


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
