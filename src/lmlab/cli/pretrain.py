"""``lmlab pretrain``: train one model family on the tokenized corpus (Hydra's output folder is the run folder)."""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from lmlab.core import metrics as M
from lmlab.jobs.config import PretrainConfig
from lmlab.jobs.pretrain import pretrain


def run(cfg: PretrainConfig) -> float:
    """Train, and return the final validation bits per byte (bits per byte compare across tokenizers): the
    value a Hydra sweeper (conf/hparams_search/, Optuna) minimises."""
    return pretrain(cfg, Path(HydraConfig.get().runtime.output_dir))[M.VAL_BPB]
