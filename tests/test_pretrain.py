"""`pretrain(cfg, run_dir)` in-process: training, the run folder, resume, NaN handling, loggers, checkpoints.

Every run trains on the tiny synthetic corpus of `tests.helpers.tiny_lm` for a few dozen steps (about a
second each). The kill-and-resume test kills a real `lmlab pretrain` process (SIGKILL) mid-run.
"""

from __future__ import annotations

import csv
import json
import math
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import lightning as L
import psutil
import pytest
import torch
from hydra import compose, initialize_config_dir

import lmlab.jobs.pretrain
import lmlab.training.job
from lmlab.cli.schemas import register_configs, typed
from lmlab.core.errors import LmlabError
from lmlab.data.corpus import Corpus
from lmlab.jobs.config import PretrainConfig
from lmlab.jobs.pretrain import pretrain
from lmlab.models import FAMILIES, build_model
from lmlab.training.config import LoggerConfig
from lmlab.training.finite import NonFiniteLoss
from lmlab.training.identity import fingerprint
from lmlab.training.logger import wandb_mode
from tests.helpers.host_reads import counted
from tests.helpers.project import ROOT, cli_env, copy_project, wandb_dirs
from tests.helpers.project import env as project_env
from tests.helpers.tiny_lm import tiny_config, tiny_overrides, write_corpus
from tests.helpers.wandb_offline import wandb_records

VOCAB = 32  # write_corpus's default
METRIC_KEYS = (
    "val/loss",
    "val/ppl",
    "val/bpb",
    "model/params",
    "train/tokens_per_sec",
    "train/wall_seconds",
    "train/tokens",
    "train/flops",
    "train/steps",
)


# ----- helpers -----
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("data")
    write_corpus(data)
    return data


def corpus_meta(data_dir: Path) -> dict[str, Any]:
    return json.loads((data_dir / "tokenized" / "sotu-bpe8000" / "meta.json").read_text())


def window(cfg: PretrainConfig) -> int:
    return build_model(cfg.model, VOCAB).window(cfg.batches.bptt)


def curve(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "val_curve.csv").open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def steps_of(run_dir: Path) -> list[int]:
    return [int(row["step"]) for row in curve(run_dir)]


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def run_id(run_dir: Path) -> str:
    return json.loads((run_dir / "run.json").read_text())["wandb_id"]


def assert_same(a: Any, b: Any, where: str = "checkpoint") -> None:
    """Nested checkpoint content equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_training(a: Path, b: Path) -> None:
    """Two run folders hold the same training: val curve rows, weights, optimizer and TBPTT state."""
    rows_a, rows_b = curve(a), curve(b)
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == [5, 10, 15, 20]
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        for key in ("train/tokens", "train/flops", "val/loss", "val/ppl", "val/bpb", "train/lr"):
            assert row_a[key] == row_b[key], f"step {row_a['step']:.0f} {key}: {row_a[key]} != {row_b[key]}"
    ckpt_a, ckpt_b = load(a / "checkpoints" / "last.ckpt"), load(b / "checkpoints" / "last.ckpt")
    assert ckpt_a["global_step"] == ckpt_b["global_step"] == 20
    assert_same(ckpt_a["state_dict"], ckpt_b["state_dict"], "state_dict")
    assert_same(ckpt_a["optimizer_states"], ckpt_b["optimizer_states"], "optimizer_states")
    assert_same(ckpt_a["lmlab"]["tbptt_state"], ckpt_b["lmlab"]["tbptt_state"], "tbptt_state")
    assert ckpt_a["lmlab"]["tokens_seen"] == ckpt_b["lmlab"]["tokens_seen"]
    metrics_a = json.loads((a / "metrics.json").read_text())
    metrics_b = json.loads((b / "metrics.json").read_text())
    for key in ("val/loss", "train/tokens", "train/flops", "train/steps", "model/params"):
        assert metrics_a[key] == metrics_b[key], key


class Crash(Exception):
    """Stands for a crash in the middle of training."""


class CrashAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step:
            raise Crash(f"crash at step {trainer.global_step}")


def crash_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    make_trainer = lmlab.training.job.make_trainer
    monkeypatch.setattr(
        lmlab.training.job,
        "make_trainer",
        lambda c, r, lg, callbacks, **kw: make_trainer(c, r, lg, [*callbacks, CrashAt(step)], **kw),
    )


# ----- 1. every family trains; metrics.json -----
@pytest.fixture(scope="module")
def trained(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[PretrainConfig, Path, dict]]:
    runs = {}
    for family in FAMILIES:
        cfg = tiny_config(data_dir, family, max_steps=60, val_every=15)
        cfg.optim = replace(cfg.optim, lr=2e-2, min_lr=2e-3)
        run_dir = tmp_path_factory.mktemp(f"trained-{family}")
        runs[family] = (cfg, run_dir, pretrain(cfg, run_dir))
    return runs


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_learns_and_reports_its_metrics(
    trained: dict[str, tuple[PretrainConfig, Path, dict]], data_dir: Path, family: str
) -> None:
    cfg, run_dir, returned = trained[family]
    rows = curve(run_dir)
    assert [int(r["step"]) for r in rows] == [15, 30, 45, 60]
    first, last = rows[0]["val/loss"], rows[-1]["val/loss"]
    assert last < first - 0.1, f"{family} did not learn: val/loss {first:.3f} -> {last:.3f}"
    assert last < math.log(VOCAB) - 0.5, f"{family}: val/loss {last:.3f} not below ln(vocab) {math.log(VOCAB):.3f}"

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == pytest.approx(returned)
    missing = [key for key in METRIC_KEYS if key not in metrics]
    assert not missing, f"metrics.json lacks {missing}"
    assert metrics["val/loss"] == pytest.approx(last, rel=1e-6)
    assert metrics["val/ppl"] == pytest.approx(math.exp(metrics["val/loss"]), rel=1e-5)
    val = corpus_meta(data_dir)["splits"]["val"]
    bpb = metrics["val/loss"] / math.log(2) * val["tokens"] / val["bytes"]
    assert metrics["val/bpb"] == pytest.approx(bpb, rel=1e-5)

    assert metrics["train/steps"] == 60
    tokens = 60 * cfg.batches.batch_size * window(cfg)
    assert metrics["train/tokens"] == tokens
    assert [r["train/tokens"] for r in rows] == [s * cfg.batches.batch_size * window(cfg) for s in (15, 30, 45, 60)]
    # forward + backward = 3 forward passes of the training window per token
    per_token = 3 * build_model(cfg.model, VOCAB).flops_per_token(window(cfg))
    assert metrics["train/flops"] == pytest.approx(tokens * per_token, rel=1e-6)
    assert [r["train/flops"] for r in rows] == pytest.approx([r["train/tokens"] * per_token for r in rows], rel=1e-6)
    assert metrics["model/params"] == sum(p.numel() for p in build_model(cfg.model, VOCAB).parameters())
    assert 0 < metrics["train/wall_seconds"] < 120
    # throughput leaves validation time out, so it is at least tokens over all the seconds
    assert metrics["train/tokens_per_sec"] >= tokens / metrics["train/wall_seconds"] * 0.999
    walls = [r["train/wall_seconds"] for r in rows]
    assert walls == sorted(walls) and walls[-1] <= metrics["train/wall_seconds"] + 1e-6


# ----- 7. checkpoints -----
@pytest.mark.parametrize("family", ["lstm", "transformer"])
def test_checkpoints_load_weights_only_and_describe_their_model(
    trained: dict[str, tuple[PretrainConfig, Path, dict]], family: str
) -> None:
    cfg, run_dir, metrics = trained[family]
    for name in ("last", "best"):
        checkpoint = load(run_dir / "checkpoints" / f"{name}.ckpt")  # weights_only: plain data only
        saved = checkpoint["lmlab"]
        assert saved["model"] == asdict(cfg.model)
        assert saved["vocab_size"] == VOCAB
        model = build_model(saved["model"], saved["vocab_size"])
        weights = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
        model.load_state_dict(weights)  # strict: the config rebuilds exactly the saved model
    last = load(run_dir / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 60
    assert last["lmlab"]["tokens_seen"] == metrics["train/tokens"]
    best_row = min(curve(run_dir), key=lambda row: row["val/loss"])  # the first of equals: strict improvement
    assert metrics["best/val/loss"] == pytest.approx(best_row["val/loss"], rel=1e-6)
    assert load(run_dir / "checkpoints" / "best.ckpt")["global_step"] == best_row["step"]


# ----- 2. kill and resume equals uninterrupted -----
TINY_OVERRIDES = tiny_overrides(max_steps=20)


def composed(conf: Path, overrides: list[str]) -> PretrainConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return typed(compose(config_name="pretrain", overrides=overrides))


def kill_mid_run(args: list[str], project: Path, env: dict[str, str], step: int, log: Path) -> None:
    """Start `lmlab pretrain <args>`, let it train until `step`, then SIGKILL it (no cleanup runs)."""
    mark = project / "stalled"
    env = {**env, "LMLAB_TEST_STALL_AT": str(step), "LMLAB_TEST_STALL_MARK": str(mark)}
    script = ROOT / "tests" / "helpers" / "stalling_lmlab.py"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(script), "pretrain", *args], cwd=project, env=env, stdout=out, stderr=out
        )
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        while not mark.exists():
            assert proc.poll() is None, f"exited {proc.returncode} before step {step}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "never reached the step to be killed at"
            time.sleep(0.05)
        children = psutil.Process(proc.pid).children(recursive=True)  # wandb's service
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _, alive = psutil.wait_procs(children, timeout=15)
        for child in alive:  # orphans of the killed run, which we started
            child.kill()


def test_killed_run_resumes_to_exactly_the_uninterrupted_run(tmp_path: Path) -> None:
    """SIGKILL an LSTM run (dropout on, W&B logging) at step 13; `resume=auto` then ends where a clean run does."""
    project = copy_project(tmp_path / "project")
    write_corpus(project / "data")
    args = ["model=lstm", *TINY_OVERRIDES]

    cfg = composed(project / "conf", [*args, "logger=none", f"paths.data_dir={project / 'data'}"])
    assert cfg.model.dropout > 0 and cfg.model.embed_dropout > 0  # the RNG state has to be restored
    pretrain(cfg, tmp_path / "uninterrupted")

    run_dir = tmp_path / "killed"
    cli_args = [*args, "logger=wandb", f"hydra.run.dir={run_dir}"]
    env = cli_env(tmp_path)
    kill_mid_run(cli_args, project, env, step=13, log=tmp_path / "killed.log")
    assert steps_of(run_dir) == [5, 10]
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 10
    assert not (run_dir / "metrics.json").exists()
    wandb_id = run_id(run_dir)

    resumed = subprocess.run(
        [sys.executable, "-m", "lmlab", "pretrain", *cli_args], cwd=project, env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    assert_same_training(tmp_path / "uninterrupted", run_dir)
    walls = [r["train/wall_seconds"] for r in curve(run_dir)]
    assert walls == sorted(walls), f"wall seconds restarted on resume: {walls}"

    assert run_id(run_dir) == wandb_id, "the resumed run must continue the same W&B run"
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(f"-{wandb_id}") for p in offline), offline
    assert all((p / f"run-{wandb_id}.wandb").is_file() for p in offline)


def test_a_sigtermed_run_saves_its_step_says_so_exits_143_and_resumes_to_the_uninterrupted_run(
    tmp_path: Path,
) -> None:
    """SIGTERM (a scheduler's preemption) at step 13 of an LSTM run: the step in flight finishes, last.ckpt
    holds step 14, the job says so and exits 143 (not 0, as Lightning's own SIGTERM exit does), writes no
    metrics.json; the same command then ends where an uninterrupted run does."""
    project = copy_project(tmp_path / "project")
    write_corpus(project / "data")
    args = ["model=lstm", *TINY_OVERRIDES]
    cfg = composed(project / "conf", [*args, "logger=none", f"paths.data_dir={project / 'data'}"])
    pretrain(cfg, tmp_path / "uninterrupted")

    run_dir, mark = tmp_path / "stopped", tmp_path / "stalled"
    cli_args = [*args, "logger=none", f"hydra.run.dir={run_dir}"]
    env = cli_env(tmp_path)
    stall = {"LMLAB_TEST_STALL_AT": "13", "LMLAB_TEST_STALL_MARK": str(mark), "LMLAB_TEST_STALL_UNTIL_SIGTERM": "1"}
    script = ROOT / "tests" / "helpers" / "stalling_lmlab.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "pretrain", *cli_args],
        cwd=project,
        env={**env, **stall},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not mark.exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "never reached step 13"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"lmlab pretrain: stopped by SIGTERM; step 14 saved in {last}" in err, err[-3000:]
    assert "Traceback" not in err and not (run_dir / "metrics.json").exists()
    assert load(last)["global_step"] == 14 and steps_of(run_dir) == [5, 10]

    resumed = subprocess.run(
        [sys.executable, "-m", "lmlab", "pretrain", *cli_args], cwd=project, env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {last}" in resumed.stdout + resumed.stderr
    assert_same_training(tmp_path / "uninterrupted", run_dir)


PARENT = """
import subprocess, sys, time
child = subprocess.Popen(sys.argv[2:], stdout=open(sys.argv[1], "w"), stderr=subprocess.STDOUT)
print(child.pid, flush=True)
time.sleep(3600)
"""


def test_a_stage_ends_with_the_dvc_that_ran_it(tmp_path: Path) -> None:
    """`dvc repro` killed mid-stage (DVC_STAGE set, as DVC sets it) leaves no job training unseen: within seconds
    of its parent's end the job stops as a SIGTERM stops it, saving its step and saying so."""
    project = copy_project(tmp_path / "project")
    write_corpus(project / "data")
    run_dir, mark, log = tmp_path / "stage", tmp_path / "stalled", tmp_path / "stage.log"
    stall = {"LMLAB_TEST_STALL_AT": "13", "LMLAB_TEST_STALL_MARK": str(mark), "LMLAB_TEST_STALL_UNTIL_SIGTERM": "1"}
    env = {**cli_env(tmp_path), **stall, "DVC_STAGE": "pretrain@lstm-1337"}
    script = ROOT / "tests" / "helpers" / "stalling_lmlab.py"
    job = [
        sys.executable,
        str(script),
        "pretrain",
        "model=lstm",
        *TINY_OVERRIDES,
        "logger=none",
        f"hydra.run.dir={run_dir}",
    ]
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(log), *job], cwd=project, env=env, stdout=subprocess.PIPE, text=True
    )
    child = psutil.Process(int(parent.stdout.readline()))
    try:
        deadline = time.monotonic() + 240
        while not mark.exists():
            assert child.is_running() and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        parent.kill()
        parent.wait()
        child.wait(timeout=60)
    finally:
        if child.is_running():
            child.kill()
    assert "lmlab pretrain: stopped by SIGTERM; step 14 saved in" in log.read_text(), log.read_text()[-3000:]


@pytest.mark.parametrize(
    ("family", "accumulate", "restart"),
    [("transformer", 1, 16), ("transformer", 2, 16), ("lstm", 2, 16), ("lstm", 2, 5)],
)
def test_crashed_run_resumes_to_exactly_the_uninterrupted_run(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, family: str, accumulate: int, restart: int
) -> None:
    """In-process: a crash at step 13 (checkpoint at 10), then resume=auto; accumulate=2 checks the data position,
    and restart=5 a resume at micro-batch 20, where the streams restart (the carried state saved is not used)."""
    cfg = tiny_config(data_dir, family, max_steps=20, val_every=5, accumulate=accumulate)
    cfg.batches = replace(cfg.batches, restart=restart)
    assert cfg.model.dropout > 0
    pretrain(cfg, tmp_path / "uninterrupted")

    with monkeypatch.context() as m:
        crash_at(m, 13)
        with pytest.raises(Crash):
            pretrain(cfg, tmp_path / "crashed")
    assert steps_of(tmp_path / "crashed") == [5, 10]
    pretrain(cfg, tmp_path / "crashed")
    assert_same_training(tmp_path / "uninterrupted", tmp_path / "crashed")


# ----- 3. resume=auto | never | <path> -----
def test_resume_auto_never_and_path(data_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = tiny_config(data_dir, "lstm", max_steps=10, val_every=5)
    cfg.optim.decay_steps = 10  # the schedule no longer depends on max_steps
    pretrain(cfg, run_dir)
    first_id = run_id(run_dir)

    # trainer settings are not part of the identity: more steps continue the same run
    longer = replace(cfg, trainer=replace(cfg.trainer, max_steps=15))
    first_rows = curve(run_dir)
    pretrain(longer, run_dir)
    assert run_id(run_dir) == first_id
    assert curve(run_dir)[:2] == first_rows and steps_of(run_dir) == [5, 10, 15]
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 15

    # a changed model starts over: new id, the old run moved to a sibling folder, same as a run in an empty folder
    wider = replace(cfg, model=replace(cfg.model, width=48))
    old_last = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    pretrain(wider, run_dir)
    wider_id = run_id(run_dir)
    [kept] = [path for path in tmp_path.iterdir() if path.name.startswith("run.")]
    assert (kept / "checkpoints" / "last.ckpt").read_bytes() == old_last
    assert steps_of(kept) == [5, 10, 15] and json.loads((kept / "run.json").read_text())["wandb_id"] == first_id
    assert wider_id != first_id
    assert steps_of(run_dir) == [5, 10]
    last = load(run_dir / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 10 and last["lmlab"]["model"]["width"] == 48
    pretrain(wider, tmp_path / "fresh")
    assert [r["val/loss"] for r in curve(run_dir)] == [r["val/loss"] for r in curve(tmp_path / "fresh")]
    record = json.loads((run_dir / "run.json").read_text())
    corpus = Corpus.open(Path(wider.paths.data_dir) / "tokenized" / "sotu-bpe8000")
    assert record["fingerprint"] == fingerprint(lmlab.jobs.pretrain.identity(wider, corpus))

    # never: starts over with the same config
    pretrain(replace(wider, resume="never"), run_dir)
    assert run_id(run_dir) not in (first_id, wider_id)
    assert steps_of(run_dir) == [5, 10]
    assert [r["val/loss"] for r in curve(run_dir)] == [r["val/loss"] for r in curve(tmp_path / "fresh")]

    # a path: continues that checkpoint, in another folder
    elsewhere = tmp_path / "elsewhere"
    resumed = replace(wider, resume=str(run_dir / "checkpoints" / "last.ckpt"))
    pretrain(replace(resumed, trainer=replace(resumed.trainer, max_steps=15)), elsewhere)
    assert steps_of(elsewhere) == [15]
    assert load(elsewhere / "checkpoints" / "last.ckpt")["global_step"] == 15

    # a missing path is an error that leaves the run folder as it was
    before = (run_dir / "run.json").read_text(), load(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    with pytest.raises(LmlabError, match="resume=.*no such checkpoint"):
        pretrain(replace(wider, resume=str(tmp_path / "nope.ckpt")), run_dir)
    after = (run_dir / "run.json").read_text(), load(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    assert after == before


def test_a_wsd_run_continues_to_a_larger_budget_from_where_its_cooldown_began(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Raising max_steps of a finished wsd run continues it from `stable.ckpt` (its constant phase's end): the
    steps before the old cooldown are kept, the longer run decays at its own end, the old end is kept aside."""
    cfg = tiny_config(data_dir, "gru", max_steps=20, val_every=5)
    cfg.optim.schedule, cfg.optim.cooldown, cfg.optim.warmup_steps = "wsd", 0.25, 2
    run_dir = tmp_path / "run"
    pretrain(cfg, run_dir)
    assert load(run_dir / "checkpoints" / "stable.ckpt")["global_step"] == 15  # 20 - 25% of 20
    short = curve(run_dir)
    first_id = run_id(run_dir)

    longer = replace(cfg, trainer=replace(cfg.trainer, max_steps=40))
    with caplog.at_level("INFO"):
        metrics = pretrain(longer, run_dir)
    assert "from stable.ckpt (step 15" in caplog.text
    assert metrics["train/steps"] == 40 and run_id(run_dir) == first_id
    assert steps_of(run_dir) == [5, 10, 15, 20, 25, 30, 35, 40]
    assert curve(run_dir)[:3] == short[:3]  # the constant phase is shared; step 20 was the old cooldown's end
    assert load(run_dir / "checkpoints" / "stable.ckpt")["global_step"] == 30  # 40 - 25% of 40
    [kept] = [path for path in tmp_path.iterdir() if path.name.startswith("run.")]
    assert load(kept / "checkpoints" / "last.ckpt")["global_step"] == 20 and curve(kept) == short

    # the same as a 40-step run from the start, up to the noise of a resume's data order (none here)
    pretrain(longer, tmp_path / "straight")
    assert [r["val/loss"] for r in curve(run_dir)] == pytest.approx(
        [r["val/loss"] for r in curve(tmp_path / "straight")]
    )

    # a shorter budget than the stable checkpoint allows: no state to continue from, a new run, the old kept
    shorter = replace(cfg, trainer=replace(cfg.trainer, max_steps=10))
    pretrain(shorter, run_dir)
    assert steps_of(run_dir) == [5, 10] and run_id(run_dir) != first_id
    assert len([path for path in tmp_path.iterdir() if path.name.startswith("run.")]) == 2


def test_a_run_trained_by_other_code_is_not_resumed(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DVC reruns a pretrain stage after a code edit: resume=auto must then retrain, not reuse the checkpoint."""
    run_dir = tmp_path / "run"
    cfg = tiny_config(data_dir, "gru", max_steps=10, val_every=5)
    pretrain(cfg, run_dir)
    first_id = run_id(run_dir)
    pretrain(cfg, run_dir)  # same code and config: the finished run is kept
    assert run_id(run_dir) == first_id
    monkeypatch.setattr(lmlab.jobs.pretrain, "code_version", lambda files: "edited")
    pretrain(cfg, run_dir)
    assert run_id(run_dir) != first_id
    assert json.loads((run_dir / "run.json").read_text())["identity"]["code"] == "edited"


@pytest.mark.parametrize(
    ("section", "key", "bad"),
    [("model", "family", "lstmm"), ("optim", "schedule", "cosin"), ("optim", "name", "adamW")],
)
def test_invalid_config_fails_before_touching_the_run_folder(
    data_dir: Path, tmp_path: Path, section: str, key: str, bad: str
) -> None:
    """A typo changes the identity, but must be reported before resume=auto wipes the existing run."""
    run_dir = tmp_path / "run"
    cfg = tiny_config(data_dir, "lstm", max_steps=5, val_every=5)
    pretrain(cfg, run_dir)
    before = sorted(p.name for p in run_dir.rglob("*")), (run_dir / "run.json").read_text()
    broken = replace(cfg, **{section: replace(getattr(cfg, section), **{key: bad})})
    with pytest.raises(LmlabError, match=f"{section}.{key}={bad!r}"):
        pretrain(broken, run_dir)
    after = sorted(p.name for p in run_dir.rglob("*")), (run_dir / "run.json").read_text()
    assert after == before, "the failed start deleted or rewrote the previous run"


# ----- 4. NaN / inf and the last checkpoint -----
def test_non_finite_loss_stops_with_the_step_and_a_good_last_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    """Adam at lr 1e6 without clipping blows the RNN up within a few steps (validation after every step)."""
    cfg = tiny_config(data_dir, "rnn", max_steps=30, val_every=1, gradient_clip_val=None)
    cfg.optim = replace(cfg.optim, lr=1e6, schedule="constant", warmup_steps=0)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLoss) as err:
        pretrain(cfg, run_dir)
    message = str(err.value)
    assert "checkpoints/last.ckpt" in message
    step = re.search(r"at step (\d+)", message)
    assert step and 1 <= int(step[1]) < 30, message

    checkpoint = load(run_dir / "checkpoints" / "last.ckpt")
    bad = [k for k, v in checkpoint["state_dict"].items() if not torch.isfinite(v).all()]
    assert not bad, f"last.ckpt (step {checkpoint['global_step']}) holds non-finite {bad}"
    # the last checkpoint is the last validation that was still finite, not an older one
    finite = [int(r["step"]) for r in curve(run_dir) if math.isfinite(r["val/loss"])]
    assert checkpoint["global_step"] == max(finite), (
        f"last.ckpt is from step {checkpoint['global_step']}, the last finite validation was at step {max(finite)}"
    )
    assert not (run_dir / "metrics.json").exists()


def test_last_checkpoint_follows_every_validation_even_without_improvement(data_dir: Path, tmp_path: Path) -> None:
    """lr 0: val/loss never improves after the first validation; last.ckpt must still move on (resume needs it)."""
    cfg = tiny_config(data_dir, "lstm", max_steps=10, val_every=5)
    cfg.optim = replace(cfg.optim, lr=0.0, min_lr=0.0, schedule="constant", warmup_steps=0)
    run_dir = tmp_path / "run"
    metrics = pretrain(cfg, run_dir)
    rows = curve(run_dir)
    assert steps_of(run_dir) == [5, 10] and rows[0]["val/loss"] == rows[1]["val/loss"]
    last = load(run_dir / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 10, f"last.ckpt stayed at step {last['global_step']}"
    assert last["lmlab"]["tokens_seen"] == metrics["train/tokens"]
    assert load(run_dir / "checkpoints" / "best.ckpt")["global_step"] == 5


def test_rerunning_a_finished_run_keeps_its_metrics(data_dir: Path, tmp_path: Path) -> None:
    """resume=auto on a finished run (e.g. `dvc repro` after a trainer-only change) must not degrade metrics.json."""
    cfg = tiny_config(data_dir, "lstm", max_steps=10, val_every=5)
    first = pretrain(cfg, tmp_path / "run")
    again = pretrain(replace(cfg, trainer=replace(cfg.trainer, log_every=2)), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == pytest.approx(again)
    for key in (
        "val/loss",
        "val/ppl",
        "val/bpb",
        "best/val/loss",
        "train/steps",
        "train/tokens",
        "train/flops",
        "model/params",
    ):
        assert again.get(key) == pytest.approx(first[key]), key
    assert again["train/tokens_per_sec"] > 0 and again["train/wall_seconds"] > 0
    assert steps_of(tmp_path / "run") == [5, 10]


def test_a_last_step_between_validations_is_validated_and_checkpointed(data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(data_dir, "gru", max_steps=12, val_every=5)
    metrics = pretrain(cfg, tmp_path / "run")
    assert steps_of(tmp_path / "run") == [5, 10, 12]
    assert metrics["train/steps"] == 12
    assert metrics["val/loss"] == pytest.approx(curve(tmp_path / "run")[-1]["val/loss"])
    assert load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 12


def test_a_flops_or_tokens_budget_chooses_each_familys_steps(data_dir: Path, tmp_path: Path) -> None:
    """budget.match=flops: each family trains until its counted training FLOPs reach the budget, so the
    costlier family per token takes fewer steps; match=tokens: the same tokens for every family."""
    flops = {}
    for family in ("gru", "transformer"):
        cfg = tiny_config(data_dir, family, max_steps=1000, val_every=1000)
        per_step = cfg.batches.batch_size * window(cfg)
        cfg.budget = replace(cfg.budget, match="flops", flops=2e8)
        metrics = pretrain(cfg, tmp_path / family)
        step_flops = metrics["train/flops"] / metrics["train/steps"]
        assert 2e8 <= metrics["train/flops"] < 2e8 + step_flops, family  # the budget, rounded up to a step
        assert metrics["train/steps"] < 1000 and metrics["train/tokens"] == metrics["train/steps"] * per_step
        flops[family] = step_flops / per_step
    steps = {f: json.loads((tmp_path / f / "metrics.json").read_text())["train/steps"] for f in flops}
    assert (steps["gru"] < steps["transformer"]) == (flops["gru"] > flops["transformer"]), (steps, flops)

    cfg = tiny_config(data_dir, "gru", max_steps=1000, val_every=1000)
    cfg.budget = replace(cfg.budget, match="tokens", tokens=1000)
    assert pretrain(cfg, tmp_path / "tokens")["train/tokens"] == math.ceil(1000 / 32) * 32  # batches of 4 x 8
    before = sorted(p.name for p in (tmp_path / "tokens").rglob("*")), (tmp_path / "tokens/run.json").read_text()
    cfg.budget = replace(cfg.budget, tokens=0)
    with pytest.raises(LmlabError, match=r"budget.match=tokens needs budget.tokens > 0"):
        pretrain(cfg, tmp_path / "tokens")
    assert before == (
        sorted(p.name for p in (tmp_path / "tokens").rglob("*")),
        (tmp_path / "tokens/run.json").read_text(),
    )


# ----- 5. W&B -----
SECRET = "0123456789abcdef-very-secret-key-4567890"


@pytest.fixture
def wandb_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")  # a logged-in user's runs would go online (`wandb_mode`)
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    for var, folder in wandb_dirs(tmp_path).items():
        monkeypatch.setenv(var, folder)


def test_wandb_logs_offline_into_the_run_folder(data_dir: Path, tmp_path: Path, wandb_env: None) -> None:
    cfg = tiny_config(data_dir, "gru", max_steps=10, val_every=5)
    cfg.logger = LoggerConfig(kind="wandb", tags=["smoke"])
    cfg.name, cfg.seed, cfg.tags = "tiny-experiment", 5, ["lht"]
    run_dir = tmp_path / "run"
    metrics = pretrain(cfg, run_dir)
    wandb_id = run_id(run_dir)

    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [f.name for f in files] == [f"run-{wandb_id}.wandb"]
    summary, records = wandb_records(files[0])

    assert summary["run_id"] == wandb_id and summary["exit_code"] == 0
    for key in ("val/loss", "train/loss", "train/tokens_per_sec"):
        assert key in summary["summary"], f"{key} not logged"
    assert summary["summary"]["val/loss"] == pytest.approx(metrics["val/loss"], rel=1e-6)
    assert summary["config"]["model/params"] == metrics["model/params"]
    assert summary["config"]["model"]["family"] == "gru"
    assert summary["config"]["trainer"]["max_steps"] == 10
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    logged = [item["val/loss"] for item in history if "val/loss" in item]
    assert logged == pytest.approx([r["val/loss"] for r in curve(run_dir)], rel=1e-6)

    run = next(r["run"] for r in records if r["type"] == "run")
    assert {"gru", "sotu", "bpe8000", "smoke", "lht"} <= set(run["tags"])
    assert run["display_name"] == "pretrain-gru-s5"  # <job>-<family>[-scratch][-s<seed>]
    assert summary["config"]["batches"]["seed"] == 5  # the top-level seed is the data's
    assert len(summary["config"]["provenance"]["git_commit"]) == 40
    assert run["run_group"] == "tiny-experiment"
    assert run["job_type"] == "pretrain"
    assert run["project"] == "lmlab"

    leaks = [p for p in run_dir.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaks, f"the API key was written to {leaks}"


def test_pretraining_runs_record_their_corpus_but_not_the_labeled_set(tmp_path: Path) -> None:
    """A changed labeled set (its split, its labels) re-tokenizes the corpus folder, but pretraining reads no
    labels: its digest stays, so the finished pretraining runs resume instead of retraining."""
    write_corpus(tmp_path)
    folder = tmp_path / "tokenized" / "sotu-bpe8000"
    before = Corpus.open(folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["task"] = {"name": "reviews", "splits": {"train": {"documents": 3}}}
    (folder / "meta.json").write_text(json.dumps(meta))
    after = Corpus.open(folder)
    assert after.digest(task=False) == before.digest(task=False)
    assert after.digest() != before.digest()
    meta["splits"]["train"]["tokens"] += 0  # the corpus's own counts are in both digests
    meta["splits"]["val"]["bytes"] += 1
    (folder / "meta.json").write_text(json.dumps(meta))
    assert Corpus.open(folder).digest(task=False) != before.digest(task=False)


def test_an_empty_wandb_mode_is_a_clear_error_unless_the_config_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "")
    assert wandb_mode(LoggerConfig(mode="online")) == "online"
    with pytest.raises(LmlabError, match="WANDB_MODE is set but empty"):
        wandb_mode(LoggerConfig())


def test_lightning_hydra_template_keys_callbacks_and_trainer_arguments(data_dir: Path, tmp_path: Path) -> None:
    """LHT habits: `ckpt_path` resumes like resume=<path>, the `callbacks` group adds Lightning callbacks,
    `trainer.extra` passes any other Trainer argument; a spec that builds no callback names its key."""
    cfg = tiny_config(data_dir, "gru", max_steps=10, val_every=5)
    cfg.logger = LoggerConfig(kind="csv")
    cfg.callbacks = {"lr": {"_target_": "lightning.pytorch.callbacks.LearningRateMonitor", "logging_interval": "step"}}
    cfg.trainer = replace(cfg.trainer, extra={"limit_val_batches": 1})
    pretrain(cfg, tmp_path / "run")
    (logged,) = (tmp_path / "run" / "csv").rglob("metrics.csv")
    header = logged.read_text().splitlines()[0].split(",")
    assert "lr-AdamW/pg1" in header and "train/lr" in header  # Lightning's monitor beside lmlab's own

    # one validation batch (limit_val_batches) instead of the whole split: another val loss
    full = tiny_config(data_dir, "gru", max_steps=10, val_every=5)
    pretrain(replace(full, logger=LoggerConfig(kind="none")), tmp_path / "full")
    assert curve(tmp_path / "run")[0]["val/loss"] != curve(tmp_path / "full")[0]["val/loss"]

    longer = replace(full, logger=LoggerConfig(kind="none"), trainer=replace(full.trainer, max_steps=15))
    pretrain(replace(longer, ckpt_path=str(tmp_path / "full" / "checkpoints" / "last.ckpt")), tmp_path / "other")
    assert steps_of(tmp_path / "other") == [15]  # continued at step 10, like resume=<path>

    for spec, said in [
        ({"_target_": "torch.nn.Identity"}, "callbacks.x: torch.nn.Identity is not a lightning.pytorch Callback"),
        ({"_target_": "no.such.Callback"}, "callbacks.x: Error locating target 'no.such.Callback'"),
        ({"logging_interval": "step"}, "callbacks.x: give its class as _target_"),
    ]:
        with pytest.raises(LmlabError, match=re.escape(said)):
            pretrain(replace(full, callbacks={"x": spec}), tmp_path / "refused")
        assert not (tmp_path / "refused" / "checkpoints").exists()


def test_wandb_mode_follows_the_config_then_wandbs_own_settings(tmp_path: Path) -> None:
    """logger.mode, else $WANDB_MODE, else what `wandb offline` / `wandb online` left in W&B's settings, else
    online for a logged-in user (W&B's own default) and offline without an account. Run in a fresh process in
    an empty folder with its own HOME: W&B reads its settings files once per process."""
    script = """
import os, subprocess, sys
from lmlab.data.corpus import Corpus
from lmlab.training.config import LoggerConfig
from lmlab.core.errors import LmlabError
from lmlab.training.logger import wandb_mode

def mode(**kw):
    try:
        return wandb_mode(LoggerConfig(**kw))
    except LmlabError as err:
        return "error: " + str(err)

def wandb(*args):
    subprocess.run([sys.executable, "-m", "wandb", *args], check=True, capture_output=True)

seen = [mode()]                                    # no account: offline
os.environ["WANDB_API_KEY"] = "k" * 40
seen.append(mode())                                # logged in: online, as W&B would
wandb("offline")
seen.append(mode())                                # `wandb offline` is honoured
seen.append(mode(mode="online"))                   # the config beats W&B's settings
wandb("online")
seen.append(mode())                                # `wandb online` undoes it
os.environ["WANDB_MODE"] = "offline"
seen.append(mode())                                # $WANDB_MODE beats the settings files
seen.append(mode(mode="onlne"))
os.environ["WANDB_MODE"] = "sometimes"
seen.append(mode())
print(seen)
"""
    env = {k: v for k, v in project_env().items() if not k.startswith("WANDB_")}
    env |= {"HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "config")}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = eval(result.stdout.strip().splitlines()[-1])  # noqa: S307 - our own script's list of strings
    assert seen[:6] == ["offline", "online", "offline", "online", "online", "offline"]
    assert seen[6].startswith("error: logger.mode='onlne'") and "WANDB_MODE" in seen[7]


def test_invalid_wandb_mode_fails_the_run(data_dir: Path, tmp_path: Path, wandb_env: None) -> None:
    cfg = tiny_config(data_dir, "gru", max_steps=2, val_every=1)
    cfg.logger = LoggerConfig(kind="wandb", mode="onlin")
    with pytest.raises(LmlabError, match="logger.mode"):
        pretrain(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "wandb").exists()


def test_unknown_logger_kind_is_an_error(data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(data_dir, "gru", max_steps=2, val_every=1)
    cfg.logger = LoggerConfig(kind="tensorboard")
    with pytest.raises(LmlabError, match="logger.kind='tensorboard'.*wandb, csv, none"):
        pretrain(cfg, tmp_path / "run")


# ----- 6. csv and none loggers -----
def test_csv_logger_writes_lightnings_metrics_csv(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cfg = tiny_config(data_dir, "rnn", max_steps=10, val_every=5, log_every=5)
    cfg.logger = LoggerConfig(kind="csv")
    run_dir = tmp_path / "run"
    pretrain(cfg, run_dir)
    logged = list((run_dir / "csv").rglob("metrics.csv"))
    assert len(logged) == 1 and run_id(run_dir) in logged[0].parts  # <run>/csv/<W&B-style run id>/...
    rows = csv_rows(run_dir)
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert val == pytest.approx([r["val/loss"] for r in curve(run_dir)], rel=1e-6)
    assert any(r.get("train/loss") for r in rows) and any(r.get("train/tokens_per_sec") for r in rows)
    assert not (run_dir / "wandb").exists()
    assert list(cwd.iterdir()) == [], "the run wrote outside its folder"


def test_csv_log_keeps_the_rows_from_before_a_resume(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config(data_dir, "rnn", max_steps=20, val_every=5, log_every=5)
    cfg.logger = LoggerConfig(kind="csv")
    run_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        crash_at(m, 13)
        with pytest.raises(Crash):
            pretrain(cfg, run_dir)
    pretrain(cfg, run_dir)
    assert steps_of(run_dir) == [5, 10, 15, 20]
    val = sorted(float(r["val/loss"]) for r in csv_rows(run_dir) if r.get("val/loss"))
    assert val == pytest.approx(sorted(r["val/loss"] for r in curve(run_dir)), rel=1e-6), "CSV log lost rows"


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    """Every row of every Lightning metrics.csv of the run (a resume may add a file)."""
    rows = []
    for path in sorted((run_dir / "csv").rglob("metrics.csv")):
        with path.open(newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


def test_no_logger_still_writes_the_curve_and_metrics(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cfg = tiny_config(data_dir, "rnn", max_steps=10, val_every=5)
    assert cfg.logger.kind == "none"
    run_dir = tmp_path / "run"
    pretrain(cfg, run_dir)
    assert steps_of(run_dir) == [5, 10]
    assert (run_dir / "metrics.json").is_file()
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "metrics.json", "run.json", "val_curve.csv"]
    assert not list(run_dir.rglob("metrics.csv")) and not list(run_dir.rglob("*.wandb"))
    assert list(cwd.iterdir()) == [], "the run wrote outside its folder"


def test_metrics_file_gets_a_copy(data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(data_dir, "rnn", max_steps=5, val_every=5)
    cfg.metrics_file = str(tmp_path / "metrics" / "pretrain" / "rnn.json")
    pretrain(cfg, tmp_path / "run")
    copy = json.loads(Path(cfg.metrics_file).read_text())
    assert copy == json.loads((tmp_path / "run" / "metrics.json").read_text())


# ----- 8. gradient accumulation -----
def test_accumulate_consumes_that_many_micro_batches_per_step(data_dir: Path, tmp_path: Path) -> None:
    results = {}
    for accumulate in (1, 2):
        cfg = tiny_config(data_dir, "lstm", max_steps=10, val_every=5, accumulate=accumulate)
        run_dir = tmp_path / f"acc{accumulate}"
        results[accumulate] = pretrain(cfg, run_dir)
        assert steps_of(run_dir) == [5, 10], "validation follows optimizer steps, not micro-batches"
        assert [r["train/tokens"] for r in curve(run_dir)] == [s * accumulate * 4 * 8 for s in (5, 10)]
    assert results[1]["train/steps"] == results[2]["train/steps"] == 10
    assert results[1]["train/tokens"] == 10 * 4 * 8
    assert results[2]["train/tokens"] == 2 * results[1]["train/tokens"]
    assert results[2]["val/loss"] != results[1]["val/loss"]


def test_plateau_schedule_with_accumulation_steps_after_validations(data_dir: Path, tmp_path: Path) -> None:
    """ReduceLROnPlateau must be stepped once per validation, also when micro-batches outnumber steps."""
    cfg = tiny_config(data_dir, "lstm", max_steps=16, val_every=4, accumulate=2)
    cfg.optim = replace(cfg.optim, name="sgd", lr=5.0, schedule="plateau", warmup_steps=0, plateau_patience=0)
    pretrain(cfg, tmp_path / "run")
    rows = curve(tmp_path / "run")
    assert steps_of(tmp_path / "run") == [4, 8, 12, 16]
    # each row shows the lr its steps trained with: cut by plateau_factor after every validation that did not
    # improve on the best (ReduceLROnPlateau, patience 0, relative threshold 1e-4), and at no other time
    best, lr = math.inf, cfg.optim.lr
    for row in rows:
        assert row["train/lr"] == pytest.approx(lr), rows
        if row["val/loss"] < best * (1 - 1e-4):
            best = row["val/loss"]
        else:
            lr *= cfg.optim.plateau_factor
    assert rows[-1]["train/lr"] < cfg.optim.lr, f"lr 5 on SGD should stall at least once: {rows}"


def test_a_cosine_schedule_of_another_length_is_not_resumed(data_dir: Path, tmp_path: Path) -> None:
    """With decay_steps=null the cosine decays over max_steps: a longer run has another schedule from step 0."""
    run_dir = tmp_path / "run"
    cfg = tiny_config(data_dir, "gru", max_steps=10, val_every=5)
    pretrain(cfg, run_dir)
    first_id = run_id(run_dir)
    pretrain(replace(cfg, trainer=replace(cfg.trainer, max_steps=15, log_every=3)), run_dir)
    assert run_id(run_dir) != first_id and steps_of(run_dir) == [5, 10, 15]
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 15


# ----- the hot path -----
@pytest.mark.parametrize("family", ["gru", "transformer", "mamba2"])
def test_a_training_step_reads_nothing_on_the_host(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, family: str
) -> None:
    """No `.item()`, `float()`, `bool()` of a tensor between logging intervals (on a GPU each waits for the
    device): the finite-loss guard keeps its flag on the device, the logged values stay tensors. Here with
    a logger (W&B offline) and validation, as the pipeline runs."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = tiny_config(data_dir, family, max_steps=8, val_every=4, log_every=100)
    cfg.logger = replace(cfg.logger, kind="wandb")
    with counted(monkeypatch) as reads:
        pretrain(cfg, tmp_path / "run")
    assert reads.steps == 7 and not reads.found, dict(reads.found)
