"""``lmlab <verb> [hydra overrides]``: one Hydra app per verb, configs from ``./conf``.

The CLI is thin: each verb module turns its validated config into calls of
library functions that tests call directly.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from lmlab.config import register_configs
from lmlab.errors import LmlabError

VERBS = {
    "download": "fetch the corpus and labeled set into data/raw (verified by sha256)",
    "split": "cut documents into data/splits/<dataset>/{train,val,test}.jsonl",
    "tokenize": "train sentencepiece on the corpus train split and encode every split",
    "pretrain": "train one model family (model=rnn|lstm|gru|transformer) on the tokenized corpus",
    "generate": "sample text from a pretraining checkpoint (family=..., prompt=..., temperature=...)",
}
USAGE = (
    "usage: lmlab <verb> [key=value ...] [--help] [--cfg job]\n\nverbs:\n"
    + "\n".join(f"  {verb:10s} {text}" for verb, text in VERBS.items())
    + "\n\nRun from the project root (the folder holding conf/). `lmlab <verb> --help` lists its config groups."
)


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return
    verb = args[0]
    if verb not in VERBS:
        print(f"lmlab: unknown verb {verb!r}; choose one of: {', '.join(VERBS)}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    conf = Path.cwd() / "conf"
    if not (conf / f"{verb}.yaml").is_file():
        print(
            f"lmlab: no {conf / (verb + '.yaml')}: run lmlab from the project root (the folder holding conf/)",
            file=sys.stderr,
        )
        sys.exit(2)
    run = importlib.import_module(f"lmlab.cli.{verb}").run
    register_configs()

    argv = list(sys.argv)

    def task(cfg: DictConfig) -> None:
        sys.argv = argv  # as launched: Lightning's DDP launcher re-runs this command line for the other ranks
        try:
            run(OmegaConf.to_object(cfg))
        except LmlabError as err:
            print(f"lmlab {verb}: error: {err}", file=sys.stderr)
            sys.exit(2)

    sys.argv = [f"lmlab {verb}", *args[1:], *rank_overrides(verb, args[1:], os.environ)]
    hydra.main(version_base="1.3", config_path=str(conf), config_name=verb)(task)()


def targets(only: str | None) -> list[str]:
    """The dataset keys a data verb acts on: ``only=data``, ``only=task_data`` or both."""
    choices = ("data", "task_data")
    if only is None:
        return list(choices)
    if only not in choices:
        raise LmlabError(
            f"only={only!r} is not a dataset key; use one of {', '.join(choices)} (or leave it null for both)"
        )
    return [only]


def rank_overrides(verb: str, args: list[str], env: Mapping[str, str]) -> list[str]:
    """Ranks started by torchrun or srun each run the whole command: give them one run folder, written by rank 0.

    Without this, every rank would make its own timestamped Hydra folder and write
    its own copy of the config. Overrides the user (or Lightning's launcher) gave win.
    """
    world = int(env.get("WORLD_SIZE") or (env.get("SLURM_NTASKS") if "SLURM_PROCID" in env else None) or 1)
    if world <= 1:
        return []
    rank = int(env.get("RANK") or env.get("SLURM_PROCID") or env.get("LOCAL_RANK") or 0)
    job = env.get("TORCHELASTIC_RUN_ID") or env.get("SLURM_JOB_ID") or "distributed"
    given = {arg.split("=", 1)[0].lstrip("+~") for arg in args}
    wanted = {"hydra.run.dir": f"outputs/{verb}/{job}"}
    if rank > 0:
        wanted |= {"hydra.output_subdir": "null", "hydra.job.name": f"{verb}_rank{rank}"}
    return [f"{key}={value}" for key, value in wanted.items() if key not in given]
