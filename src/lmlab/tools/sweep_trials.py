"""`lmlab sweep`'s trials as processes: launch, watch, stop early, and pick up after an interruption.

One loop in the main thread, like `wandb agent`: it keeps up to `jobs` trials running, each in its own
process session with its output in ``<run folder>/trial.log``, polls them, and records every change in
``sweep.json`` before acting on it. A trial's process inherits a lock on ``<run folder>/.trial.lock``, so a
later `lmlab sweep` can tell a trial that outlived its runner (it waits for it) from one that died with it
(it starts it again in the same run folder, where `resume=auto` continues from the last checkpoint).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rich.console import Console

from lmlab.core.errors import LmlabError
from lmlab.tools.processes import kill_group, share_cores
from lmlab.tools.sweep import (
    Sweep,
    Trial,
    check_metric,
    fmt,
    open_sweep,
    print_ranking,
    propose,
    read_results,
    to_stop,
    trial_command,
    value,
)

POLL_SECONDS = 0.5
KILL_DELAY = 30.0  # seconds between SIGTERM and SIGKILL, as `wandb agent` waits
MAX_FAILURES_IN_A_ROW = 3  # then no new trials: the command itself is broken (the agent stops likewise)


class Interrupted(Exception):
    """SIGTERM or SIGINT for the runner: stop the trials, keep them resumable, and exit."""


@dataclass
class Live:
    """A trial's running process, the lock it holds, and when it was asked to stop."""

    trial: Trial
    proc: subprocess.Popen
    lock: IO[bytes]
    log: IO[bytes]
    stop_sent: float | None = None
    early: bool = False  # the stop is an early termination (not an interruption)


def run_sweep(file: Path, count: int | None, jobs: int, out: Path, console: Console) -> int:
    """Run the sweep file until it has `count` trials (a grid: all of its points); 0 if none failed."""
    if jobs < 1 or (count is not None and count < 1):
        raise LmlabError(f"--count {count} and -j {jobs} must be at least 1")
    sweep = open_sweep(file, out, Path("conf"))
    if count is None and sweep.config["method"] != "grid":
        raise LmlabError(f"{file} is a {sweep.config['method']} sweep, which never ends by itself: give --count N")
    sweep.folder.mkdir(parents=True, exist_ok=True)
    with exclusive(sweep.folder / ".sweep.lock", f"sweep {sweep.folder} is being run by another lmlab sweep"):
        previous = signal.signal(signal.SIGTERM, interrupt)
        try:
            failed = Runner(sweep, count, jobs, console).loop()
        except Interrupted:
            console.print(f"interrupted: run the same command again to continue sweep {sweep.id}")
            print_ranking(sweep, console)
            return 130
        finally:
            signal.signal(signal.SIGTERM, previous)
    print_ranking(sweep, console)
    return 1 if failed else 0


def interrupt(signum: int, frame: Any) -> None:
    """SIGTERM handler: unwind the loop like Ctrl-C does, so the trials are stopped and stay resumable."""
    raise Interrupted(signal.Signals(signum).name)


class Runner:
    """The loop's state: live trials, failures, whether the search has more to propose."""

    def __init__(self, sweep: Sweep, count: int | None, jobs: int, console: Console) -> None:
        self.sweep, self.count, self.jobs, self.console = sweep, count, jobs, console
        self.live: dict[str, Live] = {}
        self.failed: list[Trial] = []
        self.failures_in_a_row = 0
        self.exhausted = False  # a grid with no point left
        self.waited: set[str] = set()  # trials whose earlier process we said we wait for

    def loop(self) -> list[Trial]:
        """Trials left running by an earlier runner first, then new ones; returns the trials that failed."""
        pending = [t for t in self.sweep.trials if t.state == "running"]  # not live here: resume them
        try:
            while True:
                self.reap()
                for run_id, why in to_stop(self.sweep).items():
                    if run_id in self.live:
                        self.stop(self.live[run_id], early=True, why=why)
                for trial in list(pending):
                    if len(self.live) < self.jobs and self.start(trial):
                        pending.remove(trial)
                while len(self.live) + len(pending) < self.jobs and self.wants_more():
                    self.new_trial()
                if not self.live and not pending:
                    return self.failed
                time.sleep(POLL_SECONDS)
        except LmlabError:
            self.shut_down("error")
            raise
        except (Interrupted, KeyboardInterrupt) as err:
            self.shut_down(str(err) or "interrupted")
            raise Interrupted from err

    def say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def wants_more(self) -> bool:
        if self.exhausted or self.failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            return False
        return self.count is None or len(self.sweep.trials) < self.count

    def new_trial(self) -> None:
        """Ask the engine for the next parameters and start them as a new trial."""
        params = propose(self.sweep)
        if params is None:
            self.exhausted = True
            return
        trial = Trial(index=len(self.sweep.trials), run_id=secrets.token_hex(4), params=params)
        self.sweep.trials.append(trial)
        self.sweep.save()  # recorded before it starts: a runner killed now starts it again next time
        self.start(trial)

    def start(self, trial: Trial) -> bool:
        """Launch the trial in its run folder; False while a process of an earlier runner still holds it."""
        run_dir = self.sweep.folder / trial.run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = (run_dir / ".trial.lock").open("wb")
        if not try_lock(lock):
            lock.close()
            if trial.run_id not in self.waited:
                self.waited.add(trial.run_id)
                self.say(
                    f"trial {trial.index:03d} (run {trial.run_id}) is still running from an earlier lmlab sweep "
                    f"(pid {trial.pid}): waiting for it"
                )
            return False
        if (run_dir / "metrics.json").is_file():  # it finished after its runner was gone
            lock.close()
            self.finish(trial, None, run_dir, early=False)
            return True
        trial.summary, trial.curve = read_results(run_dir)
        command = trial_command(self.sweep, trial, run_dir)
        log = (run_dir / "trial.log").open("ab")
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            command,
            env=self.trial_env(trial),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: DDP ranks and W&B's service go with it
            pass_fds=(lock.fileno(),),  # the lock lives as long as the trial, even past this runner
        )
        trial.pid = proc.pid
        self.sweep.save()
        self.live[trial.run_id] = Live(trial, proc, lock, log)
        params = " ".join(f"{k}={v}" for k, v in trial.params.items())
        resumed = " again, from its last checkpoint" if trial.curve else ""
        self.say(f"trial {trial.index:03d} (run {trial.run_id}) started{resumed}: {params}")
        return True

    def trial_env(self, trial: Trial) -> dict[str, str]:
        """Its W&B run id and sweep tag; no W&B sweep id (none exists on a server); this venv's `lmlab` first.

        No WANDB_SERVICE either: a trial that inherited this process's W&B service would leave its run
        registered there when killed, and its resume would be refused ("run ID ... is in use").
        """
        dropped = ("WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH", "WANDB_SERVICE")
        env = {key: value for key, value in os.environ.items() if key not in dropped}
        tags = [t for t in env.get("WANDB_TAGS", "").split(",") if t]
        env |= {
            "WANDB_RUN_ID": trial.run_id,
            "WANDB_TAGS": ",".join([*tags, f"sweep:{self.sweep.id}"]),
            "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        }
        share_cores(env, self.jobs)
        return env

    def reap(self) -> None:
        """Record ended trials; read the validation curves of running ones (early termination needs them)."""
        for run_id, live in list(self.live.items()):
            run_dir = self.sweep.folder / run_id
            code = live.proc.poll()
            if code is None:
                live.trial.summary, live.trial.curve = read_results(run_dir)
                if live.stop_sent is not None and time.monotonic() - live.stop_sent > KILL_DELAY:
                    kill_group(live.proc.pid, signal.SIGKILL)
                continue
            kill_group(live.proc.pid, signal.SIGKILL)  # what it left behind (a DDP rank, W&B's service)
            del self.live[run_id]
            live.lock.close()
            live.log.close()
            self.finish(live.trial, code, run_dir, live.early)

    def finish(self, trial: Trial, code: int | None, run_dir: Path, early: bool) -> None:
        """Record an ended trial (`code` None: its process belonged to an earlier runner) and say how it went."""
        trial.summary, trial.curve = read_results(run_dir)
        trial.exit_code, trial.pid = code, None
        # Only a completed run writes metrics.json (Lightning ends a stopped fit with exit code 0 too);
        # a stop that comes as the run ends leaves it finished.
        done = code in (0, None) and bool(trial.summary)
        trial.state = "finished" if done else "stopped" if early else "failed"
        self.sweep.save()
        if trial.state == "failed":
            self.failed.append(trial)
            self.failures_in_a_row += 1
            tail = (run_dir / "trial.log").read_text(errors="replace").splitlines()[-15:]
            self.say(
                f"trial {trial.index:03d} (run {trial.run_id}) failed (exit code {code}"
                f"{', no metrics.json' if code == 0 else ''}); "
                f"{run_dir / 'trial.log'} ends:\n  " + "\n  ".join(tail)
            )
            if self.failures_in_a_row == MAX_FAILURES_IN_A_ROW:
                self.say(f"{MAX_FAILURES_IN_A_ROW} trials failed in a row: starting no more")
            return
        self.failures_in_a_row = 0
        if trial.state == "finished":
            check_metric(self.sweep, trial, run_dir)
        best = fmt(value(self.sweep, trial))
        self.say(f"trial {trial.index:03d} (run {trial.run_id}) {trial.state}: {self.sweep.metric} {best}")

    def stop(self, live: Live, early: bool, why: str) -> None:
        """SIGTERM, as `wandb agent` stops a run: Lightning ends the fit and W&B finishes the run."""
        if live.stop_sent is not None:
            return
        live.stop_sent, live.early = time.monotonic(), early
        what = "stopping early" if early else "stopping"
        self.say(f"trial {live.trial.index:03d} (run {live.trial.run_id}) {what}: {why}")
        try:
            os.kill(live.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass  # it ended on its own; reap() records it

    def shut_down(self, why: str) -> None:
        """Stop the running trials (SIGTERM, SIGKILL after the delay); they stay `running`, resumed next time."""
        for live in self.live.values():
            self.stop(live, early=False, why=why)
        deadline = time.monotonic() + KILL_DELAY
        for live in self.live.values():
            try:
                live.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            kill_group(live.proc.pid, signal.SIGKILL)
            live.proc.wait()
            live.trial.pid = None
            live.lock.close()
            live.log.close()
        self.live.clear()
        self.sweep.save()


def try_lock(f: IO[bytes]) -> bool:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def exclusive(path: Path, message: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block, or fail with `message` when another process has it."""
    with path.open("wb") as f:
        if not try_lock(f):
            raise LmlabError(message)
        yield
