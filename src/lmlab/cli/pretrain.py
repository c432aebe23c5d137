"""``lmlab pretrain``: train one model family on the tokenized corpus (Hydra's output folder is the run folder)."""

from collections.abc import Callable
from pathlib import Path

from lmlab.jobs.config import PretrainConfig

SUMMARY = "train one model family (model=<name>, one of conf/model/) on the tokenized corpus"
SCHEMA = PretrainConfig


def job() -> Callable[[PretrainConfig], float]:
    """The job's code (torch, Lightning), imported only to run one (not for --help, --cfg or TAB)."""
    from hydra.core.hydra_config import HydraConfig

    from lmlab.core import metrics as M
    from lmlab.jobs.pretrain import pretrain
    from lmlab.training.runs import RunFolder

    def run(cfg: PretrainConfig) -> float:
        """Train, and return the final validation bits per byte (bits per byte compare across tokenizers): the
        value a Hydra sweeper (conf/hparams_search/, Optuna) minimises."""
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        started = any(RunFolder(run_dir).checkpoints.glob("*.ckpt"))
        if cfg.continue_from is not None and cfg.resume == "auto" and not started:
            cfg.resume = cfg.continue_from  # no checkpoint of its own yet: start from the one given
        return pretrain(cfg, run_dir)[M.VAL_BPB]

    return run
