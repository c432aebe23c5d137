"""A tiny tokenized corpus in the tokenize stage's format, and tiny configs to pretrain on it in seconds.

The token streams are synthetic but learnable: documents of counting runs
(``a, a+1, a+2, ...`` modulo the vocabulary), each ended by the EOD id, so a
model that learns "next = this + 1" drives the loss far below ln(vocab).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmlab.config import (
    DatasetConfig,
    FinetuneConfig,
    FinetuneTaskConfig,
    LoggerConfig,
    ModelConfig,
    OptimConfig,
    PathsConfig,
    PretrainConfig,
    PretrainTaskConfig,
    TokenizerConfig,
    TrainerConfig,
)

EOD = 2
FIRST_WORD = 4  # ids 0-3 are unk, bos, eod, pad


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
    """Write ``data_dir/tokenized/<name>-<tokenizer>/`` with train/val/test streams and meta.json."""
    tokenizer = tokenizer or TokenizerConfig()
    folder = PathsConfig(data_dir=str(data_dir)).tokenized(name, tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = tokens or {"train": 20_000, "val": 4_000, "test": 4_000}
    splits = {}
    for seed, (split, n) in enumerate(sizes.items()):
        stream = counting_stream(n, vocab_size, seed)
        stream.tofile(folder / f"{split}.bin")
        splits[split] = {"documents": int((stream == EOD).sum()), "tokens": n, "bytes": 3 * n}
    meta = {"corpus": name, "vocab_size": vocab_size, "dtype": "uint16", "splits": splits}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def tiny_config(data_dir: Path, family: str = "lstm", **trainer: object) -> PretrainConfig:
    """A PretrainConfig that trains `family` on `write_corpus(data_dir)` in a second or two on a CPU."""
    model = ModelConfig(family=family, layers=2, width=32, heads=2, context=16, dropout=0.1)
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


def tiny_overrides(max_steps: int, val_every: int = 5) -> list[str]:
    """`tiny_config` as Hydra overrides of the shipped configs, for runs through the CLI."""
    return [
        "model.layers=2",
        "model.width=32",
        "model.heads=2",
        "model.context=16",
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
