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
    from lmlab.core.errors import LmlabError
    from lmlab.jobs.pretrain import pretrain
    from lmlab.training import budget
    from lmlab.training.runs import RunFolder

    def run(cfg: PretrainConfig) -> float:
        """Train, and return the final validation bits per byte (bits per byte compare across tokenizers): the
        value a Hydra sweeper (conf/hparams_search/, Optuna) minimises."""
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        if cfg.continue_from is not None:
            cfg.resume = start(cfg, RunFolder(run_dir))
        return pretrain(cfg, run_dir)[M.VAL_BPB]

    def start(cfg: PretrainConfig, run: RunFolder) -> str:
        """`continue_from`: the checkpoint a run folder without one of its own starts from, else `auto`. Decided
        by each process alone, so one process only: DDP's ranks could see the folder at different moments."""
        given = cfg.continue_from
        if cfg.resume != "auto" or cfg.ckpt_path is not None:
            raise LmlabError(f"continue_from={given!r} applies with resume=auto (no ckpt_path): give one of them")
        if budget.ranks(cfg.trainer) * cfg.trainer.num_nodes > 1:
            raise LmlabError(
                f"continue_from={given!r} with {cfg.trainer.devices} devices x {cfg.trainer.num_nodes} nodes: each "
                "rank would decide alone; give resume=<checkpoint> for a new run folder (resume=auto after)"
            )
        if any(run.checkpoints.glob("*.ckpt")):
            return "auto"  # its own run: resumed, or replaced if its config changed
        if not Path(given).is_file():
            raise LmlabError(
                f"continue_from={given!r}: no such checkpoint; train the run it belongs to first (the scaling "
                "study's previous budget: its stage's earlier command)"
            )
        return given

    return run
