"""The job verbs' schemas: one dataclass per verb (pretrain, synth, finetune, evaluate, generate), composed from
the layers' schemas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from lmlab.core import metrics as M
from lmlab.core.rules import at_least, output_dir, output_file, path_name, rule
from lmlab.data.config import (
    BatchesConfig,
    DatasetConfig,
    PathsConfig,
    TokenizerConfig,
)
from lmlab.tasks.config import FinetuneTaskConfig, SynthTaskConfig
from lmlab.training.config import BudgetConfig, LoggerConfig, OptimConfig, RunConfig


@dataclass
class PretrainConfig(RunConfig):
    data: DatasetConfig = field(default_factory=DatasetConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: Any = MISSING  # the family's config (lmlab.models.FAMILIES), checked by lmlab.models.family_config
    batches: BatchesConfig = field(default_factory=BatchesConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    # a run folder without a checkpoint of its own starts from this checkpoint (as resume=<path>); once it has one,
    # resume=auto continues that: how the scaling study continues each budget from the one before's cooldown start
    # (scaling/dvc.yaml), so that a stage run again resumes its finished runs at once
    continue_from: str | None = None


@dataclass
class SynthConfig(RunConfig):
    """`lmlab synth`: one family trained on one synthetic task through pretraining's Lightning path."""

    task: SynthTaskConfig = field(default_factory=SynthTaskConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: Any = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    name: str = "synth"
    # train to a criterion: stop once val/acc is at or above `solved` at `solved_validations` validations in a row
    # (the steps it took: train/steps_to_solve), else at trainer.max_steps; null: always the whole budget
    solved: float | None = rule("in (0, 1]", lambda v: 0 < v <= 1, M.SOLVED)
    solved_validations: int = at_least(1, 2)


@dataclass
class FinetuneConfig(RunConfig):
    data: DatasetConfig = field(default_factory=DatasetConfig)
    task_data: DatasetConfig = field(default_factory=DatasetConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: Any = MISSING  # the backbone family's config, as pretraining used it
    finetune: FinetuneTaskConfig = field(default_factory=FinetuneTaskConfig)
    batches: BatchesConfig = field(default_factory=BatchesConfig)  # the LM adaptation's, as pretraining's
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class EvaluateConfig:
    """Test figures for one family, from its pretraining and fine-tuning run folders."""

    data: DatasetConfig = field(default_factory=DatasetConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    family: str = path_name("lstm")  # <metrics_dir>/<family>.json and the rest
    pretrain_run: str = MISSING  # run folders: checkpoints/best.ckpt, metrics.json, val_curve.csv
    finetune_run: str = MISSING
    scratch_run: str | None = None  # the from-scratch baseline's run folder (None: not evaluated)
    batch_size: int = at_least(1, 16)
    # recurrent families: tokens per forward pass (state carried); transformers use their context
    window: int = at_least(1, 256)
    max_tokens: int | None = at_least(1, 65536)  # cap on test tokens (None: the whole split)
    speed_tokens: int = at_least(1, 16384)  # tokens timed for inference throughput
    generate_tokens: int = at_least(1, 64)  # tokens timed for generation latency, and the sample's length
    # long context (`lmlab.jobs.long_context`): windows of 4x the training window for loss by position and past the
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
    out: str = output_file(MISSING)  # <metrics_dir>/<family>.json
    curves_dir: str = output_dir(MISSING)  # per-step curves (csv) for plots
    sample_file: str = output_file(MISSING)  # a generated sample, for the report
    # per-example losses and predictions, for the report's intervals (lmlab.analysis.examples)
    examples_file: str = output_file(MISSING)
    setting_file: str = output_file(MISSING)  # what the figures were measured on, for the report's Setting section
    # the test figures as a W&B run of job type evaluate, linked to the runs it evaluated (`runs` in its config)
    logger: LoggerConfig = field(default_factory=lambda: LoggerConfig(kind="none"))
    name: str = "default"  # experiment name: the W&B group, as the training runs'
    wandb_dir: str = output_dir(MISSING)  # the evaluation's W&B run folder goes in here (wandb/)


@dataclass
class GenerateConfig:
    """Sampling from a pretraining checkpoint."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    family: str = path_name("lstm")  # picks the default checkpoint of the pipeline's run folder
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
