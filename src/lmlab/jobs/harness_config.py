"""`lmlab harness`'s schema: which model, which lm-evaluation-harness tasks, and where the figures go."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from lmlab.core.rules import PLAIN_NAME, at_least, output_dir, path_name, plain_name
from lmlab.data.config import PathsConfig


@dataclass
class HarnessConfig:
    """lm-evaluation-harness tasks on one trained model: each task's results and its summary in lmlab's names."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    family: str = path_name("lstm")  # names the output folders, and picks the pipeline's run for `source`
    # a run folder (its checkpoints/best.ckpt), a pretraining checkpoint, a folder `lmlab export` wrote, or a
    # Hugging Face Hub repo id of one (conf/harness.yaml: the pipeline's run of `family`)
    source: str = MISSING
    revision: str | None = None  # a Hub repo id's branch, tag or commit (None: its main branch)
    # harness task, group or tag names ([lambada_openai,hellaswag]); each gets a summary file of its own
    tasks: list[str] = field(
        default_factory=list,
        metadata={"rule": (f"a list of one or more tasks, each {PLAIN_NAME}", lambda v: v and all(map(plain_name, v)))},
    )
    include_path: str | None = None  # a folder of task YAMLs of your own, found by name beside the harness's
    limit: int | None = at_least(1, None)  # the first examples of each task only: a quick look, not a figure
    num_fewshot: int | None = at_least(0, None)  # None: each task's own (0 where it sets none)
    batch_size: int = at_least(1, 32)  # contexts read, and continuations scored, per forward pass
    device: str = "cpu"  # or cuda, cuda:1, ...
    threads: int = at_least(0, 0)  # CPU threads (0: torch's default)
    # the pipeline's seed folders by default, as `lmlab evaluate`'s
    metrics_dir: str = "metrics/seed1337"
    eval_dir: str = "data/eval/seed1337"
    # <task>.json per task: its figures as harness/<task>/<metric>, each with its 95% interval (the report's)
    out_dir: str = output_dir(MISSING)  # <metrics_dir>/harness/<family>
    results_dir: str = output_dir(MISSING)  # <task>.json per task: the harness's own results for it
