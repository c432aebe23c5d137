"""``lmlab finetune``: train a classifier on the labeled set (Hydra's output folder is the run folder)."""

from collections.abc import Callable
from pathlib import Path

from lmlab.jobs.config import FinetuneConfig

SUMMARY = "train a text classifier on the labeled set from a family's pretraining checkpoint (or from scratch)"
SCHEMA = FinetuneConfig


def job() -> Callable[[FinetuneConfig], None]:
    """The job's code (torch, Lightning), imported only to run one (not for --help, --cfg or TAB)."""
    from hydra.core.hydra_config import HydraConfig

    from lmlab.jobs.finetune import finetune

    def run(cfg: FinetuneConfig) -> None:
        finetune(cfg, Path(HydraConfig.get().runtime.output_dir))

    return run
