"""What every training verb shares: the Lightning Trainer from `TrainerConfig`, the logger, the val curve."""

from __future__ import annotations

import csv
import inspect
import io
import logging
import os
import subprocess
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from lmlab.core import metrics as M
from lmlab.core.atomic import write_atomic
from lmlab.core.errors import LmlabError
from lmlab.training.config import LIGHTNING_ARGS_OF_OURS, LoggerConfig, TrainerConfig
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


def wandb_mode(cfg: LoggerConfig) -> str:
    """Whether W&B logs online: `logger.mode`, else W&B's own settings, else offline when there is no W&B
    account to sync to.

    W&B's settings, in its order: $WANDB_MODE; under `wandb agent` (WANDB_SWEEP_ID set) online, since the
    sweep's server needs the run's metrics; the mode `wandb offline` or `wandb disabled` wrote to W&B's settings
    files (`wandb online` clears it); then online for a user logged in (`wandb login` or $WANDB_API_KEY), as W&B
    itself does. Without an account nothing leaves the machine: offline.
    """
    mode = cfg.mode or os.environ.get("WANDB_MODE")
    if mode == "":  # W&B itself refuses it when it reads its settings, with a validation traceback
        raise LmlabError("WANDB_MODE is set but empty: unset it (`unset WANDB_MODE`) or give online or offline")
    if mode is None and os.environ.get("WANDB_SWEEP_ID"):
        mode = "online"
    if mode is None:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        settings = wandb_setup.singleton().settings
        mode = settings.read_system_settings().all().get("mode")
        if mode is None:
            logged_in = os.environ.get("WANDB_API_KEY") or wbauth.read_netrc_auth(host=settings.base_url)
            mode = "online" if logged_in else "offline"
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)  # W&B's older names
    if mode not in ("online", "offline", "disabled"):
        raise LmlabError(f"logger.mode={mode!r} (or WANDB_MODE): use online, offline or disabled")
    return mode


def run_name(cfg: LoggerConfig, job: str, family: str, scratch: bool = False, seed: int | None = None) -> str:
    """The W&B run's name: `logger.name`, else $WANDB_NAME, else `<job>-<family>[-scratch][-s<seed>]`, the run
    id appended for a sweep trial (WANDB_RUN_ID set by `lmlab sweep` or `wandb agent`), so trials differ."""
    if cfg.name:
        return cfg.name
    if os.environ.get("WANDB_NAME"):
        return os.environ["WANDB_NAME"]
    parts = [job, family, *(["scratch"] if scratch else []), *([f"s{seed}"] if seed is not None else [])]
    if os.environ.get("WANDB_RUN_ID"):
        parts.append(os.environ["WANDB_RUN_ID"])
    return "-".join(parts)


def provenance() -> dict[str, str]:
    """Where a run's code came from, for its W&B config: the git commit (and whether the tree had edits) and
    the DVC experiment, when there are ones. W&B's own git capture is off: it also saves a diff of the tree."""
    found: dict[str, str] = {}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            found["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True)
            found["git_dirty"] = str(bool(dirty.stdout.strip())).lower()
    except (OSError, subprocess.TimeoutExpired):  # no git on the machine
        pass
    if os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run` for the stages it runs
        found["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    return found


def env_tags() -> list[str]:
    """$WANDB_TAGS (comma-separated), which W&B drops when tags are passed explicitly: `lmlab sweep` tags trials so."""
    return [tag.strip() for tag in os.environ.get("WANDB_TAGS", "").split(",") if tag.strip()]


def make_logger(
    cfg: LoggerConfig,
    run_dir: Path,
    run_id: str,
    group: str,
    job_type: str,
    tags: list[str],
    config: dict,
    name: str | None = None,
) -> Logger | None:
    """The run's logger; for W&B, the run `run_id` named `name` (None: the run folder's name) in `group`."""
    if cfg.kind == "none":
        return None
    if cfg.kind == "csv":
        # one version folder per start: Lightning's CSV writer empties an existing one (a resume would lose rows)
        return CSVLogger(run_dir / "csv", name=run_id)
    import wandb

    logger = WandbLogger(
        project=cfg.project,
        entity=cfg.entity,
        save_dir=str(run_dir),
        id=run_id,
        name=name or run_dir.name,
        group=group,
        job_type=job_type,
        tags=list(dict.fromkeys([*tags, *cfg.tags, *env_tags()])),
        config={**config, "provenance": provenance()},
        mode=wandb_mode(cfg),
        # silent: W&B's ~30 lines per run (banner, history and summary tables) go; `finish_logger` says where
        # the run is in one line
        settings=wandb.Settings(save_code=False, disable_git=True, silent=True),
    )
    # Lightning always passes `anonymous` (None unless asked), which W&B 0.2x warns about on every run
    logger._wandb_init.pop("anonymous", None)
    return logger


def finish_logger(logger: Logger | None, failed: bool) -> None:
    """End the W&B run of this job (rank zero), so the next job of a multirun gets its own."""
    if isinstance(logger, WandbLogger):
        import wandb

        run = wandb.run
        if run is not None:
            folder = Path(run.dir).parent
            where = run.url if not run.offline else f"{folder} (upload it with `wandb sync {folder}`)"
            wandb.finish(exit_code=1 if failed else 0)
            log.info("W&B run %s: %s", run.id, where)


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
