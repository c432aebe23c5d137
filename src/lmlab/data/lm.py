"""Language-model batches from the tokenized streams (``data/tokenized/<corpus>-<tokenizer>/``).

Every micro-batch is a pure function of its index (and the seed, rank and
world size), so a run resumed from a checkpoint at optimizer step ``s``
continues with micro-batch ``s * accumulate``: the data position needs no
state of its own, and a resumed run sees exactly the batches an
uninterrupted one would have.

- Recurrent families (`StreamWindows`): truncated BPTT. The split is cut into
  ``batch_size * world_size`` contiguous streams; rank ``r`` owns streams
  ``r*B .. r*B+B-1``, so no rank sees another's tokens. Micro-batch ``i`` is
  window ``i mod n`` of every owned stream, in order; ``reset`` marks where the
  task starts from a fresh state: window 0 of each epoch and, with ``restart``,
  every ``restart``-th window, so that training also reads text from the zero
  state that evaluation and generation start from (carried through a whole
  epoch, an LSTM learns a state it cannot reach from zero; docs/training.md).
- Stateless families: `SampledWindows` (random offsets, as nanoGPT) or
  `ShuffledWindows` (non-overlapping windows, a seeded permutation per epoch,
  each rank taking its own slice of every global batch).

`PretrainData` serves them to the Trainer (pretraining, LM adaptation).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import count
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from lmlab.core.errors import LmlabError
from lmlab.data.config import BatchesConfig
from lmlab.data.corpus import Corpus

Batch = tuple[torch.Tensor, torch.Tensor, bool]  # inputs [B, T], targets [B, T], reset state first


def window_batch(tokens: np.ndarray, begin: np.ndarray, length: int, reset: bool = False) -> Batch:
    """The windows of ``length + 1`` tokens starting at each offset in `begin`, as inputs and shifted targets."""
    chunk = torch.from_numpy(np.stack([tokens[b : b + length + 1] for b in begin]).astype(np.int64))
    return chunk[:, :-1], chunk[:, 1:], reset


class StreamWindows(IterableDataset):
    """TBPTT windows of ``bptt`` tokens over this rank's ``batch_size`` contiguous streams, in order; the
    state restarts at each epoch and, given ``restart``, every ``restart`` windows (0: at each epoch only)."""

    def __init__(
        self,
        tokens: np.ndarray,
        batch_size: int,
        bptt: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        stop: int | None = None,
        name: str = "train",
        restart: int = 0,
    ) -> None:
        self.tokens, self.bptt, self.start, self.stop, self.restart = tokens, bptt, start, stop, restart
        streams = batch_size * world_size
        stream_len = len(tokens) // streams
        self.windows_per_epoch = (stream_len - 1) // bptt
        if self.windows_per_epoch < 1:
            raise LmlabError(
                f"the {name} split has {len(tokens)} tokens: too few for {streams} streams "
                f"(batch size {batch_size} x {world_size} ranks) of at least bptt+1={bptt + 1} tokens; "
                "lower batches.batch_size or batches.bptt"
            )
        self.offsets = np.arange(rank * batch_size, (rank + 1) * batch_size) * stream_len

    def batch(self, index: int) -> Batch:
        window = index % self.windows_per_epoch
        begin = self.offsets + window * self.bptt
        reset = window % self.restart == 0 if self.restart else window == 0
        return window_batch(self.tokens, begin, self.bptt, reset=reset)

    def __iter__(self) -> Iterator[Batch]:
        indices = count(self.start) if self.stop is None else range(self.start, self.stop)
        return (self.batch(i) for i in indices)


class SampledWindows(IterableDataset):
    """Windows at random offsets; micro-batch ``i`` of rank ``r`` draws from its own seeded generator."""

    def __init__(
        self, tokens: np.ndarray, batch_size: int, context: int, seed: int, rank: int = 0, start: int = 0
    ) -> None:
        if len(tokens) < context + 1:
            raise LmlabError(
                f"the train split has {len(tokens)} tokens: too few for one window of {context + 1}; "
                "lower model.context"
            )
        self.tokens, self.batch_size, self.context = tokens, batch_size, context
        self.seed, self.rank, self.start = seed, rank, start

    def batch(self, index: int) -> Batch:
        rng = np.random.default_rng([self.seed, self.rank, index])
        begin = rng.integers(0, len(self.tokens) - self.context, size=self.batch_size)
        return window_batch(self.tokens, begin, self.context)

    def __iter__(self) -> Iterator[Batch]:
        return (self.batch(i) for i in count(self.start))


class ShuffledWindows(IterableDataset):
    """Non-overlapping windows, a new seeded order each epoch; every rank takes its slice of each global batch."""

    def __init__(
        self,
        tokens: np.ndarray,
        batch_size: int,
        context: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ) -> None:
        self.windows = (len(tokens) - 1) // context
        self.global_batch = batch_size * world_size
        self.batches_per_epoch = self.windows // self.global_batch
        if self.batches_per_epoch < 1:
            raise LmlabError(
                f"the train split has {len(tokens)} tokens: fewer than one global batch of "
                f"{self.global_batch} windows of {context + 1}; lower batches.batch_size or model.context"
            )
        self.tokens, self.batch_size, self.context = tokens, batch_size, context
        self.seed, self.rank, self.start = seed, rank, start
        self._epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's window order, drawn once and reused by all of that epoch's batches."""
        if epoch != self._epoch:
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.windows)
        return self._order

    def batch(self, index: int) -> Batch:
        epoch, step = divmod(index, self.batches_per_epoch)
        first = step * self.global_batch + self.rank * self.batch_size
        begin = self.order(epoch)[first : first + self.batch_size] * self.context
        return window_batch(self.tokens, begin, self.context)

    def __iter__(self) -> Iterator[Batch]:
        return (self.batch(i) for i in count(self.start))


class EvalWindows(IterableDataset):
    """One pass over a split for evaluation: every token after the first is predicted once.

    Stateful models read it as TBPTT streams (state carried through the whole
    pass); stateless ones as non-overlapping windows, ranks taking turns.
    ``max_tokens`` caps the pass (the first tokens of each stream are kept).
    """

    def __init__(
        self,
        tokens: np.ndarray,
        batch_size: int,
        window: int,
        stateful: bool,
        rank: int = 0,
        world_size: int = 1,
        max_tokens: int | None = None,
        name: str = "val",
    ) -> None:
        self.tokens, self.batch_size, self.window, self.stateful = tokens, batch_size, window, stateful
        self.rank, self.world_size = rank, world_size
        if stateful:
            self.streams = StreamWindows(tokens, batch_size, window, rank, world_size, name=name)
            windows = self.streams.windows_per_epoch
            if max_tokens is not None:
                windows = min(windows, max(1, max_tokens // (batch_size * world_size * window)))
            self.num_batches = windows
        else:
            windows = (len(tokens) - 1) // window
            if windows < 1:
                raise LmlabError(
                    f"the {name} split has {len(tokens)} tokens: too few for one window of {window + 1}; "
                    "lower model.context"
                )
            if max_tokens is not None:
                windows = min(windows, max(1, max_tokens // window))
            self.window_ids = np.arange(rank, windows, world_size)
            self.num_batches = math.ceil(len(self.window_ids) / batch_size)

    def __iter__(self) -> Iterator[Batch]:
        if self.stateful:
            yield from (self.streams.batch(i) for i in range(self.num_batches))
            return
        for first in range(0, len(self.window_ids), self.batch_size):
            begin = self.window_ids[first : first + self.batch_size] * self.window
            yield window_batch(self.tokens, begin, self.window)


def train_windows(
    tokens: np.ndarray,
    batches: BatchesConfig,
    stateful: bool,
    window: int,
    rank: int = 0,
    world_size: int = 1,
    start: int = 0,
) -> IterableDataset:
    """This rank's training micro-batches from micro-batch `start` on: TBPTT streams for a stateful model,
    sampled or shuffled windows (`batches.windows`) for a stateless one."""
    if stateful:
        return StreamWindows(
            tokens, batches.batch_size, window, rank, world_size, start=start, name="train", restart=batches.restart
        )
    if batches.windows == "sampled":
        return SampledWindows(tokens, batches.batch_size, window, batches.seed, rank, start=start)
    if batches.windows == "contiguous":
        return ShuffledWindows(tokens, batches.batch_size, window, batches.seed, rank, world_size, start=start)
    raise LmlabError(f"batches.windows={batches.windows!r}: use sampled or contiguous")


class PretrainData(L.LightningDataModule):
    """Train and validation batches for one rank; the train position follows the restored global step."""

    def __init__(self, corpus: Corpus, batches: BatchesConfig, stateful: bool, window: int, accumulate: int) -> None:
        super().__init__()
        self.corpus, self.batches, self.stateful = corpus, batches, stateful
        self.window, self.accumulate = window, accumulate

    def _loader(self, dataset: Any) -> DataLoader:
        return DataLoader(
            dataset, batch_size=None, num_workers=0, pin_memory=self.trainer.strategy.root_device.type == "cuda"
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        start = self.trainer.global_step * self.accumulate
        tokens = self.corpus.tokens("train")
        return self._loader(train_windows(tokens, self.batches, self.stateful, self.window, rank, world, start))

    def val_dataloader(self) -> DataLoader:
        return self._loader(
            EvalWindows(
                self.corpus.tokens("val"),
                self.batches.val_batch_size,
                self.window,
                self.stateful,
                self.trainer.global_rank,
                self.trainer.world_size,
                self.batches.val_max_tokens,
            )
        )
