"""Sweeps through Hydra: `-m` multiruns, DDP jobs inside them, a sweep trial on DDP, and the Optuna search.

Every job must get its own folder and exactly one W&B run, and every rank of a DDP job must train
with that job's parameters. Lightning starts rank 1 by re-running the command line, so the runs that
use `trainer=ddp_cpu` go through `tests/helpers/rank_probe.py` (the plain CLI plus a callback that
makes each rank write down its overrides, learning rate and weights). The four commands run at once,
each in its own copy of the project with the tiny corpus of `tests.helpers.tiny_lm`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lmlab.cli import rank_overrides
from tests.helpers.project import ROOT, cli_env, copy_project, finish, start
from tests.helpers.tiny_lm import tiny_overrides, write_corpus
from tests.helpers.wandb_offline import wandb_summary

TINY = [*tiny_overrides(max_steps=4, val_every=2), "logger=wandb"]
PROBE = ROOT / "tests" / "helpers" / "rank_probe.py"
LRS = (0.002, 0.02)
DDP = ["model=gru", "trainer=ddp_cpu", *TINY]
COMMANDS = {  # python <args>
    "families": ["-m", "lmlab", "pretrain", "-m", "model=gru,lstm", *TINY],
    "ddp_multirun": [str(PROBE), "pretrain", "-m", f"optim.lr={LRS[0]},{LRS[1]}", *DDP],
    "ddp_trial": [str(PROBE), "pretrain", "optim.lr=0.02", *DDP, "hydra.run.dir=trial"],
    "optuna": [str(PROBE), "pretrain", "hparams_search=pretrain_optuna", "hydra.sweeper.n_trials=2", *DDP],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    """Start every command at once (each pays for importing torch), then collect them: name -> (project, result)."""
    tmp = tmp_path_factory.mktemp("multirun")
    run_env = cli_env(tmp)
    procs = {}
    for name, args in COMMANDS.items():
        project = copy_project(tmp / name)
        write_corpus(project / "data")
        procs[name] = (project, start(args, project, run_env))
    results = {}
    try:
        for name, (project, proc) in procs.items():
            results[name] = (project, finish(proc))
    finally:
        for _, proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def finished(runs: dict[str, tuple[Path, subprocess.CompletedProcess[str]]], name: str) -> Path:
    project, result = runs[name]
    assert result.returncode == 0, result.stdout[-4000:]
    return project


def only_folder(parent: Path) -> Path:
    """The one folder in `parent`: a sweep made one sweep folder, whatever its ranks did."""
    folders = list(parent.iterdir())
    assert len(folders) == 1, f"one sweep folder expected in {parent}, got {folders}"
    return folders[0]


def wandb_run(job: Path) -> dict[str, Any]:
    """The job's single offline W&B run, read back by W&B's own reader (`wandb leet inspect`)."""
    files = list(job.rglob("run-*.wandb"))
    assert len(files) == 1, f"one W&B run expected in {job}, got {files}"
    summary = wandb_summary(files[0])
    assert summary["exit_code"] == 0
    assert summary["run_id"] == json.loads((job / "run.json").read_text())["wandb_id"]
    return summary


def job_overrides(job: Path) -> list[str]:
    return yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())


def ranks(job: Path) -> list[dict[str, Any]]:
    """What each rank of a DDP job trained with, as `rank_probe.py` recorded it; checks they agree."""
    records = [json.loads((job / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in records] == [2, 2]
    assert records[1]["mode"] == "RUN", "rank 1 must run this one job, not a sweep"
    assert records[0]["overrides"] == records[1]["overrides"], "rank 1 was started with other overrides"
    assert records[0]["base_lr"] == records[1]["base_lr"]
    assert records[0]["steps"] == records[1]["steps"], "the ranks' learning rates or weights differ"
    assert len(records[0]["steps"]) == 4
    return records


def test_multirun_gives_each_job_its_folder_and_its_own_wandb_run(runs: dict) -> None:
    project = finished(runs, "families")
    sweep = only_folder(project / "outputs" / "pretrain" / "multirun")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0-gru", "1-lstm"]
    summaries = [wandb_run(job) for job in jobs]
    assert len({s["run_id"] for s in summaries}) == 2, "the jobs share a W&B run"
    assert [s["config"]["model"]["family"] for s in summaries] == ["gru", "lstm"]
    assert [json.loads((job / "metrics.json").read_text())["train/steps"] for job in jobs] == [4, 4]
    assert [p.name for p in (project / "outputs" / "pretrain").iterdir()] == ["multirun"]


def test_ddp_jobs_of_a_multirun_train_every_rank_with_the_jobs_parameters(runs: dict) -> None:
    project = finished(runs, "ddp_multirun")
    output = runs["ddp_multirun"][1].stdout
    assert output.count("Launching 2 jobs") == 1, "a rank re-ran the whole sweep"
    assert [p.name for p in (project / "outputs" / "pretrain").iterdir()] == ["multirun"], "a rank left the sweep"
    sweep = only_folder(project / "outputs" / "pretrain" / "multirun")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0-gru", "1-gru"]
    ids = set()
    for job, lr in zip(jobs, LRS, strict=True):
        assert f"optim.lr={lr}" in job_overrides(job)
        assert len(list(job.rglob(".hydra"))) == 1, "rank 1 wrote a config copy of its own"
        summary = wandb_run(job)
        assert summary["config"]["optim"]["lr"] == lr
        ids.add(summary["run_id"])
        zero, one = ranks(job)
        assert zero["base_lr"] == lr
        assert zero["mode"] == "MULTIRUN"
        assert one["overrides"] == job_overrides(job)
        assert json.loads((job / "metrics.json").read_text())["train/tokens"] == 4 * 2 * 4 * 8  # both ranks' streams
    assert len(ids) == 2
    assert len(list(project.rglob("run-*.wandb"))) == 2, "one W&B run per job, none from rank 1"


def test_a_sweep_trial_on_ddp_is_one_wandb_run_with_its_parameters_on_both_ranks(runs: dict) -> None:
    """A W&B agent (or `lmlab sweep`) runs a trial as `lmlab pretrain <overrides>`: the plain DDP path."""
    project = finished(runs, "ddp_trial")
    trial = project / "trial"
    assert not (project / "outputs").exists()
    zero, one = ranks(trial)
    assert zero["base_lr"] == 0.02 and zero["mode"] == "RUN"
    assert wandb_run(trial)["config"]["optim"]["lr"] == 0.02
    assert len(list(project.rglob("run-*.wandb"))) == 1


def test_optuna_search_runs_its_trials_as_jobs_and_minimises_the_returned_val_bpb(runs: dict) -> None:
    project = finished(runs, "optuna")
    sweep = only_folder(project / "outputs" / "pretrain" / "optuna" / "gru")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    searched = yaml.safe_load((ROOT / "conf" / "hparams_search" / "pretrain_optuna.yaml").read_text())
    assert set(searched["hydra"]["sweeper"]["params"]) == {
        "optim.lr",
        "optim.weight_decay",
        "optim.warmup_steps",
        "model.embed_dropout",
        "model.output_dropout",
    }
    bpb, lrs = [], []
    for job in jobs:
        trial = dict(arg.split("=", 1) for arg in job_overrides(job))
        lr = float(trial["optim.lr"])
        assert 0.001 <= lr <= 0.03 and 0.0 <= float(trial["optim.weight_decay"]) <= 0.2
        summary = wandb_run(job)
        assert summary["config"]["optim"]["lr"] == pytest.approx(lr)
        assert summary["config"]["name"] == "optuna_gru"
        zero, one = ranks(job)
        assert zero["base_lr"] == pytest.approx(lr)
        bpb.append(json.loads((job / "metrics.json").read_text())["val/bpb"])
        lrs.append(lr)
    assert lrs[0] != lrs[1], "both trials got the same parameters"
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(min(bpb))
    assert len(list(project.rglob("run-*.wandb"))) == 2


def test_torchrun_ranks_share_the_sweep_folder_too() -> None:
    """Under torchrun or srun every rank runs the `-m` sweep itself: their job folders must be the same ones."""
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "job7"}
    assert rank_overrides("pretrain", ["-m", "model=gru,lstm"], env) == [
        "hydra.run.dir=outputs/pretrain/job7",
        "hydra.sweep.dir=outputs/pretrain/multirun/job7",
        "hydra.output_subdir=null",
        "hydra.job.name=pretrain_rank1",
    ]
    assert rank_overrides("pretrain", ["-m", "hydra.sweep.dir=mine"], {**env, "RANK": "0"}) == [
        "hydra.run.dir=outputs/pretrain/job7"
    ]
    assert rank_overrides("pretrain", ["-m", "model=gru,lstm"], {}) == []
