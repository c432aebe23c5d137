"""Synthetic tasks that separate recurrent models from attention: associative recall and state tracking.

Every example set is a pure function of its arguments and a seed: no download, the same data on every
machine. An example is ``inputs [T]`` and ``targets [T]``; a target is the answer the model must give at that
position, or `IGNORE` where nothing is asked (the loss and the accuracy count answer positions only).

- `mqar`: multi-query associative recall (Arora et al. 2023, Zoology). Key-value pairs first, then each key
  again at a later position, where the model must name its value. Keys come from the lower half of the
  vocabulary, values from the upper half; the gap between the pairs and a query follows a power law, as
  repeated bigrams do in text. Attention solves it at any width; a fixed-size state must hold every pair.
- `counting`: the running count of ones modulo `modulus` at every position of a random bit string; modulus 2
  is parity (Deletang et al. 2023; xLSTM). A nonlinear recurrence (LSTM) tracks it at any length; attention
  and linear recurrences with non-negative diagonal transitions learn it at the training length at best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lmlab.core.errors import LmlabError

IGNORE = -100  # torch.nn.functional.cross_entropy's ignore_index: a position nothing is asked at
CHUNK = 4096  # examples generated at a time (bounds the power-law draw's memory)


@dataclass(frozen=True)
class TaskExamples:
    inputs: torch.Tensor  # [N, T] token ids
    targets: torch.Tensor  # [N, T] the answer at each position, IGNORE where none is asked

    def __len__(self) -> int:
        return len(self.inputs)


def distinct_rows(rng: np.random.Generator, rows: int, size: int, low: int, high: int) -> np.ndarray:
    """`rows` x `size` integers in [low, high), distinct within each row, uniform over such rows: the `size`
    smallest of a random score per value, a draw without replacement that takes the same time for any `size`
    (redrawing rows with a repeat slows without bound as `size` nears the range)."""
    scores = rng.random((rows, high - low), dtype=np.float32)
    return low + np.argpartition(scores, size - 1, axis=1)[:, :size]


def power_law_positions(rng: np.random.Generator, rows: int, size: int, space: int, power_a: float) -> np.ndarray:
    """`size` distinct slots of `space` per row, drawn without replacement with P(slot g) ~ (g + 1)^(a - 1):
    small gaps are frequent (Zoology's query placement). Gumbel top-k is sequential sampling without
    replacement in one vectorised draw."""
    log_p = (power_a - 1.0) * np.log(np.arange(1, space + 1))
    scores = log_p + rng.gumbel(size=(rows, space))
    return np.argpartition(-scores, size - 1, axis=1)[:, :size]


def generator(seed: int | Sequence[int], task: int) -> np.random.Generator:
    """The task's own stream for `seed` (an int or a sequence of them): two tasks at one seed draw apart."""
    return np.random.default_rng([*np.atleast_1d(seed).tolist(), task])


def mqar(
    examples: int,
    vocab_size: int,
    seq_len: int,
    pairs: int,
    seed: int | Sequence[int],
    power_a: float = 0.01,
    noise: bool = True,
) -> TaskExamples:
    """Multi-query associative recall: ``k1 v1 ... kP vP`` then, at even offsets of the rest, each key once,
    its value the target there. Other positions hold random tokens (`noise`, as Zoology's default) or 0."""
    if seq_len % 2:
        raise LmlabError(f"task.seq_len={seq_len}: MQAR needs an even length (keys and values alternate)")
    if 4 * pairs > seq_len:
        raise LmlabError(
            f"task.pairs={pairs} needs seq_len >= {4 * pairs} (the pairs, then a query slot per pair); "
            f"got task.seq_len={seq_len}"
        )
    if vocab_size // 2 - 1 < pairs:
        raise LmlabError(
            f"task.vocab_size={vocab_size} has {vocab_size // 2 - 1} keys (ids 1 .. vocab/2 - 1) for "
            f"task.pairs={pairs}: use a vocabulary of at least {2 * pairs + 2}"
        )
    rng = generator(seed, 0x4D514152)  # "MQAR"
    context = 2 * pairs
    space = (seq_len - context) // 2  # query slots: even offsets after the pairs
    inputs = np.zeros((examples, seq_len), dtype=np.int64)
    targets = np.full((examples, seq_len), IGNORE, dtype=np.int64)
    for begin in range(0, examples, CHUNK):
        rows = min(CHUNK, examples - begin)
        keys = distinct_rows(rng, rows, pairs, 1, vocab_size // 2)
        values = distinct_rows(rng, rows, pairs, vocab_size // 2, vocab_size)
        block = inputs[begin : begin + rows]
        if noise:
            block[:] = rng.integers(0, vocab_size, size=block.shape)
        block[:, 0:context:2], block[:, 1:context:2] = keys, values
        slots = context + 2 * power_law_positions(rng, rows, pairs, space, power_a)
        np.put_along_axis(block, slots, keys, axis=1)
        np.put_along_axis(targets[begin : begin + rows], slots, values, axis=1)
    return TaskExamples(torch.from_numpy(inputs), torch.from_numpy(targets))


def counting_vocab_size(modulus: int) -> int:
    """Counting's vocabulary: the answers 0 .. modulus-1, the bits 0 and 1 among them."""
    return modulus


def counting(examples: int, seq_len: int, modulus: int, seed: int | Sequence[int]) -> TaskExamples:
    """Random bits; the target at every position is the number of ones so far modulo `modulus` (2: parity).
    Answer ids share the vocabulary with the bits (`counting_vocab_size`)."""
    if modulus < 2:
        raise LmlabError(f"task.modulus={modulus}: counting needs a modulus of 2 (parity) or more")
    rng = generator(seed, 0x434F554E)  # "COUN"
    bits = rng.integers(0, 2, size=(examples, seq_len))
    return TaskExamples(torch.from_numpy(bits), torch.from_numpy(np.cumsum(bits, axis=1) % modulus))
