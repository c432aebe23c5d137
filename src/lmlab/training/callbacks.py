"""The callbacks every training run has (the val curve, the checkpoints that follow a moved folder, the state
kept on SIGTERM, the wsd stable checkpoint) and those a config adds (`callbacks=`)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lmlab.core import metrics as M
from lmlab.core.errors import LmlabError


class ValCurve(Callback):
    """Appends one row per validation to ``val_curve.csv`` (rank zero); a resumed run drops rows past its step."""

    def __init__(self, path: Path, fields: tuple[str, ...] = M.PRETRAIN_CURVE) -> None:
        self.path, self.fields = path, fields

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.path.is_file():
            return
        with self.path.open(newline="") as f:
            rows = [row for row in csv.DictReader(f) if int(row[M.STEP]) <= trainer.global_step]
        self._write(rows, mode="w")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.state.fn != "fit":
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        row = {M.STEP: trainer.global_step, **{k: metrics.get(k, "") for k in self.fields[1:]}}
        row[M.TRAIN_LR] = trainer.optimizers[0].param_groups[-1]["lr"]  # the top layer's (fine-tuning: the head's)
        self._write([row], mode="a")

    def _write(self, rows: list[dict[str, Any]], mode: str) -> None:
        new = mode == "w" or not self.path.is_file()
        with self.path.open(mode, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            if new:
                writer.writeheader()
            writer.writerows(rows)


class CheckpointAt(Callback):
    """A checkpoint of the state after optimizer step `step` (wsd: where the cooldown begins), which a longer
    budget continues from. Saved where Lightning's step-interval checkpoints are (`on_train_batch_end`), so a
    resume from it continues with the next batch."""

    def __init__(self, step: int, path: Path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step and not trainer.fit_loop._should_accumulate():
            trainer.save_checkpoint(self.path, weights_only=False)


class RunCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint that follows its run folder when it moves (`mv`, a `dvc pull` into another checkout):
    Lightning reloads the best score only when the saved `dirpath` equals the new one, so a resumed moved run
    took its next validation for the best and replaced a better best.ckpt. The saved paths are read as the same
    files in the new folder."""

    @property
    def state_key(self) -> str:
        """ModelCheckpoint's key, so its state in a checkpoint is this one's (Lightning keys by class name)."""
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if old is not None and self.dirpath is not None and old != self.dirpath:

            def moved(path: Any) -> Any:
                return str(Path(self.dirpath) / Path(path).name) if path else path

            state_dict = {
                **state_dict,
                "dirpath": self.dirpath,
                **{
                    key: moved(state_dict.get(key))
                    for key in ("best_model_path", "kth_best_model_path", "last_model_path")
                },
                "best_k_models": {moved(k): v for k, v in state_dict.get("best_k_models", {}).items()},
            }
        super().load_state_dict(state_dict)


class CheckpointOnStop(Callback):
    """SIGTERM during a fit (Lightning stops after the batch with its SIGTERMException): keep the state at the
    end of the last optimizer step in `path` (last.ckpt), so `resume=auto` continues from there, as it would
    from a validation's checkpoint, instead of losing the steps since. Mid-way through an accumulated step, or
    during a validation, there is no such state: the checkpoint stays as the last validation left it."""

    def __init__(self, path: Path) -> None:
        self.path, self.saved_step, self.stepped, self.seen = path, None, False, -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen, self.stepped = trainer.global_step, False

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.stepped, self.seen = trainer.global_step != self.seen, trainer.global_step

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and self.stepped and not trainer.validating:
            trainer.save_checkpoint(self.path, weights_only=False)
            self.saved_step = trainer.global_step


def build_callbacks(specs: dict[str, Any]) -> list[Callback]:
    """The `callbacks` group's Lightning callbacks ({name: {_target_: class, ...}}), as Hydra instantiates them;
    a spec that does not build one is an error naming `callbacks.<name>`."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    built = []
    for name, spec in specs.items():
        if spec is None:  # a callback switched off with callbacks.<name>=null
            continue
        if not isinstance(spec, dict) or "_target_" not in spec:
            raise LmlabError(f"callbacks.{name}: give its class as _target_ (e.g. {LR_MONITOR}) and its arguments")
        try:
            callback = instantiate(spec)
        except (InstantiationException, TypeError, ValueError) as err:  # no such class, wrong arguments
            raise LmlabError(f"callbacks.{name}: {err}") from None
        if not isinstance(callback, Callback):
            raise LmlabError(f"callbacks.{name}: {spec['_target_']} is not a lightning.pytorch Callback")
        built.append(callback)
    return built


LR_MONITOR = "lightning.pytorch.callbacks.LearningRateMonitor"
