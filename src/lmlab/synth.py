"""`lmlab synth`: train one family on a synthetic task (associative recall, parity) and record the run.

The run goes through pretraining's machinery: `RunFolder` (resume, a changed config replaces the run), the
same Trainer, logger, callbacks and progress, DDP. Callable without the CLI: `synth(cfg, run_dir)` returns the
final metrics. Families are compared at the same `model.width`; the figure that explains recall is the state
a family carries after the training length (`model/state_bytes`, a KV cache included), as in Zoology.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lmlab import metrics as M
from lmlab import stats
from lmlab.config import SynthConfig, SynthTaskConfig
from lmlab.data.atomic import write_json
from lmlab.errors import LmlabError
from lmlab.models import LanguageModel, ModelConfig, build_model, family_config, state_bytes
from lmlab.runs import RunFolder, code_version, train_held
from lmlab.tasks import optim
from lmlab.tasks.synth import SynthData, SynthTask, answer_counts, make_examples, vocab_size
from lmlab.training import (
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


def identity(cfg: SynthConfig) -> dict[str, Any]:
    """What a checkpoint belongs to: the task (its examples follow from it), model, optimizer and schedule."""
    full = config_dict(cfg)
    return {
        **{key: full[key] for key in ("task", "model", "optim")},
        "schedule": optim.schedule_identity(cfg.optim, cfg.trainer),
        "code": code_version("lmlab.synth"),
    }


def check_task(cfg: SynthConfig) -> None:
    lengths = cfg.task.lengths
    if not lengths or lengths[0] != 1 or any(b <= a for a, b in zip(lengths, lengths[1:], strict=False)):
        raise LmlabError(
            f"task.lengths={lengths}: give increasing multiples of task.seq_len starting at 1, e.g. [1, 2, 4]"
        )


def fitted_model_config(cfg: SynthConfig) -> ModelConfig:
    """The family's config for this task: a model with a length limit (a transformer's `context`) is given the
    longest sequence validation feeds, so that it is measured past its training length instead of refused;
    rotary positions go on there, a learned table's rows beyond the training length stay untrained."""
    model = family_config(cfg.model)
    longest = cfg.task.seq_len * cfg.task.lengths[-1]
    if getattr(model, "context", longest) < longest:
        model = replace(model, context=longest)
    return model


def synth(cfg: SynthConfig, run_dir: Path) -> dict[str, Any]:
    return train_held(cfg, run_dir, train_in)


def train_in(cfg: SynthConfig, run: RunFolder) -> dict[str, Any]:
    """The run in its held folder; the config is checked in full before `run.begin` changes the folder."""
    if cfg.trainer.threads > 0:
        torch.set_num_threads(cfg.trainer.threads)
    check_task(cfg)
    optim.check(cfg.optim)
    cfg.model = fitted_model_config(cfg)
    make_examples(cfg.task, 1, cfg.task.seq_len, (0,))  # a task config that cannot make examples fails here
    L.seed_everything(cfg.task.seed, workers=True, verbose=False)
    model = build_model(cfg.model, vocab_size(cfg.task))
    given_id = os.environ.get("WANDB_RUN_ID")
    start = run.plan(cfg.resume, identity(cfg), secrets.token_hex(4), given_id, None, cfg.keep_replaced)
    carried = carried_state_bytes(model, cfg.task.seq_len)
    if cfg.trainer.compile:
        model.compile()
    task = SynthTask(model, cfg.task, cfg.optim, cfg.trainer.max_steps, cfg.trainer.val_every)
    data = SynthData(cfg.task, cfg.trainer.accumulate)

    family, kind = cfg.model.family, cfg.task.kind
    tags = [family, kind, *cfg.tags]
    name = run_name(cfg.logger, f"synth-{kind}", family, seed=cfg.seed)
    logger = make_logger(cfg.logger, run.path, start.run_id, cfg.name, "synth", tags, config_dict(cfg), name)
    callbacks: list[Callback] = [
        ValCurve(run.path / "val_curve.csv", M.synth_curve(cfg.task.lengths)),
        *build_callbacks(cfg.callbacks),
    ]
    trainer = make_trainer(
        cfg.trainer, run.path, logger, callbacks, monitor=M.VAL_ACC, mode="max", label=f"synth {kind} {family}"
    )
    run.begin(start, trainer.is_global_zero)
    if logger is not None:
        logger.log_hyperparams({M.PARAMS: model.num_params, M.STATE_BYTES: carried})
    if trainer.is_global_zero:
        log.info(
            "training %s (%s parameters, %s state bytes) on %s (%s examples of %d tokens) for %d steps, %s, "
            "run folder %s%s",
            family,
            f"{model.num_params:,}",
            f"{carried:,}",
            kind,
            f"{cfg.task.train_examples:,}",
            cfg.task.seq_len,
            cfg.trainer.max_steps,
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
    metrics = final_metrics(cfg, trainer, task, carried)
    if trainer.is_global_zero:
        metrics["intervals"] = intervals(task.model, data, cfg.task)
        write_json(run.path / "metrics.json", metrics)
        if cfg.metrics_file:
            write_json(Path(cfg.metrics_file), metrics)
        beyond = ", ".join(
            f"{f}x {metrics[M.val_acc_at(f)]:.3f}" for f in cfg.task.lengths[1:] if M.val_acc_at(f) in metrics
        )
        log.info(
            "%s on %s: accuracy %.3f%s, loss %.4f, %d steps in %.0f s -> %s",
            family,
            kind,
            metrics.get(M.VAL_ACC, float("nan")),
            f" (beyond the training length: {beyond})" if beyond else "",
            metrics.get(M.VAL_LOSS, float("nan")),
            metrics[M.TRAIN_STEPS],
            metrics[M.TRAIN_WALL_SECONDS],
            run.path / "metrics.json",
        )
    return metrics


@torch.no_grad()
def carried_state_bytes(model: LanguageModel, length: int) -> int:
    """Bytes of the state after reading `length` tokens from the start (a transformer's KV cache of them)."""
    was_training = model.training
    model.eval()
    _, state = model(torch.zeros(1, length, dtype=torch.long), model.init_state(1))
    model.train(was_training)
    return state_bytes(state)


def intervals(model: LanguageModel, data: SynthData, task: SynthTaskConfig) -> dict[str, list[float]]:
    """Each accuracy's 95% interval: a bootstrap over the validation examples (`lmlab.stats.answer_accuracy`),
    from a pass of the final model in float32 (under a mixed-precision trainer the logged figure was measured
    in that precision, and may sit at the interval's edge). A length with no answers has none."""
    data.setup("validate")  # a run resumed at its end did not make the examples yet
    found = {}
    for factor, examples in zip(task.lengths, data.vals, strict=True):
        correct, answers = answer_counts(model, examples, task.seq_len if factor > 1 else 0, task.val_batch_size)
        if answers.sum() == 0:
            continue
        interval = stats.answer_accuracy(correct, answers)
        found[M.val_acc_at(factor)] = [interval.low, interval.high]
    return found


def final_metrics(cfg: SynthConfig, trainer: L.Trainer, task: SynthTask, carried: int) -> dict[str, Any]:
    """The last validation's figures (also of a run resumed at its end), the task and the model's sizes."""
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")} or task.last_val
    return {
        **logged,
        "task": cfg.task.kind,
        "family": cfg.model.family,
        "width": cfg.model.width,
        "seq_len": cfg.task.seq_len,
        "lengths": list(cfg.task.lengths),
        **({"pairs": cfg.task.pairs} if cfg.task.kind == "mqar" else {"modulus": cfg.task.modulus}),
        "lr": cfg.optim.lr,
        M.PARAMS: task.model.num_params,
        M.STATE_BYTES: carried,
        M.TRAIN_STEPS: trainer.global_step,
        M.TRAIN_TOKENS: task.tokens_seen,
        M.TRAIN_FLOPS: task.train_flops,
        M.TRAIN_WALL_SECONDS: task.wall_seconds,
    }
