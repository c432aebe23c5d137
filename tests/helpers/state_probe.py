"""Two gloo processes gather each named family's state as a DDP checkpoint does (`gather_state`).

    python tests/helpers/state_probe.py rnn lstm ...   prints ok:<family> per family (rank 0)

Each rank reads its own prefix, so the ranks' states differ; after the gather every rank must find its own
state at its index, and a model continued from it must give the rank's own logits.
"""

from __future__ import annotations

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmlab.models import build_model, map_state
from lmlab.tasks.language_model import gather_state

WORLD = 2


def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """What Lightning's `all_gather` gives under DDP: ``[world, *shape]``."""
    parts = [torch.empty_like(tensor) for _ in range(WORLD)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.stack(parts)


def run(rank: int, port: int, families: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    for family in families:
        torch.manual_seed(0)  # the same weights on both ranks
        model = build_model({"family": family, "layers": 2, "width": 16}, 23).eval()
        prefix = torch.randint(0, 23, (2, 5), generator=torch.Generator().manual_seed(100 + rank))
        with torch.no_grad():
            _, state = model(prefix, model.init_state(2))
        gathered = gather_state(state, all_gather, WORLD)
        mine = map_state(lambda t, r=rank: t[r], gathered)
        probe = torch.tensor([[1, 2, 3]])
        with torch.no_grad():
            expected = model(probe.expand(2, 3), state)[0]
            got = model(probe.expand(2, 3), mine)[0]
        if not torch.equal(expected, got):
            raise AssertionError(f"{family}: rank {rank}'s gathered state is not its own")
        dist.barrier()
        if rank == 0:
            print(f"ok:{family}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    mp.start_processes(run, args=(free_port, sys.argv[1:]), nprocs=WORLD, start_method="spawn")
