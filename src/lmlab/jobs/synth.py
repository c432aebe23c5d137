"""`lmlab synth`: train one family on a synthetic task (associative recall, parity) and record the run.

The run goes through pretraining's machinery: `RunFolder` (resume, a changed config replaces the run), the
same Trainer, logger, callbacks and progress, DDP. Callable without the CLI: `synth(cfg, run_dir)` returns the
final metrics. Families are compared at the same `model.width`; the figure that explains recall is the state
a family carries after the training length (`model/state_bytes`, a KV cache included), as in Zoology.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lmlab.analysis import stats
from lmlab.core import metrics as M
from lmlab.core.errors import LmlabError
from lmlab.jobs.config import SynthConfig
from lmlab.models import LanguageModel, ModelConfig, build_model, family_config, state_bytes
from lmlab.tasks.config import SynthTaskConfig
from lmlab.tasks.synthetic import SynthData, SynthTask, answer_counts, make_examples, vocab_size
from lmlab.training import optim
from lmlab.training.identity import code_version
from lmlab.training.job import Fit, TrainingJob, train
from lmlab.training.logger import run_name
from lmlab.training.runs import Start
from lmlab.training.trainer import config_dict, device_line

log = logging.getLogger(__name__)


def identity(cfg: SynthConfig) -> dict[str, Any]:
    """What a checkpoint belongs to: the task (its examples follow from it), model, optimizer, schedule and
    stopping rule."""
    full = config_dict(cfg)
    return {
        **{key: full[key] for key in ("task", "model", "optim", "solved", "solved_validations")},
        "schedule": optim.schedule_identity(cfg.optim, cfg.trainer),
        "code": code_version("lmlab.jobs.synth"),
    }


class StopWhenSolved(Callback):
    """Train to a criterion: stop once val/acc is at or above `solved` at `validations` validations in a row;
    the run took the steps of the first of them (`solved_step`). A solver stops early, so the step budget can
    be large for the families that need it (Zoology's runs all train a fixed budget, which caught this study's
    Transformer mid-transition). `curve` keeps (step, val/acc) at every validation: the report tells a run
    still rising at its budget ("not converged") from a flat one by it. Its state is in the checkpoints, so a
    resumed run counts on and a rerun of a solved one stays stopped."""

    def __init__(self, solved: float | None, validations: int) -> None:
        self.solved, self.validations = solved, validations
        self.streak, self.first, self.solved_step = 0, 0, None
        self.curve: list[list[float]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.solved_step is not None:
            trainer.should_stop = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or M.VAL_ACC not in trainer.callback_metrics:
            return
        step, acc = trainer.global_step, float(trainer.callback_metrics[M.VAL_ACC])
        if self.curve and self.curve[-1][0] == step:
            return  # the validation of a run resumed at its end, counted already
        self.curve.append([step, acc])
        self.streak = self.streak + 1 if self.solved is not None and acc >= self.solved else 0
        self.first = step if self.streak == 1 else self.first
        if self.streak >= self.validations and self.solved_step is None:
            self.solved_step = self.first
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"streak": self.streak, "first": self.first, "solved_step": self.solved_step, "curve": self.curve}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.streak, self.first = state_dict["streak"], state_dict["first"]
        self.solved_step, self.curve = state_dict["solved_step"], state_dict["curve"]


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
    return train(Synthetic, cfg, run_dir)


class Synthetic(TrainingJob):
    kind, log = "synth", log
    cfg: SynthConfig

    def prepare(self) -> Fit:
        cfg = self.cfg
        check_task(cfg)
        optim.check(cfg.optim)
        cfg.model = fitted_model_config(cfg)
        make_examples(cfg.task, 1, cfg.task.seq_len, (0,))  # a task config that cannot make examples fails here
        L.seed_everything(cfg.task.seed, workers=True, verbose=False)
        self.model = model = build_model(cfg.model, vocab_size(cfg.task))
        self.carried = carried = carried_state_bytes(model, cfg.task.seq_len)
        if cfg.trainer.compile:
            model.compile()
        self.task = SynthTask(model, cfg.task, cfg.optim, cfg.trainer.max_steps, cfg.trainer.val_every)
        self.data = SynthData(cfg.task, cfg.trainer.accumulate)
        self.stop = StopWhenSolved(cfg.solved, cfg.solved_validations)
        family, kind = cfg.model.family, cfg.task.kind
        return Fit(
            task=self.task,
            data=self.data,
            identity=identity(cfg),
            tags=[family, kind],
            run_name=run_name(cfg.logger, f"synth-{kind}", family, seed=cfg.seed),
            label=f"synth {kind} {family}",
            curve=M.synth_curve(cfg.task.lengths),
            hyperparams={M.PARAMS: model.num_params, M.STATE_BYTES: carried},
            monitor=M.VAL_ACC,
            mode="max",
            callbacks=[self.stop],
        )

    def announce(self, trainer: L.Trainer, start: Start) -> str:
        cfg = self.cfg
        return (
            f"training {cfg.model.family} ({self.model.num_params:,} parameters, {self.carried:,} state bytes) on "
            f"{cfg.task.kind} ({cfg.task.train_examples:,} examples of {cfg.task.seq_len} tokens) for "
            f"{cfg.trainer.max_steps} steps, {device_line(trainer)}, run folder {self.run_folder.path}"
            + (f", resuming from {start.checkpoint}" if start.checkpoint else "")
        )

    def metrics(self, trainer: L.Trainer) -> dict[str, Any]:
        metrics = final_metrics(self.cfg, trainer, self.task, self.carried)
        metrics |= {"curve": self.stop.curve, "max_steps": self.cfg.trainer.max_steps}
        if self.cfg.solved is not None:
            metrics["solved"] = self.cfg.solved
        if self.stop.solved_step is not None:
            metrics[M.STEPS_TO_SOLVE] = self.stop.solved_step
        if trainer.is_global_zero:
            metrics["intervals"] = intervals(self.task.model, self.data, self.cfg.task)
        return metrics

    def summary(self, metrics: dict[str, Any], written: Path) -> str:
        lengths = self.cfg.task.lengths
        beyond = ", ".join(f"{f}x {metrics[M.val_acc_at(f)]:.3f}" for f in lengths[1:] if M.val_acc_at(f) in metrics)
        return (
            f"{self.cfg.model.family} on {self.cfg.task.kind}: accuracy {metrics.get(M.VAL_ACC, float('nan')):.3f}"
            + (f" (beyond the training length: {beyond})" if beyond else "")
            + f", loss {metrics.get(M.VAL_LOSS, float('nan')):.4f}, {metrics[M.TRAIN_STEPS]} steps in "
            f"{metrics[M.TRAIN_WALL_SECONDS]:.0f} s"
            + (f" (solved at step {metrics[M.STEPS_TO_SOLVE]})" if M.STEPS_TO_SOLVE in metrics else "")
            + f" -> {written}"
        )


@torch.no_grad()
def carried_state_bytes(model: LanguageModel, length: int) -> int:
    """Bytes of the state after reading `length` tokens from the start (a transformer's KV cache of them)."""
    was_training = model.training
    model.eval()
    _, state = model(torch.zeros(1, length, dtype=torch.long), model.init_state(1))
    model.train(was_training)
    return state_bytes(state)


def intervals(model: LanguageModel, data: SynthData, task: SynthTaskConfig) -> dict[str, list[float]]:
    """Each accuracy's 95% interval: a bootstrap over the validation examples (`lmlab.analysis.stats.answer_accuracy`),
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
        # the families' option that changes what they can track (Grazzi et al. 2025): a setting of its own
        **({"negative_eigenvalues": True} if getattr(cfg.model, "negative_eigenvalues", False) else {}),
        "lr": cfg.optim.lr,
        M.PARAMS: task.model.num_params,
        M.STATE_BYTES: carried,
        M.TRAIN_STEPS: trainer.global_step,
        M.TRAIN_TOKENS: task.tokens_seen,
        M.TRAIN_FLOPS: task.train_flops,
        M.TRAIN_WALL_SECONDS: task.wall_seconds,
    }
