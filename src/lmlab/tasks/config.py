"""The task recipes' schemas: the classifier (fine-tuning) and the synthetic tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from lmlab.core.rules import above, at_least, fraction, one_of

POOLINGS = ("last", "mean", "max", "concat")


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
