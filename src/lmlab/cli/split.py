"""``lmlab split``: documents to ``data/splits/<name>/{train,val,test}.jsonl``."""

from collections.abc import Callable

from lmlab.data.config import SplitStageConfig

SUMMARY = "cut documents into data/splits/<dataset>/{train,val,test}.jsonl"
SCHEMA = SplitStageConfig


def job() -> Callable[[SplitStageConfig], None]:
    """The job's code, imported only to run one (not for --help, --cfg or TAB)."""
    from lmlab.cli import targets
    from lmlab.data.split import split_dataset

    def run(cfg: SplitStageConfig) -> None:
        for key in targets(cfg.only):
            split_dataset(getattr(cfg, key), cfg.paths, key)

    return run
