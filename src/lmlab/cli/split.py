"""``lmlab split``: documents to ``data/splits/<name>/{train,val,test}.jsonl``."""

from lmlab.cli import targets
from lmlab.data.config import SplitStageConfig
from lmlab.data.split import split_dataset


def run(cfg: SplitStageConfig) -> None:
    for key in targets(cfg.only):
        split_dataset(getattr(cfg, key), cfg.paths, key)
