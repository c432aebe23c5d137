"""`lmlab fanout`: DVC pipelines' stale stages run side by side (here, or as a cluster's job array), then
recorded in the lock file by `dvc commit`.

`dvc repro` runs one stage at a time and holds the repository's lock while the stage's command runs, so two
stages cannot run at once in one workspace; the studies' training stages are independent and take hours one
after another. Each stage's command, run from its wdir, writes exactly the outputs `dvc repro` would, so the
commands can run anywhere at once and `dvc commit` records them afterwards. That is honest only if nothing a
stage depends on changed while it ran: fanout notes every dep's hash (DVC's own: files, folders, params
values) when it hands the command out, and commits a stage only if they are the same when it has finished.
It runs only stages whose upstream stages are up to date; the rest (a study's report) wait for `dvc repro`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
from dvc.repo import Repo
from dvc.stage import PipelineStage

from lmlab.core.atomic import write_atomic
from lmlab.core.errors import LmlabError

FOLDER = Path(".dvc/tmp/fanout")  # per stage: its log, and what its deps were when its command was handed out


@dataclass
class Stage:
    """A stale stage ready to run: its address, the folder and command `dvc repro` would run it with."""

    dvcfile: str
    address: str
    wdir: str
    cmd: str


def ready_stages(repo: Repo, dvcfiles: Sequence[str], only: Iterable[str] = ()) -> tuple[list[Stage], list[str]]:
    """The stale stages of the pipeline files `dvcfiles` (of the named groups, `mqar` for the `mqar@...` stages,
    if any), the first file's first, split into those whose upstream stages are all up to date (ready) and the
    others (their addresses)."""
    stages = [s for s in repo.index.stages if isinstance(s, PipelineStage) and s.relpath in dvcfiles]
    for dvcfile in dvcfiles:
        if not any(s.relpath == dvcfile for s in stages):
            raise LmlabError(f"{dvcfile} has no stages (is it a dvc.yaml of this repository?)")
    stages.sort(key=lambda s: dvcfiles.index(s.relpath))  # stable: a file's stages keep their order
    groups = {s.name.split("@")[0] for s in stages}
    if unknown := set(only) - groups:
        raise LmlabError(
            f"no stage group {', '.join(sorted(unknown))} in {', '.join(dvcfiles)}; the groups there: "
            f"{', '.join(sorted(groups))}"
        )
    stale = set(repo.status(targets=list(dvcfiles)))
    graph = repo.index.graph  # edges point from a stage to the stages it depends on
    ready, waiting = [], []
    for stage in stages:
        if stage.addressing not in stale or (only and stage.name.split("@")[0] not in only):
            continue
        if any(upstream.addressing in stale for upstream in nx.descendants(graph, stage)):
            waiting.append(stage.addressing)
        elif not stage.cmd:
            waiting.append(stage.addressing)
        else:
            command = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
            wdir = os.path.relpath(stage.wdir, repo.root_dir)
            ready.append(Stage(stage.relpath, stage.addressing, wdir, command))
    return ready, waiting


def dep_hashes(repo: Repo, address: str) -> dict[str, str]:
    """Every dep of the stage as DVC hashes it now (md5 of files and folders, the params' values)."""
    (stage,) = [s for s in repo.index.stages if s.addressing == address]
    return {dep.def_path: str(dep.get_hash()) for dep in stage.deps}


def note_file(address: str) -> Path:
    return FOLDER / (address.replace("/", "_").replace(":", "_") + ".json")


def hand_out(repo: Repo, stage: Stage) -> None:
    """Note the stage's deps as they are when its command is handed out (`commit_if_unchanged` compares)."""
    path = Path(repo.root_dir) / note_file(stage.address)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(
        path,
        json.dumps(
            {"dvcfile": stage.dvcfile, "stage": stage.address, "deps": dep_hashes(repo, stage.address)}
        ).encode(),
    )


def commit_if_unchanged(repo_root: Path, address: str) -> str | None:
    """`dvc commit` the stage if every dep is as it was handed out; else what changed (None: committed)."""
    note = repo_root / note_file(address)
    if not note.is_file():
        return "it was not handed out by `lmlab fanout` (no note of its deps)"
    before = json.loads(note.read_text())["deps"]
    with Repo(str(repo_root)) as repo:
        now = dep_hashes(repo, address)
        changed = sorted(path for path in before.keys() | now.keys() if before.get(path) != now.get(path))
        if changed:
            return f"{', '.join(changed)} changed while it ran; run it again (`dvc repro {address}`)"
        repo.commit(address, force=True)
    note.unlink()
    return None


def log_file(repo_root: Path, address: str) -> Path:
    return repo_root / FOLDER / (address.replace("/", "_").replace(":", "_") + ".log")


def run_here(
    repo_root: Path, stages: list[Stage], jobs: int, say: Callable[[str], None], stop: threading.Event
) -> list[str]:
    """Run the stages' commands `jobs` at a time, each in its own process group with its output in its log;
    commit each as it finishes (one commit at a time). Returns the stages that did not end committed."""
    lock = threading.Lock()
    running: dict[str, subprocess.Popen[bytes]] = {}
    failed: list[str] = []
    with Repo(str(repo_root)) as repo:
        for stage in stages:
            hand_out(repo, stage)

    def run(stage: Stage) -> None:
        if stop.is_set():
            failed.append(stage.address)
            return
        started = time.monotonic()
        log = log_file(repo_root, stage.address)
        with log.open("wb") as out:
            process = subprocess.Popen(
                stage.cmd, shell=True, cwd=repo_root / stage.wdir, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            running[stage.address] = process
            code = process.wait()
            running.pop(stage.address)
        took = time.monotonic() - started
        with lock:
            if stop.is_set():
                failed.append(stage.address)
                say(f"stopped {stage.address} after {took:.0f} s; the next `lmlab fanout` or `dvc repro` resumes it")
                return
            if code != 0:
                failed.append(stage.address)
                hint = " (command not found: is lmlab on PATH, as for `dvc repro`?)" if code == 127 else ""
                say(f"failed  {stage.address} (exit {code}{hint}) after {took:.0f} s: {log}")
                return
            problem = commit_if_unchanged(repo_root, stage.address)
            if problem:
                failed.append(stage.address)
                say(f"not committed  {stage.address}: {problem}")
            else:
                say(f"done    {stage.address} in {took:.0f} s")

    def forward(signum: int, frame: Any) -> None:  # lmlab jobs keep their last whole step on SIGTERM
        stop.set()
        for process in list(running.values()):
            os.killpg(process.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(run, stages))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return failed


def command_line(stage: Stage) -> str:
    """One stage as one shell line, for an array job or GNU parallel: run from the repository root."""
    return f"cd {stage.wdir} && {stage.cmd}" if stage.wdir != "." else stage.cmd
