"""The Lightning Trainer from `TrainerConfig`: precision, checkpoints written whole, the checkpoints and progress
every run has, `trainer.extra` checked; the device line and the config as a plain dict."""

from __future__ import annotations

import inspect
import io
import logging
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lmlab.core import metrics as M
from lmlab.core.atomic import write_atomic
from lmlab.core.errors import LmlabError
from lmlab.training.callbacks import CheckpointOnStop, RunCheckpoint
from lmlab.training.config import LIGHTNING_ARGS_OF_OURS, TrainerConfig
from lmlab.training.finite import FiniteLoss
from lmlab.training.progress import StepProgress

log = logging.getLogger(__name__)

# Lightning's advice for dataloaders that do their work in the main process: ours slice a memmap.
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")  # resume does so
warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")  # inside Lightning, not ours
# Lightning's start and stop lines say nothing a user can act on: the job's own lines name the device and the
# result instead (pretrain.py, finetune.py).
QUIET_LIGHTNING = (
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "`Trainer.fit` stopped:",
    "Restoring states from the checkpoint",  # the start line says "resuming from <checkpoint>"
    "Restored all states from the checkpoint",
    "💡",
    "Initializing distributed:",  # DDP: the start line says "cpu x2"
    f"{'-' * 100}\ndistributed_backend=",
)
warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*")  # inside Lightning's all_gather
# what the tasks log at validation is the same on every rank: summed over ranks by the task (`strategy.reduce`)
# or counted over all ranks (train/tokens)
warnings.filterwarnings("ignore", message=r".*It is recommended to use `self.log\(.*sync_dist=True.*")


def quiet_lightning(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(QUIET_LIGHTNING) and "litlogger" not in record.getMessage()


for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(name).addFilter(quiet_lightning)
logging.getLogger("lightning.fabric.utilities.distributed").addFilter(quiet_lightning)


class CachedAutocast(MixedPrecision):
    """Lightning's AMP with torch.autocast's weight-cast cache kept on in the step (Lightning 2.6 turns it off),
    and gradient clipping allowed with a fused optimizer when there is no gradient scaler (bf16).

    Without the cache a recurrent model re-casts its weights at every time step: 13-15% of a bf16 step
    on CPU for rnn and gru. Lightning turned it off (#20921) for steps that run the model under no_grad
    and then with grad in one autocast region (#20644); our steps never do. Upstream fix: Lightning#21616.
    Lightning refuses to clip for a fused optimizer (the fused AdamW `build_optimizer` makes on a GPU),
    because with fp16 it would clip scaled gradients; bf16 has no scaler, so clipping is sound there.
    """

    def autocast_context_manager(self) -> torch.autocast:
        dtype = torch.bfloat16 if self.precision == "bf16-mixed" else torch.half
        return torch.autocast(self.device, dtype=dtype)

    def clip_gradients(
        self,
        optimizer: torch.optim.Optimizer,
        clip_val: int | float = 0.0,
        gradient_clip_algorithm: GradClipAlgorithmType = GradClipAlgorithmType.NORM,
    ) -> None:
        if self.scaler is None:
            Precision.clip_gradients(self, optimizer, clip_val, gradient_clip_algorithm)
        else:
            super().clip_gradients(optimizer, clip_val, gradient_clip_algorithm)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written whole or not at all, on any filesystem. Lightning's writer stages the file in $TMPDIR
    and moves it over: across filesystems (a tmpfs, a network disk, a SLURM scratch) the move is a copy, which a
    kill or a full disk cuts short, leaving `last.ckpt` empty or partial. Here the file is written beside its
    target and renamed over it (`write_atomic`): until the new one is whole, the previous one stays."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_atomic(Path(path), buffer.getbuffer(), elsewhere="hydra.run.dir (the run folder)")


def trainer_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """`trainer.extra`, refused key by key where it is not a lightning.Trainer argument or is one lmlab sets."""
    accepted = inspect.signature(L.Trainer.__init__).parameters
    for key in extra:
        if key in LIGHTNING_ARGS_OF_OURS:
            raise LmlabError(f"trainer.extra.{key}: lmlab sets it; use {LIGHTNING_ARGS_OF_OURS[key]}")
        if key not in accepted or key == "self":
            free = sorted(set(accepted) - set(LIGHTNING_ARGS_OF_OURS) - {"self"})
            raise LmlabError(f"trainer.extra.{key}: not a lightning.Trainer argument; it takes {', '.join(free)}")
    return dict(extra)


def on_gpu(accelerator: str) -> bool:
    """Whether a trainer with this accelerator trains on CUDA GPUs: one asked for by name, or `auto` where CUDA
    is present. A GPU asked for on a machine without one is True (Lightning's error then says so): callers
    that fall back to the CPU check `torch.cuda.is_available()` too."""
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def precision_args(cfg: TrainerConfig) -> dict[str, Any]:
    """`precision=` for the Trainer, or for mixed precision a `CachedAutocast` plugin (Lightning takes one)."""
    if cfg.precision not in ("bf16-mixed", "16-mixed") or cfg.strategy.startswith("fsdp"):
        return {"precision": cfg.precision}  # FSDP takes only its own precision plugin, which Lightning builds
    return {"plugins": [CachedAutocast(cfg.precision, "cuda" if on_gpu(cfg.accelerator) else "cpu")]}


def make_trainer(
    cfg: TrainerConfig,
    run_dir: Path,
    logger: Logger | None,
    callbacks: list[Callback],
    monitor: str = M.VAL_LOSS,
    mode: str = "min",
    label: str = "training",
    hidden: tuple[str, ...] = (),
) -> L.Trainer:
    """A Trainer that validates every `val_every` steps, keeping `best.ckpt` (by `monitor`) and `last.ckpt`;
    its progress (`StepProgress`) is labelled `label`, without the metrics in `hidden`."""
    best = RunCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    # Lightning writes save_last only when the monitored checkpoint was saved too (val/loss improved);
    # resuming needs the newest state at every validation, so "last" is its own unmonitored checkpoint.
    last = RunCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="last",
        monitor=None,
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    args = precision_args(cfg) | trainer_extra(cfg.extra)
    args["plugins"] = [*args.get("plugins", []), AtomicCheckpointIO()]
    try:
        return L.Trainer(
            accelerator=cfg.accelerator,
            devices=cfg.devices,
            strategy=cfg.strategy,
            num_nodes=cfg.num_nodes,
            **args,
            max_steps=cfg.max_steps,
            max_epochs=-1,
            val_check_interval=cfg.val_every * cfg.accumulate,
            check_val_every_n_epoch=None,
            num_sanity_val_steps=0,
            log_every_n_steps=cfg.log_every,
            accumulate_grad_batches=cfg.accumulate,
            gradient_clip_val=cfg.gradient_clip_val,
            deterministic=cfg.deterministic,
            logger=logger if logger is not None else False,
            callbacks=[
                best,
                last,
                CheckpointOnStop(run_dir / "checkpoints" / "last.ckpt"),
                FiniteLoss(),
                StepProgress(label, hidden=hidden),
                *callbacks,
            ],
            default_root_dir=run_dir,
            enable_model_summary=False,
            enable_progress_bar=False,  # StepProgress counts steps of max_steps, also when piped
        )
    except (MisconfigurationException, TypeError, ValueError) as err:  # e.g. accelerator=gpu on a machine without one
        raise LmlabError(
            f"trainer settings (accelerator={cfg.accelerator}, devices={cfg.devices}, strategy={cfg.strategy}, "
            f"precision={cfg.precision}) do not work here: {err}"
        ) from None


def device_line(trainer: L.Trainer) -> str:
    """Where a job trains, for its start line: device x processes and precision (Lightning's own lines are
    filtered out: `QUIET_LIGHTNING`)."""
    return f"{trainer.strategy.root_device.type} x{trainer.world_size}, precision {trainer.precision}"


def config_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain data (for W&B and run.json); holds no environment and no secrets."""
    return asdict(cfg)
