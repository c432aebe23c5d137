"""The cores shared among processes run side by side: sweep trials, fanout's stages."""

from __future__ import annotations

import os
from collections.abc import MutableMapping


def share_cores(env: MutableMapping[str, str], jobs: int) -> None:
    """Give each of `jobs` processes at once its share of the cores through OMP_NUM_THREADS (torch's default
    thread count follows it), unless the user set it: two processes of two threads each on two cores only add
    synchronisation (docs/benchmarks.md: two one-thread trainings side by side beat one of two threads). The
    cores are those this process may run on (a cluster job's share), not the machine's."""
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = str(max(1, cores // jobs))
