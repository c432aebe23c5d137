"""The cores shared among processes run side by side: sweep trials, fanout's stages."""

from __future__ import annotations

import os
from collections.abc import MutableMapping


def share_cores(env: MutableMapping[str, str], jobs: int) -> None:
    """Give each of `jobs` processes at once its share of the cores through OMP_NUM_THREADS (torch's default
    thread count follows it), unless the user set it: two processes of two threads each on two cores only add
    synchronisation (docs/benchmarks.md: two one-thread trainings side by side beat one of two threads)."""
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
