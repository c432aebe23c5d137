"""Host reads of tensors in the training step: on a GPU each one (`.item()`, `float()`, `bool()`, `.tolist()`,
...) waits for the device to finish, so the hot path must make none. Counted here on CPU, where they cost
nothing, by the code that calls them: lmlab's and Lightning's (PyTorch's optimizers read their CPU step
counters, which are no sync)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

import lmlab
from lmlab.jobs import finetune
from lmlab.training import job

READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")
WATCHED = (str(Path(lmlab.__file__).parent), str(Path(L.__file__).parent))


class StepReads(Callback):
    """Counts the watched host reads from the start of each training batch to the end of its hooks, for every
    step but the last (whose hooks log, validate and checkpoint: the host reads there by design)."""

    def __init__(self) -> None:
        self.counting = False
        self.found: Counter[str] = Counter()
        self.steps = 0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.counting = trainer.global_step < trainer.max_steps - 1
        self.steps += self.counting

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.counting = False


@contextmanager
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[StepReads]:
    """A `StepReads` on every Trainer lmlab makes meanwhile (the jobs' and the LM adaptation's), with the
    tensor reads patched to count while it counts."""
    reads = StepReads()
    for module in (job, finetune):
        make = module.make_trainer

        def with_reads(*args: Any, __make: Any = make, **kwargs: Any) -> L.Trainer:
            trainer = __make(*args, **kwargs)
            trainer.callbacks.append(reads)
            return trainer

        monkeypatch.setattr(module, "make_trainer", with_reads)
    for name in READS:
        original = getattr(torch.Tensor, name)

        def read(self: torch.Tensor, *args: Any, __original: Any = original, __name: str = name, **kwargs: Any) -> Any:
            if reads.counting:
                caller = sys._getframe(1).f_code.co_filename
                if caller.startswith(WATCHED):
                    reads.found[f"{__name} in {caller}:{sys._getframe(1).f_lineno}"] += 1
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)
    yield reads
