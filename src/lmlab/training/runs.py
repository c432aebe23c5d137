"""A training run's folder: checkpoints, the W&B run id, and whether a new start may resume the old one.

Layout (the Hydra output folder of the run, e.g. ``runs/pretrain/lstm`` under DVC):

    .lock                  held while a run trains here (`RunFolder.held`): process and host
    run.json               W&B run id and the config fingerprint the checkpoints belong to
    checkpoints/last.ckpt  written at every validation; `resume=auto` continues from it
    checkpoints/best.ckpt  lowest val/loss so far
    checkpoints/stable.ckpt  wsd schedules: the state where the cooldown began, which a longer budget continues
    val_curve.csv          one row per validation (step, tokens, flops, seconds, val/loss, val/ppl, val/bpb, lr)
    metrics.json           final figures
    wandb/                 the W&B run (offline files unless online was asked for)
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only

from lmlab.core.atomic import read_json, write_json
from lmlab.core.errors import LmlabError
from lmlab.core.rules import check_values
from lmlab.data.config import PathsConfig, TokenizerConfig
from lmlab.data.corpus import Corpus
from lmlab.training.config import apply_lht_keys
from lmlab.training.identity import changed_keys, fingerprint

log = logging.getLogger(__name__)

STABLE_CHECKPOINT = "stable.ckpt"  # wsd: the state where the cooldown began (`lmlab.jobs.pretrain.extension`)


def open_corpus(paths: PathsConfig, data: str, tokenizer: TokenizerConfig) -> Corpus:
    """The tokenized corpus a training verb reads; a missing one is an error giving the commands that make it."""
    return Corpus.open(
        paths.tokenized(data, tokenizer),
        how_to_make=f"make it with `dvc repro tokenize` (for the choices in params.yaml) or by hand:\n"
        f"  lmlab download data={data} only=data\n  lmlab split data={data} only=data\n"
        f"  lmlab tokenize data={data} tokenizer={tokenizer.type} tokenizer.vocab_size={tokenizer.vocab_size} "
        "'~task_data'",
    )


@dataclass(frozen=True)
class Extension:
    """How a run continues to another budget when its schedule's early steps do not depend on the budget (wsd:
    warmup, constant, cooldown): `identity` leaves the budget out, and `until` is the last step whose state
    every budget shares (the cooldown's start). A checkpoint at or before both the old and the new run's
    `until` is a state the new run passes through."""

    identity: dict[str, Any]
    until: int


@dataclass
class Start:
    """Where a run starts: the checkpoint it resumes (None: from scratch) and its W&B run id."""

    checkpoint: Path | None
    run_id: str
    record: dict[str, Any]  # run.json's contents for this run
    damaged: list[Path] = field(default_factory=list)  # checkpoints that do not load: `begin` moves them aside
    # the previous run's files go to a sibling folder first: moved (a new run) or copied (a run continued from an
    # earlier checkpoint to a longer budget, whose end they are); None: nothing of a previous run is replaced
    keep_previous: str | None = None


@dataclass
class RunFolder:
    path: Path

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def lock(self) -> Path:
        return self.path / ".lock"

    @property
    def record(self) -> Path:
        return self.path / "run.json"

    def read_record(self) -> dict[str, Any]:
        if not self.record.is_file():
            return {}
        return read_json(
            self.record,
            "it is written when a run starts; start the run over with resume=never (or delete the file)",
            {"wandb_id": str, "fingerprint": str},
            {"identity": dict, "budget_free": str, "budget_free_until": int},
        )

    @contextmanager
    def held(self, is_rank_zero: bool) -> Iterator[None]:
        """One run at a time in a folder: a second start gets an error naming the holder, instead of deleting
        the first's checkpoints mid-run and interleaving its curve. The kernel drops the lock when the holder
        dies, however it dies; DDP's other ranks work inside rank zero's hold."""
        if not is_rank_zero:
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise LmlabError(
                    f"run folder {self.path} is in use by another run ({holder}): wait for it to end, "
                    "or give this run its own folder (hydra.run.dir=...)"
                ) from None
            try:
                if os.path.samestat(os.fstat(fd), os.stat(self.lock)):
                    break  # not a file its last holder removed while we opened it
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
        try:
            yield
        finally:
            self.lock.unlink(missing_ok=True)
            os.close(fd)

    def plan(
        self,
        resume: str,
        identity: dict[str, Any],
        new_id: str,
        given_id: str | None = None,
        extension: Extension | None = None,
        keep_replaced: bool = True,
    ) -> Start:
        """Decide where training starts, changing nothing on disk (the caller may still fail before `begin`).

        `identity` holds what makes checkpoints interchangeable (model, data, tokenizer,
        task, optimizer, seed, the schedule). `resume=auto` continues a run with the same identity,
        or, given an `extension`, a run of another budget from a checkpoint the longer schedule passes through.
        A changed one starts over (as DVC needs when a param changes): `begin` moves the old run to a sibling
        folder first, so that no run is overwritten unseen. `never` starts over, removing the old checkpoints.
        A path resumes from that checkpoint as given. `keep_replaced` False: a replaced run is removed (the DVC
        pipeline's, whose cache keeps it; a sub-run such as fine-tuning's LM adaptation).
        `given_id` (a sweep agent's run id) names the run even on a resume: W&B enforces it in a sweep.
        """
        record = self.read_record()
        damaged: list[Path] = []
        keep: str | None = None
        has_run = any(self.checkpoints.glob("*.ckpt"))
        if resume == "never" or (resume == "auto" and not has_run):
            checkpoint = None
            if has_run:
                log.warning("resume=never: removing the previous run's checkpoints in %s", self.checkpoints)
        elif resume == "auto":
            free = fingerprint(extension.identity) if extension else None
            if record.get("fingerprint") == fingerprint(identity):
                checkpoint, damaged = self.loadable_checkpoint()
            elif (
                free
                and record.get("budget_free") == free
                and (found := self.checkpoint_until(min(extension.until, record.get("budget_free_until", -1))))
            ):
                checkpoint, step = found
                keep = "copy"
                log.info(
                    "continuing %s to a new budget from %s (step %d, before the cooldown of its old budget)",
                    self.path,
                    checkpoint.name,
                    step,
                )
            else:
                changed = changed_keys(record.get("identity", {}), identity) or ["(unknown: no run.json)"]
                log.warning(
                    "config changed since %s was written (%s)%s",
                    self.checkpoints,
                    ", ".join(changed),
                    "" if keep_replaced else ": replacing that run (keep_replaced=false)",
                )
                checkpoint, keep = None, "move" if keep_replaced else None
        else:
            checkpoint = Path(resume)
            if not checkpoint.is_file():
                raise LmlabError(f"resume={resume!r}: no such checkpoint; use auto, never or a .ckpt path")
            if (err := unreadable(checkpoint)) is not None:
                raise LmlabError(f"resume={resume!r}: {checkpoint} does not load ({err}); give another checkpoint")
        recorded = record.get("wandb_id") if checkpoint is not None else None
        if given_id and recorded and given_id != recorded:
            log.warning("resuming %s as W&B run %s (given), not %s (recorded)", checkpoint, given_id, recorded)
        run_id = given_id or recorded or new_id
        record = {"wandb_id": run_id, "fingerprint": fingerprint(identity), "identity": identity}
        if extension:  # and the last step whose state this budget shares with any other
            record["budget_free"] = fingerprint(extension.identity)
            record["budget_free_until"] = extension.until
        return Start(checkpoint, run_id, record, damaged, keep)

    def checkpoint_until(self, step: int) -> tuple[Path, int] | None:
        """The loadable checkpoint of this run with the highest step at or before `step`, and that step."""
        found: list[tuple[int, Path]] = []
        for path in self.checkpoints.glob("*.ckpt"):
            at = checkpoint_step(path)
            if at is not None and at <= step:  # a damaged file is no candidate
                found.append((at, path))
        if not found:
            return None
        at, path = max(found)
        return path, at

    def loadable_checkpoint(self) -> tuple[Path, list[Path]]:
        """`last.ckpt`, or when it does not load (a disk error, a copy cut short) the newest one of the run that
        does, and the ones that do not; none loading is an error saying how to start over (Lightning's loader
        would fail on every retry)."""
        damaged: list[tuple[Path, str]] = []
        for path in sorted(
            self.checkpoints.glob("*.ckpt"), key=lambda p: (p != self.last_checkpoint, -p.stat().st_mtime)
        ):
            err = unreadable(path)
            if err is None:
                if damaged:
                    log.warning("%s does not load (%s): resuming from %s instead", *damaged[0], path)
                return path, [bad for bad, _ in damaged]
            damaged.append((path, err))
        raise LmlabError(
            f"{self.last_checkpoint} does not load ({damaged[0][1]}) and no other checkpoint in {self.checkpoints} "
            f"does: start the run over with resume=never, or remove {self.checkpoints}"
        )

    def begin(self, start: Start, is_rank_zero: bool) -> None:
        """Make `plan`'s decision on disk (rank zero): the previous run kept aside when it is replaced, a new run
        clearing the old checkpoints and curve; the record says which W&B run and config the checkpoints are."""
        if not is_rank_zero:
            return
        if start.keep_previous:
            self.keep_previous(copy=start.keep_previous == "copy")
        if start.keep_previous == "copy" and start.checkpoint is not None:
            # the old budget's later states (kept aside) must not be resumed; a best.ckpt from before the resumed
            # step is shared history, which the continued run keeps (evaluate and finetune read it)
            resumed = checkpoint_step(start.checkpoint)
            for path in self.checkpoints.glob("*.ckpt"):
                step = checkpoint_step(path)
                if not path.samefile(start.checkpoint) and (step is None or step > resumed):
                    path.unlink()
        if start.checkpoint is None:
            shutil.rmtree(self.checkpoints, ignore_errors=True)
            (self.path / "val_curve.csv").unlink(missing_ok=True)
        for path in start.damaged:  # kept for a look, out of the way of the next save and resume
            os.replace(path, path.with_name(path.name + ".damaged"))
        write_json(self.record, start.record)

    def keep_previous(self, copy: bool) -> Path:
        """The previous run's checkpoints, curve, metrics and record in a sibling folder `<name>.<time>`: moved
        when a new run replaces them, copied when the run continues from one of its checkpoints."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        kept = self.path.with_name(f"{self.path.name}.{stamp}")
        n = 1
        while kept.exists():
            n += 1
            kept = self.path.with_name(f"{self.path.name}.{stamp}-{n}")
        kept.mkdir(parents=True)
        for name in ("checkpoints", "val_curve.csv", "metrics.json", "run.json"):
            source = self.path / name
            if not source.exists():
                continue
            if not copy:
                os.replace(source, kept / name)
            elif source.is_dir():
                shutil.copytree(source, kept / name)
            else:
                shutil.copy2(source, kept / name)
        log.warning("the previous run of %s is kept in %s (%s)", self.path, kept, "copied" if copy else "moved")
        return kept


def train_held(cfg: Any, run_dir: Path, train: Callable[[Any, RunFolder], dict[str, Any]]) -> dict[str, Any]:
    """A training verb (pretrain, finetune): its whole config checked before anything on disk changes, then
    `train` in the run folder held by rank zero (DDP's other ranks work inside that hold)."""
    apply_lht_keys(cfg)
    check_values(cfg)
    run = RunFolder(run_dir)
    with run.held(rank_zero_only.rank == 0):
        return train(cfg, run)


def checkpoint_step(path: Path) -> int | None:
    """The optimizer step a checkpoint holds, or None when it does not load."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception:  # a truncated zip, a pickle of objects, an empty file, no global_step
        return None


def unreadable(path: Path) -> str | None:
    """Why a checkpoint does not load with `weights_only=True`, or None when it does."""
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a truncated zip, a pickle of objects, an empty file
        return f"{type(err).__name__}: {err}"
    return None
