"""A tiny tokenized corpus in the corpus format, and `debug=tiny` configs to train on it in seconds.

The token streams are synthetic but learnable: documents of counting runs
(``a, a+1, a+2, ...`` modulo the vocabulary), each ended by the EOD id, so a
model that learns "next = this + 1" drives the loss far below ln(vocab).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir

from lmlab.cli.schemas import register_configs, typed
from lmlab.data import corpus as corpus_format
from lmlab.data.config import DatasetConfig, PathsConfig, TokenizerConfig
from lmlab.jobs.config import FinetuneConfig, PretrainConfig
from tests.helpers.project import ROOT

EOD = corpus_format.SPECIAL_IDS["eod"]
FIRST_WORD = len(corpus_format.SPECIAL_IDS)  # the ids before are unk, bos, eod, pad


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


def composed(verb: str, overrides: list[str]) -> Any:
    """The shipped `conf/<verb>.yaml` with `overrides`, as the CLI types it."""
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return typed(compose(config_name=verb, overrides=overrides))


def tiny_config(data_dir: Path, family: str = "lstm", **trainer: object) -> PretrainConfig:
    """`lmlab pretrain model=<family> debug=tiny` on `write_corpus(data_dir)`, no logger: a second or two."""
    overrides = [f"model={family}", "debug=tiny", f"paths.data_dir={data_dir}", "logger=none"]
    cfg = composed(
        "pretrain",
        [*overrides, *(f"trainer.{key}={'null' if value is None else value}" for key, value in trainer.items())],
    )
    assert isinstance(cfg, PretrainConfig)
    return cfg


def tiny_overrides(max_steps: int, val_every: int = 5) -> list[str]:
    """`tiny_config` as overrides of the shipped configs, for runs through the CLI."""
    return ["debug=tiny", f"trainer.max_steps={max_steps}", f"trainer.val_every={val_every}"]


def tiny_finetune_config(
    data_dir: Path, family: str, checkpoint: Path | str, task_data: str = "reviews", **finetune: object
) -> FinetuneConfig:
    """A FinetuneConfig for `tiny_config`'s architecture: a few dozen steps on a tiny labeled set."""
    overrides = [f"model={family}", "debug=tiny", "finetune=tiny", f"paths.data_dir={data_dir}", "logger=none"]
    cfg = composed("finetune", [*overrides, "trainer.max_steps=60", "trainer.val_every=20"])
    assert isinstance(cfg, FinetuneConfig)
    cfg.task_data = DatasetConfig(name=task_data)
    cfg.finetune = replace(cfg.finetune, **{"checkpoint": str(checkpoint), "adapt_steps": 0, **finetune})
    cfg.optim = replace(cfg.optim, lr=1e-2, betas=[0.9, 0.95], warmup_steps=5, min_lr=1e-3)
    return cfg
