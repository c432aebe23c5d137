"""A tiny tokenized corpus in the tokenize stage's format, and tiny configs to pretrain on it in seconds.

The token streams are synthetic but learnable: documents of counting runs
(``a, a+1, a+2, ...`` modulo the vocabulary), each ended by the EOD id, so a
model that learns "next = this + 1" drives the loss far below ln(vocab).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmlab.config import (
    DatasetConfig,
    FinetuneConfig,
    FinetuneTaskConfig,
    LoggerConfig,
    OptimConfig,
    PathsConfig,
    PretrainConfig,
    PretrainTaskConfig,
    TokenizerConfig,
    TrainerConfig,
)
from lmlab.data import corpus as corpus_format
from lmlab.models import ModelConfig, family_config

EOD = corpus_format.SPECIAL_IDS["eod"]
FIRST_WORD = len(corpus_format.SPECIAL_IDS)  # the ids before are unk, bos, eod, pad
# What a tiny model sets beyond its family's defaults (the transformer's own keys only for it).
TINY_MODEL = {"layers": 2, "width": 32, "dropout": 0.1}
TINY_TRANSFORMER = {"heads": 2, "context": 16}


def counting_stream(n_tokens: int, vocab_size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out: list[int] = []
    words = vocab_size - FIRST_WORD
    while len(out) < n_tokens:
        start, length = int(rng.integers(words)), int(rng.integers(5, 40))
        out += [FIRST_WORD + (start + i) % words for i in range(length)] + [EOD]
    return np.array(out[:n_tokens], dtype=np.uint16)


def write_corpus(
    data_dir: Path,
    name: str = "sotu",
    tokenizer: TokenizerConfig | None = None,
    vocab_size: int = 32,
    tokens: dict[str, int] | None = None,
) -> Path:
    """Write ``data_dir/tokenized/<name>-<tokenizer>/`` with counting streams for train/val/test."""
    tokenizer = tokenizer or TokenizerConfig()
    folder = PathsConfig(data_dir=str(data_dir)).tokenized(name, tokenizer)
    sizes = tokens or {"train": 20_000, "val": 4_000, "test": 4_000}
    streams = {split: counting_stream(n, vocab_size, seed) for seed, (split, n) in enumerate(sizes.items())}
    corpus_format.write_corpus(folder, streams, vocab_size, {split: 3 * n for split, n in sizes.items()}, corpus=name)
    return folder


def tiny_model(family: str, **overrides: object) -> ModelConfig:
    """`family`'s config at the tiny size tests train in seconds."""
    extra = TINY_TRANSFORMER if family == "transformer" else {}
    return family_config({"family": family, **TINY_MODEL, **extra, **overrides})


def tiny_config(data_dir: Path, family: str = "lstm", **trainer: object) -> PretrainConfig:
    """A PretrainConfig that trains `family` on `write_corpus(data_dir)` in a second or two on a CPU."""
    model = tiny_model(family)
    trainer_cfg = TrainerConfig(max_steps=20, val_every=10, log_every=5, threads=1)
    for key, value in trainer.items():
        setattr(trainer_cfg, key, value)
    return PretrainConfig(
        data=DatasetConfig(name="sotu"),
        tokenizer=TokenizerConfig(),
        paths=PathsConfig(data_dir=str(data_dir)),
        model=model,
        task=PretrainTaskConfig(batch_size=4, bptt=8, val_batch_size=4, val_max_tokens=None),
        optim=OptimConfig(lr=3e-3, warmup_steps=2, min_lr=3e-4),
        trainer=trainer_cfg,
        logger=LoggerConfig(kind="none"),
    )


def tiny_overrides(max_steps: int, val_every: int = 5, family: str = "lstm") -> list[str]:
    """`tiny_config` as Hydra overrides of the shipped configs, for runs through the CLI."""
    extra = TINY_TRANSFORMER if family == "transformer" else {}
    return [
        *(f"model.{key}={value}" for key, value in {**TINY_MODEL, **extra}.items()),
        "task.batch_size=4",
        "task.bptt=8",
        "task.val_batch_size=4",
        "task.val_max_tokens=null",
        f"trainer.max_steps={max_steps}",
        f"trainer.val_every={val_every}",
        "trainer.log_every=5",
        "trainer.threads=1",
        "optim.warmup_steps=2",
    ]


def tiny_finetune_config(
    data_dir: Path, family: str, checkpoint: Path | str, task_data: str = "reviews", **finetune: object
) -> FinetuneConfig:
    """A FinetuneConfig for `tiny_config`'s architecture: a few dozen steps on a tiny labeled set."""
    pretrain = tiny_config(data_dir, family, max_steps=60, val_every=20)
    return FinetuneConfig(
        data=pretrain.data,
        task_data=DatasetConfig(name=task_data),
        tokenizer=pretrain.tokenizer,
        paths=pretrain.paths,
        model=pretrain.model,
        finetune=FinetuneTaskConfig(
            **{
                "checkpoint": str(checkpoint),
                "batch_size": 8,
                "val_batch_size": 16,
                "max_tokens": 32,
                "adapt_batch_size": 4,
                "adapt_bptt": 8,
                **finetune,
            }
        ),
        optim=OptimConfig(lr=1e-2, weight_decay=0.01, warmup_steps=5, min_lr=1e-3),
        trainer=pretrain.trainer,
        logger=pretrain.logger,
    )
