"""Synthetic tasks through pretraining's Lightning path: the same training step, logging, checkpoints, DDP and
resume as `PretrainTask`, with examples instead of token streams and figures at the answer positions only.

Each example starts from a fresh state (nothing carries between examples), so every family reads whole
sequences. Validation runs one set per length in `task.lengths` (multiples of the training length): at 1x
val/loss and val/acc over every answer, beyond it the accuracy at the answers past the training length
(`lmlab.core.metrics.val_acc_at`): what the model does where no training example reached.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import count

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from lmlab.core import metrics as M
from lmlab.data.synthetic import IGNORE, TaskExamples, counting, counting_vocab_size, mqar
from lmlab.models import LanguageModel
from lmlab.tasks.config import SynthTaskConfig
from lmlab.tasks.language_model import PretrainTask
from lmlab.training.config import OptimConfig
from lmlab.training.finite import require_finite

TRAIN, VAL = 0, 1  # seed streams: the training set and each validation length draw different examples


def make_examples(task: SynthTaskConfig, examples: int, seq_len: int, stream: tuple[int, ...]) -> TaskExamples:
    seed = [task.seed, *stream]
    if task.kind == "mqar":
        return mqar(examples, task.vocab_size, seq_len, task.pairs, seed, task.power_a, task.noise)
    return counting(examples, seq_len, task.modulus, seed)


def vocab_size(task: SynthTaskConfig) -> int:
    return task.vocab_size if task.kind == "mqar" else counting_vocab_size(task.modulus)


class SynthTask(PretrainTask):
    def __init__(
        self, model: LanguageModel, task: SynthTaskConfig, optim: OptimConfig, max_steps: int, val_every: int
    ) -> None:
        # bits per byte have no meaning for synthetic tokens: pretraining's val figures are replaced below
        super().__init__(model, task.seq_len, optim, max_steps, val_every, val_tokens_per_byte=float("nan"))
        self.lengths = list(task.lengths)
        self.seq_len = task.seq_len
        self.val_counts = torch.zeros(len(self.lengths), 3, dtype=torch.float64)  # nats, correct, answers

    def on_validation_epoch_start(self) -> None:
        self._val_began = time.perf_counter()
        self.val_counts = torch.zeros(len(self.lengths), 3, dtype=torch.float64, device=self.device)

    def validation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        nll, correct, answers = scored(self.model, *batch, self.seq_len if dataloader_idx > 0 else 0)
        self.val_counts[dataloader_idx] += torch.stack([nll, correct.sum(), answers.sum()]).double()

    def on_validation_epoch_end(self) -> None:
        counts = self.trainer.strategy.reduce(self.val_counts, reduce_op="sum").tolist()
        nats, _, answers = counts[0]
        loss = nats / max(answers, 1)
        require_finite(self, M.VAL_LOSS, loss, "before checkpointing it")
        # a length with no answer past the training length (MQAR's queries cluster early) has no accuracy there
        figures = {
            M.val_acc_at(f): correct / n if n else float("nan")
            for f, (_, correct, n) in zip(self.lengths, counts, strict=True)
        }
        self.log_dict(
            {
                M.VAL_LOSS: loss,
                **figures,
                M.TRAIN_TOKENS: float(self.tokens_seen),
                M.TRAIN_FLOPS: self.train_flops,
                M.TRAIN_WALL_SECONDS: self.wall_seconds,
            },
            add_dataloader_idx=False,
        )
        if self._started:  # throughput leaves validation time out
            spent = time.perf_counter() - self._val_began
            self.val_seconds += spent
            self._tick += spent


def scored(
    model: LanguageModel, inputs: torch.Tensor, targets: torch.Tensor, after: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed nats over the answers at positions from `after` on, and per example its correct answers and
    its answers (what the bootstrap over examples resamples)."""
    if after:  # beyond the training length: the answers no training example reached
        targets = targets.clone()
        targets[:, :after] = IGNORE
    logits, _ = model(inputs)
    answers = targets != IGNORE
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")
    correct = ((logits.argmax(-1) == targets) & answers).sum(dim=1)
    return nll, correct, answers.sum(dim=1)


@torch.no_grad()
def answer_counts(
    model: LanguageModel, examples: TaskExamples, after: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Correct answers and answers per example over a whole set (in eval mode), from position `after` on."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    parts = [
        scored(
            model,
            examples.inputs[i : i + batch_size].to(device),
            examples.targets[i : i + batch_size].to(device),
            after,
        )
        for i in range(0, len(examples), batch_size)
    ]
    model.train(was_training)
    return (
        torch.cat([c for _, c, _ in parts]).cpu().numpy(),
        torch.cat([a for _, _, a in parts]).cpu().numpy(),
    )


class ExampleBatches(IterableDataset):
    """Training batches for one rank, forever: global batch ``i`` is examples ``i*B*W .. (i+1)*B*W - 1`` of an
    endless sequence of seeded permutations of the set (one per epoch); rank ``r`` takes its ``B`` of them. A
    pure function of the batch index, so a run resumed at the same world size continues with the batches an
    uninterrupted one sees (at another, the global batch and so the order differ)."""

    def __init__(self, examples: TaskExamples, batch_size: int, seed: int, rank: int, world: int, start: int) -> None:
        self.examples, self.batch_size, self.seed = examples, batch_size, seed
        self.rank, self.world, self.start = rank, world, start
        self._orders: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, TRAIN, epoch]).permutation(len(self.examples))}
        return self._orders[epoch]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
        n = len(self.examples)
        for batch in count(self.start):
            first = (batch * self.world + self.rank) * self.batch_size
            picks = [self.order(i // n)[i % n] for i in range(first, first + self.batch_size)]
            index = torch.as_tensor(np.asarray(picks))
            yield self.examples.inputs[index], self.examples.targets[index], True  # each example starts fresh


class SynthData(L.LightningDataModule):
    """The task's training set and one validation set per length, made from the seed when the run starts."""

    def __init__(self, task: SynthTaskConfig, accumulate: int) -> None:
        super().__init__()
        self.task, self.accumulate = task, accumulate
        self.train: TaskExamples | None = None
        self.vals: list[TaskExamples] = []

    def setup(self, stage: str) -> None:
        if self.train is None:
            self.train = make_examples(self.task, self.task.train_examples, self.task.seq_len, (TRAIN,))
            self.vals = [
                make_examples(self.task, self.task.val_examples, f * self.task.seq_len, (VAL, f))
                for f in self.task.lengths
            ]

    def _loader(self, dataset: IterableDataset) -> DataLoader:
        pin = self.trainer.strategy.root_device.type == "cuda"
        return DataLoader(dataset, batch_size=None, num_workers=0, pin_memory=pin)

    def train_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        start = self.trainer.global_step * self.accumulate
        return self._loader(ExampleBatches(self.train, self.task.batch_size, self.task.seed, rank, world, start))

    def val_dataloader(self) -> list[DataLoader]:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        return [self._loader(ExampleSlices(val, self.task.val_batch_size, rank, world)) for val in self.vals]


class ExampleSlices(IterableDataset):
    """Rank ``r``'s share of a validation set (every ``world``-th example from ``r``), in batches; an iterable,
    so that Lightning does not shard it a second time."""

    def __init__(self, examples: TaskExamples, batch_size: int, rank: int, world: int) -> None:
        self.inputs, self.targets = examples.inputs[rank::world], examples.targets[rank::world]
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for begin in range(0, len(self.inputs), self.batch_size):
            yield self.inputs[begin : begin + self.batch_size], self.targets[begin : begin + self.batch_size]
