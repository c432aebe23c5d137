"""``lmlab synth``: one family on a synthetic task (Hydra's output folder is the run folder)."""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from lmlab.core import metrics as M
from lmlab.jobs.config import SynthConfig
from lmlab.jobs.synth import synth


def run(cfg: SynthConfig) -> float:
    """Train, and return the final answer accuracy (what a sweep maximises)."""
    return synth(cfg, Path(HydraConfig.get().runtime.output_dir))[M.VAL_ACC]
