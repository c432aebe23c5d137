"""Processes that end with their parent, however it ends: tokenize's workers, a job under DVC.

A pool's workers each hold the write end of the pool's queue themselves, so when the parent is killed
(SIGKILL gives it no chance to stop them) the queue never closes and they wait forever: five kills of
`lmlab tokenize` left eight encoder workers running. `end_with_parent` is the pool's initializer.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def end_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when ``parent`` ends, however it ends.

    Otherwise a killed tokenize leaves its workers waiting forever: each holds the write end
    of the pool's queue itself, so the queue never closes.
    """
    if not parent_death_signal():
        watch_parent(parent)
    elif os.getppid() != parent:  # the parent ended before the signal was set: it will never come
        os._exit(1)


def parent_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent ends; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0
    except (OSError, AttributeError):  # no libc to load, or no prctl in it
        return False


def stop_with_parent(parent: int) -> None:
    """A job under `dvc repro` (its parent): SIGTERM to this process within a second of the parent ending, so a
    stopped DVC does not leave the job training unseen, holding its run folder; the job then stops as SIGTERM
    stops it (a checkpoint, exit 143). Polled rather than Linux's death signal, which follows the parent's
    thread, not its process."""
    watch_parent(parent, lambda: os.kill(os.getpid(), signal.SIGTERM))


def watch_parent(parent: int, on_end: Callable[[], None] = lambda: os._exit(1)) -> None:
    """A thread that calls `on_end` (default: end this process) within a second of ``parent`` ending (an
    orphan's parent becomes init or a subreaper): where there is no death signal, and for `stop_with_parent`."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        on_end()

    threading.Thread(target=watch, name="lmlab-watch-parent", daemon=True).start()
