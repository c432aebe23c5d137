"""Two ranks of `lmlab pretrain` started the torchrun way, each recording what it saw.

    launch(project, overrides, out_dir)

starts ``python ddp_probe.py pretrain <overrides>`` twice in ``project`` with MASTER_ADDR,
MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK, NODE_RANK and TORCHELASTIC_RUN_ID set, as torchrun
would: Lightning joins the gloo process group instead of starting processes itself, and the CLI
has to put both ranks in one run folder. The script is the plain CLI plus a callback that writes
``<out_dir>/rank<r>.json`` at the end of training: for every micro-batch, the global step, the
input tokens and a checksum of the weights before the step.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch

OUT = "LMLAB_TEST_PROBE_DIR"
JOB = "probejob"  # TORCHELASTIC_RUN_ID of the launch


class Probe(L.Callback):
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.batches: list[dict[str, Any]] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        with torch.no_grad():
            params = [p.detach().double() for p in pl_module.parameters()]
            checksum = [sum(p.sum().item() for p in params), sum(p.square().sum().item() for p in params)]
        self.batches.append({"step": trainer.global_step, "inputs": batch[0].tolist(), "weights": checksum})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "tokens_seen": pl_module.tokens_seen,
            "batches": self.batches,
        }
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(project: Path, overrides: list[str], out_dir: Path, timeout: float = 300) -> list[str]:
    """Run both ranks to completion; returns each rank's output (raises if a rank failed)."""
    port = str(free_port())
    bin_dir = str(Path(sys.executable).parent)
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": "2",
            "NODE_RANK": "0",
            "GROUP_RANK": "0",
            "TORCHELASTIC_RUN_ID": JOB,
            OUT: str(out_dir),
        }
        args = [sys.executable, __file__, "pretrain", *overrides]
        procs.append(
            subprocess.Popen(args, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for rank, (proc, output) in enumerate(zip(procs, outputs, strict=True)):
        if proc.returncode != 0:
            raise AssertionError(f"rank {rank} exited {proc.returncode}:\n{output[-4000:]}")
    return outputs


def main() -> None:
    import lmlab.training.job
    from lmlab.cli import main as lmlab_main

    probe = Probe(Path(os.environ[OUT]))
    make_trainer = lmlab.training.job.make_trainer
    lmlab.training.job.make_trainer = lambda c, r, logger, callbacks, **kw: make_trainer(
        c, r, logger, [*callbacks, probe], **kw
    )
    sys.argv = ["lmlab", *sys.argv[1:]]
    lmlab_main()


if __name__ == "__main__":
    main()
