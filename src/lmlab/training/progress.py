"""Training progress for people: a bar on a terminal, one log line per validation otherwise.

Lightning's own bar counts batches of an epoch, which an endless token stream does not have (it read
`Epoch 0/-2`, `Validation 1/--`), and shows nothing when the output is a pipe, `tee` or a SLURM log. This
one counts optimizer steps against `trainer.max_steps`, with the figures a researcher watches.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from lmlab.core import metrics as M

log = logging.getLogger(__name__)

# (label, metric, format): each shown when the task logs it
TRAIN_FIGURES = (
    ("loss", M.TRAIN_LOSS, "{:.3f}"),
    ("loss", M.FINETUNE_TRAIN_LOSS, "{:.3f}"),
    ("tokens/s", M.TRAIN_TOKENS_PER_SEC, "{:,.0f}"),
)
VAL_FIGURES = (
    ("val loss", M.VAL_LOSS, "{:.4f}"),
    ("ppl", M.VAL_PPL, "{:.1f}"),
    ("bpb", M.VAL_BPB, "{:.3f}"),
    ("val loss", M.FINETUNE_VAL_LOSS, "{:.4f}"),
    ("val acc", M.FINETUNE_VAL_ACC, "{:.3f}"),
    ("val F1", M.FINETUNE_VAL_F1, "{:.3f}"),
    ("val acc", M.VAL_ACC, "{:.3f}"),
)


def figures(metrics: dict[str, Any], chosen: tuple[tuple[str, str, str], ...]) -> str:
    """The chosen figures present and finite; with the validation figures, any synthetic-task accuracy past the
    training length (`lmlab.core.metrics.val_acc_at`) as "<k>x"."""
    beyond = []
    if chosen is VAL_FIGURES:
        for key in sorted(metrics, key=lambda k: (len(k), k)):
            if (factor := M.factor_of(key)) is not None:
                beyond.append((f"{factor}x", key, "{:.3f}"))
    shown = []
    for label, key, form in (*chosen, *beyond):
        if key in metrics and math.isfinite(value := float(metrics[key])):
            shown.append(f"{label} {form.format(value)}")
    return ", ".join(shown)


def duration(seconds: float) -> str:
    """Seconds as 45s, 3m05s or 2h10m."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class StepProgress(Callback):
    """Steps of `max_steps`, loss, tokens/s and time left (rank zero): a bar on a terminal (`terminal` None:
    whether stderr is one), else a line at every validation; the metrics in `hidden` are left out (LM
    adaptation's bpb, which has no byte counts behind it)."""

    def __init__(self, label: str, terminal: bool | None = None, hidden: tuple[str, ...] = ()) -> None:
        self.label = label
        self.shown = tuple(f for f in TRAIN_FIGURES + VAL_FIGURES if f[1] not in hidden)
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._first_step, self._began = 0, 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._first_step, self._began = trainer.global_step, time.perf_counter()
        if self.terminal:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("steps {task.fields[figures]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,  # the finished bar stays: steps, last loss and figures
            )
            self._bar.start()
            self._task = self._bar.add_task(
                self.label, total=trainer.max_steps, completed=trainer.global_step, figures=""
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._bar is None or self._task is None or trainer.fit_loop._should_accumulate():
            return
        if trainer.global_step % trainer.log_every_n_steps:  # reading the figures is a host sync on a GPU
            self._bar.update(self._task, completed=trainer.global_step)
            return
        shown = figures(trainer.callback_metrics, self.shown)
        self._bar.update(self._task, completed=trainer.global_step, figures=f"· {shown}" if shown else "")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.state.fn != "fit":
            return
        step, total = trainer.global_step, trainer.max_steps
        done = step - self._first_step
        left = (time.perf_counter() - self._began) / done * (total - step) if done > 0 else math.nan
        shown = figures(trainer.callback_metrics, self.shown)
        log.info(
            "%s step %d/%d: %s%s",
            self.label,
            step,
            total,
            shown,
            f", {duration(left)} left" if step < total and math.isfinite(left) else "",
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None and self._task is not None:
            shown = figures(trainer.callback_metrics, self.shown)
            self._bar.update(self._task, completed=trainer.global_step, figures=f"· {shown}" if shown else "")
        self._stop()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
