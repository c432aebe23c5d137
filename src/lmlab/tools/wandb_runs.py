"""W&B runs read back as one record type, from offline run folders or from the W&B API.

Offline run folders are read with W&B's own reader, ``wandb leet inspect``: ``--json`` for the run
record (group, job type, tags, sweep) and the history rows, then, for the runs the filters keep,
``--summary --json`` for the state, summary and config. The state follows W&B's rules: ``finished``
(exit code 0), ``failed`` (non-zero), ``running`` (no exit record, log written in the last 10 minutes:
the offline heartbeat), ``crashed`` (no exit record, log silent for longer), ``unknown`` (killed before
its first record reached disk). A resumed run has one folder per start under one id: they are merged.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lmlab.core.errors import LmlabError
from lmlab.core.rules import dotted

DEFAULT_PATHS = (Path("outputs"), Path("data/runs"))  # where `lmlab pretrain` puts run folders, by hand and under DVC
HOW_TO_MAKE_RUNS = (
    "make runs with `lmlab pretrain` (it logs to W&B, offline, by default; e.g. `lmlab pretrain -m model=lstm,gru`) "
    "or `dvc repro`, or give the folders that hold them"
)
RUN_FOLDER_PREFIXES = ("offline-run-", "run-")  # offline runs; online runs keep the same log locally
SWEEP_TAG = "sweep:"  # `lmlab sweep` tags its trials sweep:<id> (offline there is no W&B sweep id to set)
STEP = "trainer/global_step"  # Lightning logs it in every row: where a resumed run's rows start again


@dataclass
class Run:
    """One W&B run, whichever source it came from: everything downstream reads only this."""

    id: str
    name: str
    group: str
    job_type: str
    tags: list[str]
    state: str
    config: dict[str, Any]  # flat, dotted keys: "model.family"; W&B's own keys ("model/params") kept as they are
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    sweep: str  # the W&B sweep id (a W&B agent's run) or the id in a sweep:<id> tag (an `lmlab sweep` trial)
    source: str  # the run's .wandb file(s) or URL

    def value(self, key: str) -> Any:
        """A metric from the summary, else from the config (W&B keeps ``model/params`` there)."""
        return self.summary[key] if key in self.summary else self.config.get(key)


@dataclass(frozen=True)
class Filters:
    """Which runs to compare; every given condition must hold (all given tags, too)."""

    group: str | None = None
    tags: tuple[str, ...] = ()
    sweep: str | None = None
    job_type: str | None = None

    def matches(self, run: Run) -> bool:
        return (
            (self.group is None or run.group == self.group)
            and set(self.tags) <= set(run.tags)
            and (self.sweep is None or run.sweep == self.sweep)
            and (self.job_type is None or run.job_type == self.job_type)
        )

    def api(self) -> dict[str, Any]:
        """The same conditions as a MongoDB-style filter for ``wandb.Api().runs``."""
        conditions: list[dict[str, Any]] = [{"tags": {"$in": [tag]}} for tag in self.tags]
        if self.group is not None:
            conditions.append({"group": self.group})
        if self.sweep is not None:
            conditions.append({"$or": [{"sweep": self.sweep}, {"tags": {"$in": [SWEEP_TAG + self.sweep]}}]})
        if self.job_type is not None:
            conditions.append({"jobType": self.job_type})
        return {"$and": conditions} if conditions else {}

    def describe(self) -> str:
        given = [("group", self.group), *(("tag", tag) for tag in self.tags)]
        given += [("sweep", self.sweep), ("job type", self.job_type)]
        return ", ".join(f"{key} {value!r}" for key, value in given if value is not None) or "no filter"


def number(value: Any) -> float | None:
    """A finite metric value as a float; anything else (missing, text, NaN, inf) is None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def sweep_of(sweep_id: str | None, tags: Iterable[str]) -> str:
    return sweep_id or next((tag.removeprefix(SWEEP_TAG) for tag in tags if tag.startswith(SWEEP_TAG)), "")


# ----- offline run folders -----
def find_run_files(paths: Iterable[Path]) -> list[Path]:
    """The ``.wandb`` logs of the W&B run folders under ``paths`` (searched recursively), each once."""
    found: dict[Path, None] = {}
    for path in paths:
        if not path.exists():
            raise LmlabError(f"{path}: no such file or folder; give folders that hold W&B runs (outputs, data/runs)")
        candidates = [path] if path.is_file() else sorted(path.rglob("run-*.wandb"))
        for file in candidates:
            if file.suffix == ".wandb" and file.parent.name.startswith(RUN_FOLDER_PREFIXES):
                found.setdefault(file.resolve())
    return list(found)


def inspect(file: Path, *flags: str) -> str:
    """``wandb leet inspect`` of the W&B package this interpreter runs."""
    result = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", *flags, str(file)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise LmlabError(f"{file}: `wandb leet inspect` could not read it: {result.stderr.strip()[-1000:]}")
    return result.stdout


def read_log(file: Path) -> Run:
    """A run folder's records: who the run is and its history; its state, summary and config come in `add_summary`."""
    records = [json.loads(line) for line in inspect(file, "--json").splitlines() if line.strip()]
    record = next((r["run"] for r in records if r.get("type") == "run"), {})
    run_id = record.get("run_id") or file.stem.removeprefix("run-")  # an empty log: the id is in the file name
    tags = list(record.get("tags") or [])
    return Run(
        id=run_id,
        name=record.get("display_name") or run_id,
        group=record.get("run_group", ""),
        job_type=record.get("job_type", ""),
        tags=tags,
        state="unknown",
        config={},
        summary={},
        history=[r["history"]["item"] for r in records if r.get("type") == "history"],
        sweep=sweep_of(record.get("sweep_id"), tags),
        source=str(file),
    )


def add_summary(run: Run) -> Run:
    summary = json.loads(inspect(Path(run.source), "--summary", "--json"))
    return replace(
        run,
        state=summary.get("state") or "unknown",
        config=dotted(summary.get("config") or {}),
        summary=summary.get("summary") or {},
    )


def merge_starts(starts: list[Run]) -> Run:
    """One run from the folders of its starts: the last start's state; rows a resume trained again replaced.

    A resumed run continues from its last checkpoint, so it logs again the steps after that checkpoint;
    those rows of the earlier start are dropped (by ``trainer/global_step``).
    """
    # W&B names a run folder [offline-]run-<start time>-<id>: the order of the starts, also of one that logged nothing
    starts = sorted(starts, key=lambda run: Path(run.source).parent.name.removeprefix("offline-"))
    described = [run for run in starts if run.config] or starts  # a start killed before its first flush knows nothing
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for run in starts:
        first = next((row[STEP] for row in run.history if STEP in row), None)
        if first is not None:
            history = [row for row in history if row.get(STEP, -math.inf) < first]
        history += run.history
        summary |= run.summary
    return replace(
        described[-1],
        state=starts[-1].state,
        summary=summary,
        history=history,
        source=", ".join(run.source for run in starts),
    )


def read_offline_runs(paths: list[Path], filters: Filters) -> list[Run]:
    """The W&B runs under ``paths`` that pass ``filters``; a resumed run (several folders, one id) is one run."""
    where = ", ".join(map(str, paths))
    files = find_run_files(paths)
    if not files:
        raise LmlabError(f"no W&B runs (offline-run-*/run-*.wandb) under {where}; {HOW_TO_MAKE_RUNS}")
    with ThreadPoolExecutor() as pool:  # each read is a short-lived `wandb` process
        logs = list(pool.map(read_log, files))
        chosen = [run for run in logs if filters.matches(run)]
        if not chosen:

            def present(values: Iterable[str]) -> str:
                return ", ".join(sorted(set(values) - {""})) or "none"

            raise LmlabError(
                f"none of the {len(logs)} runs under {where} has {filters.describe()}; they have groups: "
                f"{present(run.group for run in logs)}; tags: {present(tag for run in logs for tag in run.tags)}; "
                f"sweeps: {present(run.sweep for run in logs)}; job types: {present(run.job_type for run in logs)}"
            )
        runs = list(pool.map(add_summary, chosen))
    by_id: dict[str, list[Run]] = {}
    for run in runs:
        by_id.setdefault(run.id, []).append(run)
    return [merge_starts(starts) for starts in by_id.values()]


# ----- the W&B API -----
def read_api_runs(project: str, filters: Filters) -> list[Run]:
    """Runs of ``entity/project`` on the W&B server that match ``filters`` (filtered by the server)."""
    if project.count("/") != 1 or not all(project.split("/")):
        raise LmlabError(f"--project {project!r}: give it as entity/project, e.g. my-team/lmlab")
    import wandb
    from wandb.errors import CommError, UsageError

    try:
        runs = [
            Run(
                id=run.id,
                name=run.name or run.id,
                group=run.group or "",
                job_type=run.job_type or "",
                tags=list(run.tags or []),
                state=run.state,
                config=dotted(run.config),
                summary=dict(run.summary_metrics),
                history=list(run.scan_history()),
                sweep=sweep_of(run.sweep_name, run.tags or []),
                source=run.url,
            )
            for run in wandb.Api().runs(project, filters=filters.api())
        ]
    except (CommError, UsageError, ValueError) as err:
        raise LmlabError(
            f"--project {project}: the W&B API refused or could not be reached ({err}); "
            "log in with `wandb login` (or set WANDB_API_KEY) and check the entity and project names"
        ) from err
    if not runs:
        raise LmlabError(f"W&B project {project} has no runs with {filters.describe()}")
    return runs


def load_runs(paths: list[Path], project: str | None, filters: Filters) -> tuple[list[Run], str]:
    """The runs to compare, from run folders (default: `DEFAULT_PATHS` that exist) or a W&B project, and whence."""
    if project:
        if paths:
            raise LmlabError(f"give run folders ({', '.join(map(str, paths))}) or --project {project}, not both")
        return read_api_runs(project, filters), f"W&B project {project}"
    searched = paths or [path for path in DEFAULT_PATHS if path.exists()]
    if not searched:
        raise LmlabError(
            f"no run folders given, and neither {' nor '.join(map(str, DEFAULT_PATHS))} exists in {Path.cwd()}; "
            + HOW_TO_MAKE_RUNS
        )
    return read_offline_runs(searched, filters), ", ".join(map(str, searched))
