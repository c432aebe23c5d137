"""The training schemas every training verb shares: optimizer and schedule, batches of token streams, the
Trainer (and the lightning.Trainer arguments lmlab sets itself), the logger, the compute budget."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from lmlab.core.errors import LmlabError
from lmlab.core.rules import above, at_least, one_of, output_file, rule

OPTIMIZERS = ("adamw", "sgd")


SCHEDULES = ("cosine", "wsd", "constant", "plateau")


LOGGERS = ("wandb", "csv", "none")


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "64")


def valid_devices(value: Any) -> bool:
    """What Lightning takes: a count >= 1, -1 (all), "auto", or device ids (a list, or "0,1")."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 1 or value == -1
    if isinstance(value, str):
        ids = [i.strip() for i in value.split(",") if i.strip()]
        return value in ("auto", "-1") or (bool(ids) and all(i.isdigit() for i in ids))
    return isinstance(value, list | tuple) and len(value) > 0 and all(isinstance(i, int) and i >= 0 for i in value)


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    name: str = one_of(OPTIMIZERS, "adamw")
    lr: float = at_least(0.0, 1e-3)
    weight_decay: float = at_least(0.0, 0.1)  # applied to matrices and embeddings, never to biases or norms
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    momentum: float = at_least(0.0, 0.0)  # sgd only
    schedule: str = one_of(SCHEDULES, "cosine")
    warmup_steps: int = at_least(0, 0)  # linear warmup (cosine, constant)
    min_lr: float = at_least(0.0, 0.0)  # cosine, wsd: the floor it decays to
    decay_steps: int | None = at_least(1, None)  # cosine: steps to reach min_lr (None: trainer.max_steps)
    # wsd (warmup, stable, decay): constant, then a 1-sqrt cooldown to min_lr over this share of the last steps;
    # a finished run continues to a larger trainer.max_steps from the checkpoint where its cooldown began
    cooldown: float = rule("in (0, 1]", lambda v: 0 < v <= 1, 0.2)
    # plateau: lr *= factor after `plateau_patience` validations without gain
    plateau_factor: float = rule("in (0, 1]", lambda v: 0 < v <= 1, 0.25)
    plateau_patience: int = at_least(0, 0)


@dataclass
class TrainerConfig:
    """Lightning Trainer settings; `devices` may be an int, a list of ids or "auto"."""

    accelerator: str = one_of(ACCELERATORS, "cpu")
    devices: Any = rule('a count >= 1, -1 (all), "auto" or a list of device ids', valid_devices, 1)
    strategy: str = "auto"
    num_nodes: int = at_least(1, 1)
    precision: str = one_of(PRECISIONS, "32-true")
    max_steps: int = at_least(1, 200)  # optimizer steps
    val_every: int = at_least(1, 50)  # optimizer steps between validations (and checkpoints); also at the last step
    log_every: int = at_least(1, 10)
    accumulate: int = at_least(1, 1)  # micro-batches per optimizer step
    gradient_clip_val: float | None = above(0.0, 1.0)
    deterministic: bool = False
    compile: bool = False  # torch.compile the model (opt-in)
    threads: int = at_least(0, 0)  # CPU threads per process (0: torch's choice)
    # any other lightning.Trainer argument, e.g. +trainer.extra.profiler=simple (checked: `training.trainer_extra`)
    extra: dict[str, Any] = field(default_factory=dict)


# lightning.Trainer arguments lmlab sets from its own keys: `trainer.extra` may not give them
LIGHTNING_ARGS_OF_OURS = {
    "accelerator": "trainer.accelerator",
    "devices": "trainer.devices",
    "strategy": "trainer.strategy",
    "num_nodes": "trainer.num_nodes",
    "precision": "trainer.precision",
    "plugins": "trainer.precision",
    "max_steps": "trainer.max_steps",
    "max_epochs": "trainer.max_steps (token streams have no epochs)",
    "min_epochs": "trainer.max_steps (token streams have no epochs)",
    "val_check_interval": "trainer.val_every",
    "check_val_every_n_epoch": "trainer.val_every",
    "num_sanity_val_steps": "nothing: lmlab validates at trainer.val_every",
    "log_every_n_steps": "trainer.log_every",
    "accumulate_grad_batches": "trainer.accumulate",
    "gradient_clip_val": "trainer.gradient_clip_val",
    "deterministic": "trainer.deterministic",
    "logger": "logger=wandb|csv|none",
    "callbacks": "callbacks=<conf/callbacks file> or +callbacks.<name>._target_=...",
    "default_root_dir": "hydra.run.dir",
    "enable_progress_bar": "nothing: the progress is lmlab's (a bar on a terminal, a line per validation otherwise)",
    "enable_checkpointing": "nothing: every run keeps best.ckpt and last.ckpt",
    "enable_model_summary": "+callbacks.summary._target_=lightning.pytorch.callbacks.ModelSummary",
}


def trainer_key_hint(override: str) -> str | None:
    """What to write instead of `trainer.<key>=...` where <key> is a lightning.Trainer argument and not ours
    (an LHT habit): the key of ours that sets it, or `+trainer.extra.<key>`."""
    key, _, value = override.lstrip("+~").partition("=")
    if not key.startswith("trainer.") or key.count(".") != 1:
        return None
    name = key.removeprefix("trainer.")
    if name in {f.name for f in fields(TrainerConfig)}:
        return None
    if name in LIGHTNING_ARGS_OF_OURS:
        return f"{key}: lmlab sets it; use {LIGHTNING_ARGS_OF_OURS[name]}"
    if name == "fast_dev_run":
        return f"{key}: use debug=fdr (one step and one validation batch of the configured model)"
    return f"{key} is not a key of trainer: pass any other lightning.Trainer argument as +trainer.extra.{name}={value}"


@dataclass
class LoggerConfig:
    """Where metrics go: W&B (offline unless asked), CSV files, or nowhere."""

    kind: str = one_of(LOGGERS, "wandb")
    project: str = "lmlab"
    entity: str | None = None
    # wandb; None: W&B's own settings ($WANDB_MODE, `wandb offline`/`online`), else online when logged in
    mode: str | None = one_of(("online", "offline", "disabled"), None)
    tags: list[str] = field(default_factory=list)  # added to the automatic family/dataset/tokenizer tags
    name: str | None = None  # the W&B run's name; None: $WANDB_NAME, else <job>-<family>[-scratch][-s<seed>]


@dataclass
class BudgetConfig:
    """What every family of a comparison is given the same amount of (`lmlab.training.budget`): params (matched sizes,
    trainer.max_steps each), tokens (`tokens` training tokens each) or flops (`flops` training FLOPs each)."""

    match: str = one_of(("params", "tokens", "flops"), "params")
    tokens: float = at_least(0, 0.0)  # match=tokens: training tokens per family (0: not set)
    flops: float = at_least(0, 0.0)  # match=flops: training FLOPs per family, forward + backward (0: not set)


@dataclass
class RunConfig:
    """The keys every training verb (pretrain, finetune, synth) has: its Trainer and logger, how its run folder
    resumes and is replaced, and lightning-hydra-template's top-level keys. Each verb's schema adds its own."""

    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    name: str = "default"  # experiment name: the W&B group
    resume: str = "auto"  # auto (last checkpoint of this run folder, if its config matches) | never | <path>
    metrics_file: str | None = output_file(None)  # also write the final metrics here (the DVC stage's metrics file)
    # lightning-hydra-template's keys: `seed` sets the seeds of batches, finetune and task (null: theirs), `tags`
    # are added to the W&B tags, `ckpt_path` is resume=<path>, `callbacks` are Lightning callbacks
    # ({_target_: class, ...})
    seed: int | None = None
    tags: list[str] = field(default_factory=list)
    ckpt_path: str | None = None
    callbacks: dict[str, Any] = field(default_factory=dict)
    # a run replaced by one of another config: moved to <run folder>.<time> (true), or removed (false: the DVC
    # pipeline's, whose cache holds every run a committed dvc.lock names)
    keep_replaced: bool = True


def apply_lht_keys(cfg: RunConfig) -> None:
    """Carry the lightning-hydra-template keys (`seed`, `ckpt_path`) to the keys they stand for, before the
    run's identity is computed from those."""
    if cfg.seed is not None:
        for owner in ("batches", "finetune", "task"):
            if hasattr(cfg, owner):
                getattr(cfg, owner).seed = cfg.seed
    if cfg.ckpt_path is not None:
        if cfg.resume not in ("auto", cfg.ckpt_path):
            raise LmlabError(f"ckpt_path={cfg.ckpt_path!r} and resume={cfg.resume!r}: give one of them")
        cfg.resume = cfg.ckpt_path
