"""`lmlab harness`: lm-evaluation-harness tasks on one trained model (`lmlab.hub.harness.HarnessLM`).

Each task named in `tasks` (a task, group or tag of the harness, or of `include_path`'s YAMLs) gets two files:
the harness's own results for it (``<results_dir>/<task>.json``: figures, stderrs, task configs, versions, the
harness's config) and its summary in lmlab's names (``<out_dir>/<task>.json``, `lmlab.analysis.harness`), which
the comparison report reads. Everything that can be refused is, before the model reads a token: the source
(`lmlab.load`: a run folder, a checkpoint, an exported folder or a Hub repo id), the task names, each task's
data (a standard task downloads its data set from the Hugging Face Hub).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from functools import cache
from pathlib import Path
from typing import Any

import torch
from datasets.exceptions import DatasetNotFoundError
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager
from lm_eval.utils import handle_non_serializable

from lmlab.analysis.harness import CHANCE, EXAMPLES, HIGHER, INTERVALS, interval
from lmlab.core import metrics as M
from lmlab.core.atomic import write_atomic, write_json
from lmlab.core.errors import LmlabError
from lmlab.hub.harness import HarnessLM
from lmlab.jobs.harness_config import HarnessConfig

log = logging.getLogger(__name__)

# The results' sections keyed by task or group name: each task's file holds its own entries of them.
PER_TASK = ("results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples")
NOT_FIGURES = ("alias", "name", "sample_len", "samples")  # entries of a task's results that are no metric


def harness(cfg: HarnessConfig) -> dict[str, dict[str, Any]]:
    """Run the tasks and write each one's results and summary; returns the summaries by task."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    plain_sigterm_in_forks()
    started = time.perf_counter()
    try:
        lm = HarnessLM.load(cfg.source, cfg.device, cfg.batch_size, cfg.revision)
    except LmlabError as err:
        raise LmlabError(f"source={cfg.source}: {err}") from None
    if lm.model.cfg.family != cfg.family:
        raise LmlabError(
            f"family={cfg.family}, but source={cfg.source} holds a {lm.model.cfg.family}: give "
            f"family={lm.model.cfg.family} (it names the output folders)"
        )
    manager = task_manager(cfg.tasks, cfg.include_path)
    loaded = {name: load_task(manager, name) for name in cfg.tasks}
    log.info(
        "harness: %s (%s, %s parameters) on %s%s",
        cfg.source,
        lm.model.cfg.family,
        f"{lm.model.num_params:,}",
        ", ".join(cfg.tasks),
        f", the first {cfg.limit} examples of each" if cfg.limit else "",
    )
    results = simple_evaluate(
        model=lm,
        tasks=[task for objects, _ in loaded.values() for task in objects],
        task_manager=manager,
        limit=cfg.limit,
        num_fewshot=cfg.num_fewshot,
        log_samples=True,  # the chance level of a multiple-choice task counts each example's choices
    )
    summaries = {}
    for name, (_, names) in loaded.items():
        own = task_results(results, names)
        text = json.dumps(own, indent=2, default=handle_non_serializable)  # the harness's own writer's rule
        write_atomic(Path(cfg.results_dir) / f"{name}.json", text.encode())
        summaries[name] = summary(results, name, names, lm.model.cfg.family, lm.model.num_params)
        write_json(Path(cfg.out_dir) / f"{name}.json", summaries[name])
    for name, figures in summaries.items():
        log.info("%s: %s", name, headline(figures))
    log.info("harness: %d task(s) in %.0fs -> %s", len(summaries), time.perf_counter() - started, cfg.out_dir)
    return summaries


@cache
def plain_sigterm_in_forks() -> None:
    """Processes forked from here take SIGTERM's default action again. The harness computes a perplexity's
    standard error in a pool of forked workers, which it ends with SIGTERM: with the handler they inherit from
    the CLI (a job unwinds on SIGTERM, `lmlab.cli`), each would print a traceback as it goes."""
    os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))


def task_manager(tasks: list[str], include_path: str | None) -> Any:
    """The harness's index of tasks, refusing a name it does not know. Where `include_path` holds every task
    asked for, the harness's own 14,000 task files are not indexed (seconds saved)."""
    if include_path is not None:
        if not Path(include_path).is_dir():
            raise LmlabError(f"include_path={include_path}: no such folder; give a folder of task YAMLs")
        own = TaskManager(include_path=include_path, include_defaults=False)
        if set(tasks) <= set(own.all_tasks):
            return own
    manager = TaskManager(include_path=include_path)
    check_tasks(tasks, manager.all_tasks, include_path)
    return manager


def check_tasks(tasks: list[str], known: list[str], include_path: str | None) -> None:
    if unknown := [name for name in tasks if name not in known]:
        where = f" nor in include_path={include_path}" if include_path else ""
        raise LmlabError(
            f"tasks={list(tasks)}: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a task, group or "
            f"tag of the harness{where}; `lm-eval ls tasks` lists them, and include_path=<folder> adds task YAMLs "
            "of your own"
        )


def load_task(manager: Any, name: str) -> tuple[list[Any], set[str]]:
    """A task (a group, a tag's tasks) built with its data, and the task and group names its results hold. Its
    data set comes from the Hugging Face Hub (or the datasets cache) or from local files: one that cannot be
    read is an error naming the task."""
    try:
        loaded = manager.load([name])
    except (ConnectionError, DatasetNotFoundError) as err:
        raise LmlabError(
            f"tasks: {name} needs its data set from the Hugging Face Hub, which could not be read "
            f"({str(err).splitlines()[0]}); run it once where the Hub is reachable (the datasets cache keeps it for "
            "later runs, also with HF_DATASETS_OFFLINE=1), or give a task on local files (include_path=...)"
        ) from None
    except FileNotFoundError as err:
        raise LmlabError(
            f"tasks: {name}'s data files are missing ({str(err).splitlines()[0]}); a task's data_files are read "
            "from the folder lmlab runs in (the project root), unless absolute"
        ) from None
    top = loaded["groups"].get(name) or loaded["tasks"].get(name)
    objects = [top] if top is not None else list(loaded["tasks"].values())  # a tag: its tasks
    return objects, set(loaded["tasks"]) | set(loaded["groups"])


def task_results(results: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """The harness's results as its own JSON holds them (no per-example samples), for the tasks `names` only."""
    own = {key: value for key, value in results.items() if key not in ("samples", *PER_TASK)}
    for key in PER_TASK:
        if key in results:
            own[key] = {task: value for task, value in results[key].items() if task in names}
    return own


def figure_name(task: str, key: str) -> str:
    """The harness's `acc,none` of a task as `harness/<task>/acc`; a filter other than none is a name's last part
    (`harness/gsm8k/exact_match/strict-match`)."""
    metric, _, kept = key.partition(",")
    return M.harness_metric(task, metric if kept in ("", "none") else f"{metric}/{kept}")


def summary(results: dict[str, Any], name: str, names: set[str], family: str, params: int) -> dict[str, Any]:
    """One requested task's figures in lmlab's names, with their intervals, chance levels and directions."""
    out: dict[str, Any] = {"family": family, "task": name, M.PARAMS: params}
    out |= {INTERVALS: {}, CHANCE: {}, HIGHER: {}, EXAMPLES: {}}
    for task, entries in results["results"].items():
        if task not in names:
            continue
        directions = results.get("higher_is_better", {}).get(task, {})
        choices = chance(results, task)
        for key, value in entries.items():
            metric = key.partition(",")[0]
            if metric in NOT_FIGURES or metric.endswith("_stderr") or not isinstance(value, int | float):
                continue
            figure = figure_name(task, key)
            out[figure] = float(value)
            stderr = entries.get(key.replace(",", "_stderr,", 1))
            if isinstance(stderr, int | float):
                out[INTERVALS][figure] = interval(float(value), float(stderr))
            if metric in directions:
                out[HIGHER][figure] = bool(directions[metric])
            if choices is not None and metric in ("acc", "acc_norm"):
                out[CHANCE][figure] = choices
        if task in results.get("n-samples", {}):
            out[EXAMPLES][task] = results["n-samples"][task]["effective"]
    return out


def chance(results: dict[str, Any], task: str) -> float | None:
    """The accuracy of picking one of a multiple-choice task's answers at random (the mean over its examples of one
    over their number of choices); None for any other kind of task."""
    if results.get("configs", {}).get(task, {}).get("output_type") != "multiple_choice":
        return None
    examples = results.get("samples", {}).get(task, [])
    if not examples:
        return None
    return sum(1 / len(example["arguments"]) for example in examples) / len(examples)


def headline(figures: dict[str, Any]) -> str:
    return ", ".join(
        f"{name.removeprefix(M.HARNESS)} {value:.4g}"
        + (" [{:.4g}, {:.4g}]".format(*figures[INTERVALS][name]) if name in figures[INTERVALS] else "")
        for name, value in figures.items()
        if name.startswith(M.HARNESS)
    )
