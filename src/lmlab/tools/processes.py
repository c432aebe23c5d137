"""Processes run side by side (sweep trials, fanout's stages): their share of the cores, and stopping their
process groups."""

from __future__ import annotations

import os
import signal
from collections.abc import MutableMapping


def share_cores(env: MutableMapping[str, str], jobs: int) -> None:
    """Give each of `jobs` processes at once its share of the cores through OMP_NUM_THREADS (torch's default
    thread count follows it), unless the user set it: two processes of two threads each on two cores only add
    synchronisation (docs/benchmarks.md: two one-thread trainings side by side beat one of two threads). The
    cores are those this process may run on (a cluster job's share), not the machine's."""
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = str(max(1, cores // jobs))


def kill_group(pgid: int, signum: int = signal.SIGTERM) -> None:
    """Send `signum` to a process group (a job and what it started: a DDP rank, W&B's service), if it is still
    there (lmlab jobs keep their last whole step on SIGTERM)."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass  # the whole group has exited
