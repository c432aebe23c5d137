"""``lmlab pretrain``: train one model family on the tokenized corpus (Hydra's output folder is the run folder)."""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from lmlab.config import PretrainConfig
from lmlab.pretrain import pretrain

# What a job returns to a Hydra sweeper (conf/hparams_search/): bits per byte compare across tokenizers.
OBJECTIVE = "val/bpb"


def run(cfg: PretrainConfig) -> float:
    """Train, and return the final validation bits per byte, the value an Optuna search minimises."""
    return pretrain(cfg, Path(HydraConfig.get().runtime.output_dir))[OBJECTIVE]
