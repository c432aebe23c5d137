"""``lmlab generate``: stream text sampled from a pretraining checkpoint, or a model `lmlab export` wrote (a
folder, or a Hub repo id of one), to stdout.

The prompt may come as a positional argument (`lmlab generate "Fellow citizens, I" family=gru`) or from
stdin (`echo "..." | lmlab generate - family=gru`), so text with commas or quotes needs no Hydra quoting.
"""

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from lmlab.core.errors import LmlabError
from lmlab.jobs.config import GenerateConfig

SUMMARY = "sample text from a pretraining checkpoint or exported model (family=..., checkpoint=..., prompt=...)"
SCHEMA = GenerateConfig

# Hydra's flags that take the next argument as their value
HYDRA_FLAGS_WITH_VALUE = {
    "--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
    "--info", "-i", "--experimental-rerun",
}  # fmt: skip


def positional_prompt(args: list[str]) -> tuple[list[str], str | None]:
    """The Hydra overrides among `args`, and the prompt given beside them: the arguments that are neither an
    override (key=value) nor a flag (nor a flag's value), joined by spaces, or stdin for `-`: the way to give a
    prompt whose first word holds `=` or starts with `-`."""
    overrides, words = [], []
    takes_value = False
    for arg in args:
        if takes_value:  # the value of a Hydra flag such as `--cfg job`
            overrides.append(arg)
            takes_value = False
        elif arg == "-":
            words.append(sys.stdin.read().rstrip("\n"))
        elif "=" in arg.split(" ", 1)[0] or arg.startswith("-"):
            overrides.append(arg)
            takes_value = arg in HYDRA_FLAGS_WITH_VALUE
        else:
            words.append(arg)
    if words and any(arg.lstrip("+").startswith("prompt=") for arg in overrides):
        raise LmlabError("the prompt is given twice: as an argument and as prompt=...; give one")
    return overrides, " ".join(words) if words else None


def job() -> Callable[[GenerateConfig, str | None], None]:
    """The job's code (torch), imported only to run one (not for --help, --cfg or TAB)."""
    import torch

    from lmlab.jobs.generate import stream_text

    def run(cfg: GenerateConfig, prompt: str | None = None) -> None:
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        if prompt is not None:
            cfg = replace(cfg, prompt=prompt)
        for piece in stream_text(cfg, Path(cfg.checkpoint)):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")

    return run
