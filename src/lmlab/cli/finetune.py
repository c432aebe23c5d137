"""``lmlab finetune``: train a classifier on the labeled set (Hydra's output folder is the run folder)."""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from lmlab.jobs.config import FinetuneConfig
from lmlab.jobs.finetune import finetune


def run(cfg: FinetuneConfig) -> None:
    finetune(cfg, Path(HydraConfig.get().runtime.output_dir))
