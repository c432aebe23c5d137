"""``python stalling_lmlab.py <verb> ...``: the `lmlab` CLI, except that training stops dead at a given step.

Training blocks (sleeps) in `on_train_batch_start` once `trainer.global_step` reaches
``$LMLAB_TEST_STALL_AT``, after touching ``$LMLAB_TEST_STALL_MARK``; a test then SIGKILLs the
process there, mid-run, so that a later `resume=auto` has a real crash to recover from. Without the
variables it is the plain CLI.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import lightning as L

import lmlab.training.job
from lmlab.cli import main


class Stall(L.Callback):
    def __init__(self, step: int, mark: Path) -> None:
        self.step, self.mark = step, mark

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step and not self.mark.exists():
            self.mark.write_text(str(trainer.global_step))
            if os.environ.get("LMLAB_TEST_STALL_UNTIL_SIGTERM"):  # then let the batch finish, as a slow step would
                while not trainer.received_sigterm:
                    time.sleep(0.05)
            else:
                time.sleep(3600)


def install() -> None:
    if "LMLAB_TEST_STALL_AT" not in os.environ:
        return
    stall = Stall(int(os.environ["LMLAB_TEST_STALL_AT"]), Path(os.environ["LMLAB_TEST_STALL_MARK"]))
    make_trainer = lmlab.training.job.make_trainer

    def with_stall(cfg, run_dir, logger, callbacks, **kwargs):  # noqa: ANN001, ANN003, ANN202
        return make_trainer(cfg, run_dir, logger, [*callbacks, stall], **kwargs)

    lmlab.training.job.make_trainer = with_stall


if __name__ == "__main__":
    install()
    sys.argv = ["lmlab", *sys.argv[1:]]
    main()
