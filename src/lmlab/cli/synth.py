"""``lmlab synth``: one family on a synthetic task (Hydra's output folder is the run folder)."""

from collections.abc import Callable
from pathlib import Path

from lmlab.jobs.config import SynthConfig

SUMMARY = "train one family on a synthetic task: task=mqar (associative recall) or task=parity, made from a seed"
SCHEMA = SynthConfig


def job() -> Callable[[SynthConfig], float]:
    """The job's code (torch, Lightning), imported only to run one (not for --help, --cfg or TAB)."""
    from hydra.core.hydra_config import HydraConfig

    from lmlab.core import metrics as M
    from lmlab.jobs.synth import synth

    def run(cfg: SynthConfig) -> float:
        """Train, and return the final answer accuracy (what a sweep maximises)."""
        return synth(cfg, Path(HydraConfig.get().runtime.output_dir))[M.VAL_ACC]

    return run
