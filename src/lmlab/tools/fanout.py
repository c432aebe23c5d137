"""`lmlab fanout`: DVC pipelines' stale stages run side by side (here, or as a cluster's job array), then
recorded in the lock file by `dvc commit`.

`dvc repro` runs one stage at a time and holds the repository's lock while the stage's command runs, so two
stages cannot run at once in one workspace; the studies' training stages are independent and take hours one
after another. Each stage's command, run from its wdir, writes exactly the outputs `dvc repro` would, so the
commands can run anywhere at once and `dvc commit` records them afterwards. That is honest only if nothing a
stage depends on changed while it ran: fanout notes every dep's hash (DVC's own: files, folders, params
values) when it hands the command out, and commits a stage only if they are the same when it has finished.
A stage whose upstream stages are stale runs once fanout has committed them (a study's report after its runs);
one downstream of a stale stage fanout does not run (another file's, another group's) is left for `dvc repro`.
"""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import networkx as nx
from dvc.exceptions import DvcException
from dvc.lock import LockError
from dvc.repo import Repo, lock_repo
from dvc.stage import PipelineStage

from lmlab.core.atomic import write_atomic
from lmlab.core.errors import LmlabError
from lmlab.tools.processes import kill_group, share_cores

T = TypeVar("T")
LOCK_PATIENCE = 600.0  # seconds a stage's DVC work waits for a dvc command beside fanout before it fails
FOLDER = Path(".dvc/tmp/fanout")  # per stage: its log, and what its deps were when its command was handed out


@dataclass
class Stage:
    """A stage to run: its address, the folder and command `dvc repro` would run it with, and the stages
    upstream of it that fanout runs, to be committed before it runs (none: it can run now)."""

    dvcfile: str
    address: str
    wdir: str
    cmd: str
    after: frozenset[str] = frozenset()


def stale_stages(repo: Repo, dvcfiles: Sequence[str], only: Iterable[str] = ()) -> tuple[list[Stage], list[str]]:
    """The stale stages of the pipeline files `dvcfiles` (of the named groups, `mqar` for the `mqar@...` stages,
    if any) and every stage downstream of them there (DVC judges a stage by its own deps: the report is not
    stale until its runs have new outputs), the first file's first: those fanout can run (now, or once the
    stages upstream of them are committed), and the addresses of those it cannot (no command, or a stale stage
    upstream that it does not run: another file's, another group's)."""
    index = repo.index  # once: `repo.status` drops DVC's cached index, and building it parses every lock file
    stages = [s for s in index.stages if isinstance(s, PipelineStage) and s.relpath in dvcfiles]
    for dvcfile in dvcfiles:
        if not any(s.relpath == dvcfile for s in stages):
            raise LmlabError(f"{dvcfile} has no stages (is it a dvc.yaml of this repository?)")
    stages.sort(key=lambda s: dvcfiles.index(s.relpath))  # stable: a file's stages keep their order
    groups = {s.name.split("@")[0] for s in stages}
    if unknown := [item for item in only if not any(picked(s, [item]) for s in stages)]:
        raise LmlabError(
            f"no stage group {', '.join(sorted(unknown))} in {', '.join(dvcfiles)} (nor a stage name it matches as "
            f"a pattern); the groups there: {', '.join(sorted(groups))}"
        )
    stale = set(repo.status(targets=list(dvcfiles)))
    graph = index.graph  # edges point from a stage to the stages it depends on
    selected = [s for s in stages if not only or picked(s, only)]
    downstream = {a.addressing for s in selected if s.addressing in stale for a in nx.ancestors(graph, s)}
    chosen = [s for s in selected if s.addressing in stale or s.addressing in downstream]
    names = {s.addressing for s in chosen}
    upstream = {s.addressing: {u.addressing for u in nx.descendants(graph, s)} for s in chosen}
    runnable = {s.addressing for s in chosen if s.cmd and not (upstream[s.addressing] & stale) - names}
    while dropped := {a for a in runnable if not upstream[a] & names <= runnable}:  # waits on one it will not run
        runnable -= dropped
    ready = [
        Stage(s.relpath, s.addressing, os.path.relpath(s.wdir, repo.root_dir), command(s),
              frozenset(upstream[s.addressing] & names))
        for s in chosen if s.addressing in runnable
    ]  # fmt: skip
    return ready, [s.addressing for s in chosen if s.addressing not in runnable]


def picked(stage: PipelineStage, only: Iterable[str]) -> bool:
    """Whether `--only` names the stage: its group (`mqar` for `mqar@...`) or a pattern of its name
    (`mqar_long@transformer-*`, shell-style)."""
    return any(item == stage.name.split("@")[0] or fnmatch.fnmatchcase(stage.name, item) for item in only)


def target(repo: Repo, dvcfile: str, address: str) -> str:
    """The stage as a DVC target that loads its own pipeline file only (DVC builds the whole repository's index,
    every study's lock file, 4.6 s here, for a stage named by its address alone): the file relative to this
    folder, as DVC reads it (an absolute path would take an `@` in the repository's path for a stage's), and
    the stage's name (its address less the file)."""
    name = address.removeprefix(f"{dvcfile}:")
    return f"{os.path.relpath(Path(repo.root_dir) / dvcfile)}:{name}"


def command(stage: PipelineStage) -> str:
    """The stage's command as one shell line (a list of commands runs as `dvc repro` runs it: in turn)."""
    return stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)


def under_lock(
    root: Path, work: Callable[[Repo], T], say: Callable[[str], None] = print, stop: threading.Event | None = None
) -> T:
    """`work` on the repository with its lock held, as a dvc command holds it. A `dvc status` typed beside a
    running fanout holds the lock for seconds: wait for it, saying so once, rather than fail the stage being
    handed out or committed; give up (DVC's LockError) when fanout is being stopped or after LOCK_PATIENCE (a
    `dvc repro` beside it, or a stale lock)."""
    deadline, told = time.monotonic() + LOCK_PATIENCE, False
    while True:
        try:
            with Repo(str(root)) as repo, lock_repo(repo):
                return work(repo)
        except LockError:
            if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                raise
            if not told:
                say(f"waiting for the repository's lock, which a dvc command holds ({LOCK_PATIENCE:.0f} s at most)")
                told = True
            time.sleep(1.0)


def collect(repo: Repo, dvcfile: str, address: str) -> PipelineStage:
    """The stage as its pipeline file has it now. Each collect parses the file's lock (DVC's YAML reader: 2.4 s
    for the transfer study's here), so a stage is collected once to hand it out and once to commit it."""
    (stage,) = repo.stage.collect(target(repo, dvcfile, address))
    return stage


def as_now(stage: PipelineStage) -> tuple[str, dict[str, str]]:
    """The stage's command in its file now, and every dep as DVC hashes it now (md5 of files and folders, the
    params' values), the way `commit_if_unchanged` hashes them (`save`): a dep the stage's lock entry does not
    hold (its deps were listed otherwise when it last ran) `get_hash` hashes as legacy `md5-dos2unix` and `save`
    as `md5`, and the two would differ for every such dep ("changed while it ran")."""
    stage.save_deps()
    return command(stage), saved_deps(stage)


def saved_deps(stage: PipelineStage) -> dict[str, str]:
    """Each dep's hash as its last `save` computed it: what hand-out notes and commit compares."""
    return {dep.def_path: str(dep.hash_info) for dep in stage.deps}


def stem(address: str) -> str:
    """A stage's address as a file name in FOLDER (its note and its log)."""
    return address.replace("/", "_").replace(":", "_")


def note_file(address: str) -> Path:
    return FOLDER / f"{stem(address)}.json"


def hand_out(repo: Repo, stage: Stage, now: PipelineStage | None = None) -> Stage:
    """Note the stage's command and deps as they are when it is handed out (`commit_if_unchanged` compares) and
    remove its outputs (but persistent ones), as `dvc repro` does before it runs a stage: a command that fails
    leaves none of the previous run's for a commit to record. The stage with its command as its file has it now
    (the file may have changed since fanout read it). `now`: the stage already collected."""
    path = Path(repo.root_dir) / note_file(stage.address)
    path.parent.mkdir(parents=True, exist_ok=True)
    now = now or collect(repo, stage.dvcfile, stage.address)
    cmd, deps = as_now(now)
    note = {"dvcfile": stage.dvcfile, "stage": stage.address, "cmd": cmd, "deps": deps}
    write_atomic(path, json.dumps(note).encode())
    now.remove_outs(ignore_remove=False, force=False)
    return replace(stage, cmd=cmd)


def commit_if_unchanged(
    repo_root: Path, address: str, say: Callable[[str], None] = print, stop: threading.Event | None = None
) -> str | None:
    """`dvc commit` the stage if its command and every dep are as they were when it was handed out; else what
    changed (None: committed), and its note goes (a run of other code is never recorded). What `dvc commit
    --force <stage>` does (`dvc.repo.commit`), on the stage collected once: the deps hashed once, for the check
    and for the lock file."""
    note = repo_root / note_file(address)
    if not note.is_file():
        return "it was not handed out by `lmlab fanout` (no note of its deps)"
    noted = json.loads(note.read_text())

    def check_and_commit(repo: Repo) -> str | None:
        stage = collect(repo, noted["dvcfile"], address)
        stage.save(run_cache=False)  # every dep and output hashed now
        now = saved_deps(stage)
        before = noted["deps"]
        changed = sorted(path for path in before.keys() | now.keys() if before.get(path) != now.get(path))
        if noted.get("cmd") != command(stage):
            changed.insert(0, f"its command in {noted['dvcfile']}")
        if changed:
            return f"{', '.join(changed)} changed while it ran; run it again (`dvc repro {address}`)"
        repo.stage_cache.save(stage)
        stage.commit()
        stage.dvcfile.dump_stages([stage], update_pipeline=False)
        return None

    problem = under_lock(repo_root, check_and_commit, say, stop)
    note.unlink()
    return problem


def log_file(repo_root: Path, address: str) -> Path:
    return repo_root / FOLDER / f"{stem(address)}.log"


def still_stale(stage: PipelineStage) -> bool:
    """Whether DVC still finds the stage stale now that its upstream stages have run (their new outputs may be
    the ones it was run with: then `dvc repro` would skip it, and so does fanout)."""
    return bool(stage.status())


def run_here(
    repo_root: Path, stages: list[Stage], jobs: int, say: Callable[[str], None], stop: threading.Event
) -> list[str]:
    """Run the stages' commands `jobs` at a time, in the queue's order as each becomes ready (its upstream stages
    committed), each in its own process group with its output in its log; commit each as it finishes. DVC work
    (noting deps, status, commits) is done one at a time. Returns the stages that did not end committed."""
    lock = threading.Lock()
    running: dict[str, subprocess.Popen[bytes]] = {}
    env = dict(os.environ)
    share_cores(env, jobs)

    def execute(stage: Stage) -> tuple[int, float]:
        """The stage's command in its own process group, its output in its log: the exit code, the seconds."""
        started = time.monotonic()
        with log_file(repo_root, stage.address).open("wb") as out:
            process = subprocess.Popen(
                stage.cmd, shell=True, cwd=repo_root / stage.wdir, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=env,
            )  # fmt: skip
            running[stage.address] = process
            if stop.is_set():  # a signal came while it was being handed out: it found nothing to stop
                kill_group(process.pid)
            code = process.wait()
            running.pop(stage.address)
        return code, time.monotonic() - started

    def run(stage: Stage) -> bool:
        """Run one stage and commit it; whether it ended committed (or found up to date)."""
        note = repo_root / note_file(stage.address)
        try:
            with lock:
                if stop.is_set():
                    return False

                def check_and_hand_out(repo: Repo) -> Stage | None:
                    now = collect(repo, stage.dvcfile, stage.address)
                    return hand_out(repo, stage, now) if not stage.after or still_stale(now) else None

                handed = under_lock(repo_root, check_and_hand_out, say, stop)
                if handed is None:
                    say(f"up to date  {stage.address} (its upstream stages' outputs are those it was run with)")
                    return True
                stage = handed
            code, took = execute(stage)
            with lock:
                if stop.is_set():
                    say(
                        f"stopped {stage.address} after {took:.0f} s; the next `lmlab fanout` or `dvc repro` resumes it"
                    )
                    return False
                if code != 0:
                    hint = " (command not found: is lmlab on PATH, as for `dvc repro`?)" if code == 127 else ""
                    log = log_file(repo_root, stage.address)
                    say(f"failed  {stage.address} (exit {code}{hint}) after {took:.0f} s: {log}")
                    return False
                problem = commit_if_unchanged(repo_root, stage.address, say, stop)
        except DvcException as err:  # e.g. the command ended well but did not write an output
            say(f"failed  {stage.address}: {err}")
            return False
        finally:  # unless committed, no note stays for `--commit` to record later (an error of any kind too)
            note.unlink(missing_ok=True)
        say(f"not committed  {stage.address}: {problem}" if problem else f"done    {stage.address} in {took:.0f} s")
        return problem is None

    def forward(signum: int, frame: Any) -> None:  # lmlab jobs keep their last whole step on SIGTERM
        stop.set()
        for process in list(running.values()):
            kill_group(process.pid)

    queue, committed, flying = list(stages), set[str](), dict[Future[bool], Stage]()
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ThreadPoolExecutor(jobs) as pool:
            while True:
                while len(flying) < jobs and not stop.is_set():
                    stage = next((s for s in queue if s.after <= committed), None)
                    if stage is None:
                        break
                    queue.remove(stage)
                    flying[pool.submit(run, stage)] = stage
                if not flying:
                    break
                finished, _ = wait(flying, timeout=1.0, return_when=FIRST_COMPLETED)  # a timeout: signals get in
                for future in finished:
                    stage = flying.pop(future)
                    if future.result():
                        committed.add(stage.address)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for stage in [] if stop.is_set() else queue:
        upstream = ", ".join(sorted(stage.after - committed))
        say(f"not run {stage.address}: {upstream} upstream of it did not end committed")
    return [s.address for s in stages if s.address not in committed]


def command_line(stage: Stage) -> str:
    """One stage as one shell line, for an array job or GNU parallel: run from the repository root."""
    return f"cd {stage.wdir} && {stage.cmd}" if stage.wdir != "." else stage.cmd
