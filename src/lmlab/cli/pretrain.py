"""``lmlab pretrain``: train one model family on the tokenized corpus (Hydra's output folder is the run folder)."""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from lmlab.config import PretrainConfig
from lmlab.pretrain import pretrain


def run(cfg: PretrainConfig) -> None:
    pretrain(cfg, Path(HydraConfig.get().runtime.output_dir))
