"""Multiruns through Hydra's submitit launcher (conf/hydra/launcher/local.yaml), with submitit's real local executor.

`hydra/launcher=slurm` is the same launcher with submitit's SLURM executor; its jobs run the same pickled Hydra job
function, so what is tested here is what a SLURM job runs, less sbatch and srun. Two multiruns start at once, each in
its own copy of the project with the tiny corpus of `tests.helpers.tiny_lm`: two families trained to the end, and one
family whose job is sent SIGTERM mid-run (as SLURM does on preemption or at its time limit) and then continued by the
same multirun.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.project import ROOT, cli_env, copy_project, env, finish, start
from tests.helpers.tiny_lm import tiny_overrides, write_corpus
from tests.helpers.wandb_offline import wandb_summary

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the cluster extra: pip install -e '.[cluster]'")

STEPS = 40
MULTIRUN = ["-m", "lmlab", "pretrain", "-m", "hydra/launcher=local", *tiny_overrides(STEPS, val_every=10)]
SWEEP = "sweep"  # hydra.sweep.dir: the same folder each time, so that running the multirun again finds its runs
COMMANDS = {  # python <args>
    "families": [*MULTIRUN, "model=gru,transformer", "logger=wandb", f"hydra.sweep.dir={SWEEP}"],
    "preempted": [*MULTIRUN, "model=gru", "logger=csv", f"hydra.sweep.dir={SWEEP}"],
}
# metrics.json's figures that do not depend on the clock
FIGURES = ("train/steps", "train/tokens", "train/flops", "val/loss", "val/bpb", "val/ppl", "best/val/loss")


def submitit_jobs(sweep: Path) -> list[Path]:
    """The sweep's submitit job folders (`.submitit/<job id>`; the local executor's job id is its process id)."""
    folder = sweep / ".submitit"
    return sorted(p for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def ended(pid: int) -> bool:
    """The process is gone or a zombie (its parent, the launcher, has not collected it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_for(condition: Any, proc: subprocess.Popen[str], what: str, timeout: float = 120) -> None:
    start = time.monotonic()
    while not condition():
        assert proc.poll() is None, f"the multirun ended before {what}: {proc.communicate()[0][-4000:]}"
        assert time.monotonic() - start < timeout, f"no {what} after {timeout} s"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Start both multiruns; SIGTERM the preempted one's job once it has saved its first checkpoint; run that
    multirun again as soon as the job has ended (while the other multirun still trains) and collect them all."""
    tmp = tmp_path_factory.mktemp("cluster")
    run_env = cli_env(tmp)
    projects = {name: copy_project(tmp / name) for name in COMMANDS}
    for project in projects.values():
        write_corpus(project / "data")
    procs = {name: start(args, projects[name], run_env) for name, args in COMMANDS.items()}
    try:
        sweep, stopped = projects["preempted"] / SWEEP, procs["preempted"]
        wait_for(lambda: (sweep / "0-gru" / "checkpoints" / "last.ckpt").exists(), stopped, "first checkpoint")
        (job,) = submitit_jobs(sweep)
        os.kill(int(job.name), signal.SIGTERM)  # submitit's job process passes it on to the job's task
        wait_for(lambda: ended(int(job.name)), stopped, "end of the stopped job")
        job_stderr = (job / f"{job.name}_0_log.err").read_text()
        procs["again"] = start(COMMANDS["preempted"], projects["preempted"], run_env)
        results = {name: finish(proc) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {"projects": projects, "results": results, "job_stderr": job_stderr}


def succeeded(runs: dict[str, Any], name: str) -> subprocess.CompletedProcess[str]:
    result = runs["results"][name]
    assert result.returncode == 0, result.stdout[-4000:]
    return result


def figures(job: Path) -> dict[str, float]:
    metrics = json.loads((job / "metrics.json").read_text())
    return {key: metrics[key] for key in FIGURES}


def test_local_launcher_runs_each_job_in_its_own_process_into_the_folders_of_a_plain_multirun(runs: dict) -> None:
    succeeded(runs, "families")
    sweep = runs["projects"]["families"] / SWEEP
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0-gru", "1-transformer"]  # hydra.sweep.subdir, as in a plain multirun
    submitted = submitit_jobs(sweep)
    assert len(submitted) == 2, "one submitit job per point"
    summaries = []
    for job, family in zip(jobs, ("gru", "transformer"), strict=True):
        assert json.loads((job / "metrics.json").read_text())["train/steps"] == STEPS
        assert f"model={family}" in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert f"pretrained {family}: {STEPS} steps" in (job / "pretrain.log").read_text()  # the job's log
        # hydra.job.id is submitit's job id (the SLURM job id under hydra/launcher=slurm)
        job_id = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"]
        assert job_id in {p.name for p in submitted}
        files = list(job.rglob("run-*.wandb"))
        assert len(files) == 1, f"one W&B run expected in {job}, got {files}"
        summary = wandb_summary(files[0])
        assert summary["exit_code"] == 0
        assert summary["run_id"] == json.loads((job / "run.json").read_text())["wandb_id"]
        assert summary["config"]["model"]["family"] == family
        assert f"job:{job_id}" in summary["tags"] and f"job:{job_id}" in summary["config"]["tags"], "no job id"
        summaries.append(summary)
    assert summaries[0]["run_id"] != summaries[1]["run_id"], "the jobs share a W&B run"
    assert not (runs["projects"]["families"] / "outputs").exists(), "a job wrote outside hydra.sweep.dir"


def test_a_job_stopped_by_sigterm_fails_the_multirun_and_the_same_multirun_resumes_it_to_the_same_figures(
    runs: dict,
) -> None:
    stopped = runs["results"]["preempted"]
    assert stopped.returncode != 0, "a stopped job passed for a finished one"
    assert "has not produced any output" in stopped.stdout  # submitit: the job ended without a result
    saved = re.search(r"stopped by SIGTERM; step (\d+) saved in \S+last\.ckpt", runs["job_stderr"])
    assert saved, runs["job_stderr"][-4000:]
    assert 10 <= int(saved.group(1)) < STEPS, "the job was not stopped mid-run"
    succeeded(runs, "again")
    job = runs["projects"]["preempted"] / SWEEP / "0-gru"
    log = (job / "pretrain.log").read_text()
    assert "resuming from" in log and f"{job}/checkpoints/last.ckpt" in log
    assert figures(job) == figures(runs["projects"]["families"] / SWEEP / "0-gru")


def test_slurm_preset_asks_for_one_task_per_gpu_of_the_trainer_and_a_signal_before_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hydra/launcher=slurm` as Hydra instantiates it (its `${trainer.*}` resolved in the job's config), and the
    sbatch script submitit's SLURM executor writes from it. Not submitted: there is no SLURM here. submitit looks
    `srun` up on PATH before it makes a SLURM executor; this one is only found, never run."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf
    from submitit import AutoExecutor

    from lmlab.cli.schemas import register_configs

    register_configs("pretrain")
    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    overrides += ["hydra.launcher.partition=gpu", "hydra.launcher.account=lm", f"hydra.sweep.dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=overrides, return_hydra_config=True)
    params = instantiate(cfg.hydra.launcher).params  # what SlurmLauncher.launch passes to submitit
    assert (params["nodes"], params["gpus_per_node"], params["tasks_per_node"]) == (2, 4, 4)
    assert params["submitit_folder"] == f"{tmp_path}/.submitit/%j"
    assert params["max_num_timeout"] > 0, "a job that reaches its time limit would not be requeued"

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    executor = AutoExecutor(folder=params["submitit_folder"], cluster="slurm", slurm_max_num_timeout=3)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{
            key if key in base else f"slurm_{key}": value
            for key, value in params.items()
            if key not in ("submitit_folder", "max_num_timeout")
        }
    )
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit folder", "uid")
    for line in ("--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=4", "--partition=gpu", "--account=lm"):
        assert f"#SBATCH {line}\n" in script
    assert f"#SBATCH --signal=USR2@{params['signal_delay_s']}\n" in script
    assert f"#SBATCH --time={params['timeout_min']}\n" in script
    assert "\nsrun " in script  # one task per GPU, started by srun: Lightning's SLURM environment reads the ranks


def test_ddp_jobs_of_a_local_launcher_multirun_run_their_ranks_as_lmlab(tmp_path: Path) -> None:
    """Two `trainer=ddp_cpu` jobs at once under hydra/launcher=local: Lightning starts each job's rank 1 from the
    job process, whose main module is submitit's; rank 1 must run lmlab with the job's overrides, in its folder."""
    project = copy_project(tmp_path / "project")
    write_corpus(project / "data")
    steps = 6
    args = ["-m", "lmlab", "pretrain", "-m", "hydra/launcher=local", *tiny_overrides(steps, val_every=3)]
    args += ["model=gru,lstm", "trainer=ddp_cpu", "logger=csv", f"hydra.sweep.dir={SWEEP}"]
    result = subprocess.run([sys.executable, *args], cwd=project, env=env(), capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    sweep = project / SWEEP
    assert len(submitit_jobs(sweep)) == 2
    for job, family in ((sweep / "0-gru", "gru"), (sweep / "1-lstm", "lstm")):
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        per_rank = config["batches"]["batch_size"] * config["batches"]["bptt"]
        metrics = json.loads((job / "metrics.json").read_text())
        assert (metrics["train/steps"], metrics["train/tokens"]) == (steps, steps * per_rank * 2), "not two ranks"
        assert f"pretraining {family} " in (job / "pretrain.log").read_text()
        assert "cpu x2" in (job / "pretrain.log").read_text()
        assert (job / "train_ddp_process_1.log").is_file(), "rank 1 did not run in the job's folder"
