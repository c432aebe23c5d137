"""Nothing finished is lost (docs/reliability.md): a bad override, a second run in the same folder, a kill or a
full disk during a checkpoint save, a damaged checkpoint, or a loss gone NaN never destroy or poison a run that
was already there."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lmlab.core.errors import LmlabError
from lmlab.core.rules import check_values
from lmlab.jobs.config import EvaluateConfig, FinetuneConfig, PretrainConfig
from lmlab.jobs.pretrain import pretrain
from lmlab.tasks.config import FinetuneTaskConfig
from lmlab.training.config import TrainerConfig
from lmlab.training.finite import NonFiniteLoss
from lmlab.training.runs import RunFolder, Start
from lmlab.training.trainer import AtomicCheckpointIO
from tests.helpers.project import copy_project, env
from tests.helpers.tiny_lm import tiny_config, tiny_overrides, write_corpus


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("data")
    write_corpus(data)
    return data


@pytest.fixture(scope="module")
def finished(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[PretrainConfig, Path]:
    """A finished tiny run (5 steps, checkpoints at 5) that every test copies before it tries to break it."""
    cfg = tiny_config(data_dir, "gru", max_steps=5, val_every=5)
    cfg.optim = replace(cfg.optim, decay_steps=10)  # the schedule of a run that may go on to 10 steps
    run = tmp_path_factory.mktemp("finished") / "run"
    pretrain(cfg, run)
    return cfg, run


def copied(finished: tuple[PretrainConfig, Path], tmp_path: Path) -> Path:
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(finished[1]), str(run)], check=True)
    return run


def snapshot(folder: Path) -> dict[str, str]:
    """Every file of the folder and its sha256: what a failed start must leave as it was."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ----- 1. a bad override is refused before the run folder changes -----
BAD_VALUES = [
    ("batches", "bptt", 0, ">= 1"),
    ("batches", "restart", -1, ">= 0"),
    ("batches", "batch_size", 0, ">= 1"),
    ("batches", "val_batch_size", 0, ">= 1"),
    ("trainer", "accumulate", 0, ">= 1"),
    ("trainer", "devices", 0, "a count >= 1"),
    ("trainer", "precision", "bf17", "one of 32-true"),
    ("trainer", "accelerator", "gpu", "trainer settings"),  # Lightning's refusal on a machine without one
    ("model", "width", 0, ">= 1"),
    ("model", "embed_dropout", 1.5, "in [0, 1)"),
    ("optim", "lr", -1.0, ">= 0"),
    ("logger", "mode", "onlin", "one of online"),
    ("trainer", "extra", {"max_epochs": 3}, "lmlab sets it; use trainer.max_steps"),
    ("trainer", "extra", {"profilr": "simple"}, "not a lightning.Trainer argument; it takes"),
    ("trainer", "extra", {"enable_model_summary": True}, "lmlab sets it; use +callbacks.summary"),
]


@pytest.mark.parametrize(("section", "key", "bad", "accepted"), BAD_VALUES)
def test_a_bad_value_is_refused_before_the_run_folder_changes(
    finished: tuple[PretrainConfig, Path], tmp_path: Path, section: str, key: str, bad: object, accepted: str
) -> None:
    if section == "trainer" and key == "accelerator" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: accelerator=gpu is valid here")
    cfg, run = finished[0], copied(finished, tmp_path)
    before = snapshot(run)
    broken = replace(cfg, **{section: replace(getattr(cfg, section), **{key: bad})})
    with pytest.raises(LmlabError, match=re.escape(accepted)) as err:
        pretrain(broken, run)
    assert f"{key}=" in str(err.value) or key in ("accelerator", "extra"), err.value
    assert snapshot(run) == before, "the refused start changed the finished run"


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        (FinetuneConfig(finetune=FinetuneTaskConfig(batch_size=0)), "finetune.batch_size=0"),
        (FinetuneConfig(finetune=FinetuneTaskConfig(head_dropout=1.0)), "finetune.head_dropout=1.0"),
        (FinetuneConfig(finetune=FinetuneTaskConfig(val_batch_size=0)), "finetune.val_batch_size=0"),
        (FinetuneConfig(trainer=TrainerConfig(devices=[])), "trainer.devices=[]"),
        (EvaluateConfig(batch_size=0), "batch_size=0"),
        (EvaluateConfig(window=-3), "window=-3"),
    ],
)
def test_every_verb_checks_the_values_its_keys_accept(cfg: object, key: str) -> None:
    with pytest.raises(LmlabError, match=re.escape(key) + ": must be"):
        check_values(cfg)


def test_the_defaults_and_what_lightning_takes_for_devices_pass() -> None:
    for devices in (1, 2, -1, "auto", "0,1", [0, 1], "3"):
        check_values(FinetuneConfig(trainer=TrainerConfig(devices=devices)))
    check_values(PretrainConfig())


def test_the_cli_names_the_key_and_leaves_the_checkpoints(tmp_path: Path) -> None:
    """The issue's reproduction: `lmlab pretrain ... batches.bptt=0` on a finished run folder."""
    project = copy_project(tmp_path)
    write_corpus(project / "data")
    run = project / "data" / "runs" / "pretrain" / "gru"
    args = [sys.executable, "-m", "lmlab", "pretrain", "model=gru", *tiny_overrides(5), "logger=none"]
    args.append(f"hydra.run.dir={run}")
    subprocess.run(args, cwd=project, env=env(), check=True, capture_output=True)
    before = snapshot(run / "checkpoints")
    done = subprocess.run([*args, "batches.bptt=0"], cwd=project, env=env(), capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "batches.bptt=0: must be >= 1" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert snapshot(run / "checkpoints") == before


# ----- 3. one run per folder -----
HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lmlab.training.runs import RunFolder
    with RunFolder(Path(sys.argv[1])).held(True):
        print("holding", flush=True)
        time.sleep(600)
    """
)


def test_a_second_run_in_a_held_folder_is_refused_naming_the_holder(
    finished: tuple[PretrainConfig, Path], tmp_path: Path
) -> None:
    cfg, run = finished[0], copied(finished, tmp_path)
    before = snapshot(run)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True, env=env())
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        other = replace(cfg, optim=replace(cfg.optim, lr=cfg.optim.lr / 2))  # another config: would start over
        with pytest.raises(LmlabError, match=f"{run} is in use by another run \\(process {holder.pid} on"):
            pretrain(other, run)
        assert {k: v for k, v in snapshot(run).items() if k != ".lock"} == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel dropped the dead holder's lock: its leftover file does not block the next run
    assert (run / ".lock").is_file()
    pretrain(cfg, run)
    assert not (run / ".lock").exists(), "a run leaves no lock behind"


def test_the_lock_is_one_per_process_and_released_on_error(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    with pytest.raises(RuntimeError), folder.held(True):
        raise RuntimeError("the run failed")
    with folder.held(True), pytest.raises(LmlabError, match="in use"), folder.held(True):
        pass  # a second hold, even from the same process, is refused
    with folder.held(False), folder.held(False):
        pass  # DDP's other ranks work inside rank zero's hold


# ----- 2. checkpoint saves are atomic on any filesystem -----
SAVER = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from lmlab.training.trainer import AtomicCheckpointIO
    io, path = AtomicCheckpointIO(), Path(sys.argv[1])
    for i in range(10_000):
        io.save_checkpoint({"step": i, "weights": torch.full((16_000_000,), float(i))}, path)
        print(i, flush=True)
    """
)


def other_filesystem(a: Path, b: Path) -> bool:
    return a.stat().st_dev != b.stat().st_dev


def test_a_kill_during_checkpoint_saves_leaves_a_whole_checkpoint(tmp_path: Path) -> None:
    """The issue's setting: $TMPDIR on another filesystem than the run folder, where Lightning's own writer
    copies; kills at random moments of a save loop must always leave one that loads. The checkpoints are
    64 MB, so that a copy takes long enough to be cut: Lightning's writer fails this every time."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or not other_filesystem(shm, tmp_path):
        pytest.skip("needs /dev/shm on another filesystem than the test's folder")
    path = tmp_path / "checkpoints" / "last.ckpt"
    rng = random.Random(0)
    for _ in range(4):
        saver = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(path)],
            stdout=subprocess.PIPE,
            text=True,
            env={**env(), "TMPDIR": str(shm)},
        )
        assert saver.stdout is not None
        saver.stdout.readline()  # one save done: the next ones replace it
        time.sleep(rng.uniform(0.0, 0.3))
        saver.send_signal(signal.SIGKILL)
        saver.wait()
        saved = torch.load(path, weights_only=True)
        assert saved["weights"].eq(saved["step"]).all()
    leftovers = [p.name for p in path.parent.iterdir() if p.name != "last.ckpt"]
    assert len(leftovers) <= 1 and all(p.endswith(".tmp") for p in leftovers), leftovers


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201 - a mounted folder
    """A 3 MB tmpfs, where this test may mount one (root on Linux); skipped elsewhere."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_keeps_the_previous_checkpoint_and_names_the_file(small_disk: Path) -> None:
    path = small_disk / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "weights": torch.ones(400_000)}, path)  # 1.6 MB of 3
    with pytest.raises(LmlabError, match=f"no space left on the device while writing {re.escape(str(path))}"):
        io.save_checkpoint({"step": 2, "weights": torch.ones(400_000)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"], "the cut-short file was left behind"


# ----- 4. a damaged last checkpoint -----
def test_a_damaged_last_checkpoint_resumes_from_the_newest_that_loads(
    finished: tuple[PretrainConfig, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, run = finished[0], copied(finished, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    os.truncate(last, 20_000)
    longer = replace(cfg, trainer=replace(cfg.trainer, max_steps=10))
    with caplog.at_level(logging.WARNING, logger="lmlab.training.runs"):
        metrics = pretrain(longer, run)
    assert metrics["train/steps"] == 10
    assert f"{last} does not load" in caplog.text and "resuming from" in caplog.text and "best.ckpt" in caplog.text
    assert torch.load(last, weights_only=True)["global_step"] == 10
    assert (run / "checkpoints" / "last.ckpt.damaged").stat().st_size == 20_000, "the damaged file is kept aside"


def test_no_loadable_checkpoint_is_an_error_saying_how_to_start_over(
    finished: tuple[PretrainConfig, Path], tmp_path: Path
) -> None:
    cfg, run = finished[0], copied(finished, tmp_path)
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        os.truncate(ckpt, 20_000)
    before = snapshot(run)
    with pytest.raises(LmlabError, match="last.ckpt does not load .* start the run over with resume=never"):
        pretrain(cfg, run)
    assert snapshot(run) == before
    assert pretrain(replace(cfg, resume="never"), run)["train/steps"] == 5


# ----- 5. a non-finite loss before any checkpoint -----
def test_a_loss_gone_nan_before_the_first_checkpoint_says_there_is_none(data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(data_dir, "rnn", max_steps=30, val_every=30, gradient_clip_val=None)
    cfg.optim = replace(cfg.optim, lr=1e6, schedule="constant", warmup_steps=0)
    with pytest.raises(NonFiniteLoss, match="No checkpoint was written before it") as err:
        pretrain(cfg, tmp_path / "run")
    assert "last.ckpt" not in str(err.value)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_continuing_to_a_longer_budget_removes_only_the_later_states(tmp_path: Path) -> None:
    """A wsd continuation from stable.ckpt (step 15) drops last.ckpt (step 20, the old cooldown's end, kept
    aside) but keeps a best.ckpt from before the resumed step: evaluate and finetune read it."""
    run = RunFolder(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    for name, step in (("stable", 15), ("best", 10), ("last", 20)):
        torch.save({"global_step": step}, run.checkpoints / f"{name}.ckpt")
    start = Start(run.checkpoints / "stable.ckpt", "abc", {"wandb_id": "abc", "fingerprint": "f"}, [], "copy")
    run.begin(start, is_rank_zero=True)
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["best.ckpt", "stable.ckpt"]
    (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.")]
    assert sorted(p.name for p in (kept / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt", "stable.ckpt"]
