"""`lmlab sweep` and the shipped sweep files: offline sweeps with W&B's engine, resume, errors, the agent contract.

Trials are real `lmlab pretrain` processes on the tiny synthetic corpus of `tests.helpers.tiny_lm`
(each about ten seconds, most of it imports), in a throwaway copy of the project. The W&B runs they
make are read back with W&B's own reader (`wandb leet inspect`). Nothing here needs a W&B server:
the online agent is stood in for by W&B's own command builders with the environment the agent sets.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from rich.console import Console

from lmlab.cli.schemas import register_configs, typed
from lmlab.cli.sweep import main
from lmlab.core import metrics as M
from lmlab.jobs.config import PretrainConfig
from lmlab.models import FAMILIES, build_model
from lmlab.tools.sweep import Sweep, Trial, check, load_config, overrides, print_ranking, ranking, to_stop
from lmlab.training.config import LoggerConfig
from lmlab.training.logger import wandb_mode
from lmlab.training.runs import RunFolder
from tests.helpers.project import ROOT, cli_env, copy_project
from tests.helpers.tiny_lm import tiny_overrides, write_corpus
from tests.helpers.wandb_offline import wandb_summary

SHIPPED = sorted((ROOT / "sweeps").glob("*.yaml"))


# ----- helpers -----
@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = copy_project(tmp_path_factory.mktemp("project"))
    shutil.copytree(ROOT / "sweeps", project / "sweeps")
    write_corpus(project / "data")
    return project


def sweep_cli(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmlab", "sweep", *args], cwd=project, env=env, capture_output=True, text=True
    )


def state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "sweep.json").read_text())


def the_sweep(project: Path, stem: str) -> Path:
    (folder,) = (project / "outputs" / "sweeps").glob(f"{stem}-*")
    return folder


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def table_rows(stdout: str, run_ids: list[str]) -> list[str]:
    """The ranked table's rows: lines naming a run id that are not progress lines ("trial 001 (run ...)")."""
    return [line for line in stdout.splitlines() if "(run " not in line and any(r in line for r in run_ids)]


def curve_steps(run_dir: Path) -> list[int]:
    with (run_dir / "val_curve.csv").open(newline="") as f:
        return [int(float(row["step"])) for row in csv.DictReader(f)]


def write_sweep(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


TINY_COMMAND = ["${env}", "lmlab", "pretrain", "model=lstm", *tiny_overrides(max_steps=20), "${args_no_hyphens}"]


def tiny_sweep(**changes: Any) -> dict[str, Any]:
    config = {
        "method": "grid",
        "metric": {"name": "val/loss", "goal": "minimize"},
        "parameters": {"optim.lr": {"values": [0.003, 0.01]}},
        "command": TINY_COMMAND,
    }
    return config | changes


# ----- 1. an offline sweep: one W&B run per trial, a ranked table, and a second call that continues -----
def test_offline_sweep_makes_one_wandb_run_per_trial_and_continues_without_repeating(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lmlab sweep` as a command (two trials at once), then in-process to continue it (a third trial)."""
    env = cli_env(tmp_path)
    first = sweep_cli(project, env, "sweeps/smoke.yaml", "--count", "2", "-j", "2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    folder = the_sweep(project, "smoke")
    before = state(folder)["trials"]
    assert len(before) == 2
    made = {t["run_id"]: offline_runs(folder / t["run_id"]) for t in before}

    monkeypatch.chdir(project)
    for var in os.environ.keys() - env.keys():
        monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert main(["sweeps/smoke.yaml", "--count", "3"]) == 0
    second = capsys.readouterr().out
    trials = state(folder)["trials"]
    assert [t["run_id"] for t in trials[:2]] == list(made), "the finished trials were proposed again"
    assert second.count(" started") == 1, "only the third trial runs in the second call"
    for run_id, runs in made.items():
        assert offline_runs(folder / run_id) == runs, f"trial {run_id} ran again"

    assert [t["index"] for t in trials] == [0, 1, 2]
    assert all(t["state"] in ("finished", "stopped") for t in trials), [t["state"] for t in trials]
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 3, "three distinct configurations"
    sweep_tag = f"sweep:{folder.name}"
    for trial in trials:
        run_dir = folder / trial["run_id"]
        (run,) = offline_runs(run_dir)  # one W&B run per trial, named by the trial's run id
        assert run.name.endswith(f"-{trial['run_id']}")
        assert json.loads((run_dir / "run.json").read_text())["wandb_id"] == trial["run_id"]
        logged = wandb_summary(run / f"run-{trial['run_id']}.wandb")
        assert logged["run_id"] == trial["run_id"]
        assert {sweep_tag, "gru", "sotu", "bpe8000"} <= set(logged["tags"]), logged["tags"]
        assert logged["config"]["optim"]["lr"] == pytest.approx(trial["params"]["optim.lr"])
        assert logged["config"]["model"]["width"] == trial["params"]["model.width"]
        assert logged["config"]["model"]["output_dropout"] == pytest.approx(trial["params"]["model.output_dropout"])
        assert logged["summary"]["val/bpb"] == pytest.approx(trial["curve"][-1]["val/bpb"], rel=1e-6)

    run_ids = [t["run_id"] for t in trials]
    rows = table_rows(second, run_ids)
    assert len(rows) == 3, second
    assert [row.split()[1] for row in rows] == ["1", "2", "3"]
    best_first = sorted(trials, key=lambda t: min(row["val/bpb"] for row in t["curve"]))
    assert [next(r for r in run_ids if r in row) for row in rows] == [t["run_id"] for t in best_first]

    # M.PRETRAIN_SUMMARY (checked before any trial) is what a trial really reports
    finished = next(t for t in trials if t["state"] == "finished")
    reported = set(finished["summary"]) | {k for row in finished["curve"] for k in row}
    assert reported - {"step"} == set(M.PRETRAIN_SUMMARY)

    # a third call with nothing left to do prints the table and runs nothing
    assert main(["sweeps/smoke.yaml", "--count", "3"]) == 0
    again = capsys.readouterr().out
    assert " started" not in again and len(table_rows(again, run_ids)) == 3


# ----- 2. a runner killed mid-trial: the next one waits for the orphan, then resumes the trial -----
def test_killed_runner_leaves_a_trial_the_next_runner_waits_for_then_resumes(project: Path, tmp_path: Path) -> None:
    """SIGKILL the runner while its trial trains (stalled at step 12, checkpoint at 10): the trial lives on.

    A new runner must not start the trial a second time while the orphan holds its folder; once the
    orphan is gone (SIGKILLed here, as by a crash), it starts it again and `resume=auto` continues it.
    """
    script = ROOT / "tests" / "helpers" / "stalling_lmlab.py"
    command = ["${interpreter}", str(script), *TINY_COMMAND[2:]]  # the CLI, stalling when asked to
    write_sweep(
        project / "sweeps" / "killed.yaml", tiny_sweep(parameters={"optim.lr": {"values": [0.01]}}, command=command)
    )
    mark = tmp_path / "stalled"
    stall_env = cli_env(tmp_path, LMLAB_TEST_STALL_AT="12", LMLAB_TEST_STALL_MARK=str(mark))
    first = subprocess.Popen(
        [sys.executable, "-m", "lmlab", "sweep", "sweeps/killed.yaml"],
        cwd=project,
        env=stall_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    orphan: int | None = None
    log = (tmp_path / "second.log").open("w")
    second: subprocess.Popen | None = None
    try:
        deadline = time.monotonic() + 120
        while not mark.exists():
            assert first.poll() is None, "the runner ended before its trial reached step 12"
            assert time.monotonic() < deadline, "the trial never reached step 12"
            time.sleep(0.1)
        first.kill()
        first.wait()
        folder = the_sweep(project, "killed")
        (trial,) = state(folder)["trials"]
        orphan = trial["pid"]
        assert trial["state"] == "running" and orphan is not None
        os.kill(orphan, 0)  # the trial outlived its runner

        second = subprocess.Popen(
            [sys.executable, "-m", "lmlab", "sweep", "sweeps/killed.yaml"],
            cwd=project,
            env=cli_env(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while "waiting for it" not in (tmp_path / "second.log").read_text():
            assert second.poll() is None, (tmp_path / "second.log").read_text()
            assert time.monotonic() < deadline, "the second runner did not wait for the orphan"
            time.sleep(0.1)
        assert " started" not in (tmp_path / "second.log").read_text()
        os.killpg(orphan, signal.SIGKILL)  # the trial leads its own process group
        orphan = None
        assert second.wait(timeout=180) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if orphan is not None:
            os.killpg(orphan, signal.SIGKILL)
        log.close()

    (trial,) = state(folder)["trials"]
    run_dir = folder / trial["run_id"]
    assert trial["state"] == "finished" and trial["exit_code"] == 0
    assert "resuming from" in (run_dir / "trial.log").read_text()
    assert curve_steps(run_dir) == [5, 10, 15, 20]
    runs = offline_runs(run_dir)
    assert len(runs) == 2 and all(r.name.endswith(f"-{trial['run_id']}") for r in runs), "one W&B run, resumed"
    assert json.loads((run_dir / "run.json").read_text())["wandb_id"] == trial["run_id"]


# ----- 3. what `wandb agent` does online, with W&B's own command builders -----
def test_the_agent_command_trains_into_the_agents_run(project: Path, tmp_path: Path) -> None:
    """`wandb agent` runs the file's command with the parameters as ${args_no_hyphens} and names the run in
    WANDB_RUN_ID (inside a sweep W&B ignores any other id): the run folder, run.json and the W&B run follow."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args
    from wandb.sdk.lib import config_util

    config = load_config(ROOT / "sweeps" / "smoke.yaml")
    params = {"optim.lr": 0.01, "model.width": 32, "model.output_dropout": 0.05}
    args = {key: {"value": value} for key, value in params.items()}
    sweep_vars = create_sweep_command_args({"args": args}) | {"env": ["/usr/bin/env"]}
    command = []  # the substitution loop of wandb_agent.Agent._command_run
    for item in create_sweep_command(config["command"]):
        name = item[2:-1] if item.startswith("${") and item.endswith("}") else None
        command += (sweep_vars.get(name) or []) if name else [item]
    param_file = tmp_path / "sweep-params.yaml"
    config_util.save_config_file_from_dict(str(param_file), args)
    env = cli_env(
        tmp_path,
        WANDB_SWEEP_ID="agentsweep",
        WANDB_RUN_ID="agentrun1",
        WANDB_SWEEP_PARAM_PATH=str(param_file),
        WANDB_PROJECT="lmlab",
        WANDB_MODE="offline",
    )
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]

    run_dir = project / "outputs" / "sweeps" / "agentsweep" / "agentrun1"  # the file's hydra.run.dir
    assert json.loads((run_dir / "run.json").read_text())["wandb_id"] == "agentrun1"
    (run,) = offline_runs(run_dir)
    logged = wandb_summary(run / "run-agentrun1.wandb")
    assert logged["run_id"] == "agentrun1"
    assert logged["config"]["optim"]["lr"] == 0.01 and logged["config"]["model"]["width"] == 32
    assert logged["config"]["optim.lr"] == 0.01, "the sweep's parameters are in the run config as W&B reads them"
    assert "val/bpb" in logged["summary"]


def test_a_given_run_id_names_the_run_even_on_a_resume(tmp_path: Path) -> None:
    """WANDB_RUN_ID (`wandb agent`, `lmlab sweep`) names the run; without it a resume keeps the recorded id."""
    run = RunFolder(tmp_path)

    def start(new_id: str, given_id: str | None = None) -> tuple[Path | None, str]:
        planned = run.plan("auto", {"model": 1}, new_id, given_id)
        run.begin(planned, True)
        return planned.checkpoint, planned.run_id

    assert start("fresh1", given_id="agent1") == (None, "agent1")
    run.checkpoints.mkdir()
    torch.save({"step": 1}, run.last_checkpoint)
    assert start("fresh2") == (run.last_checkpoint, "agent1")
    assert start("fresh3", given_id="agent2") == (run.last_checkpoint, "agent2")
    assert run.read_record()["wandb_id"] == "agent2"


def test_runs_under_wandb_agent_log_online_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent's run that logs offline leaves its server sweep without results; an explicit choice still wins."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    assert wandb_mode(LoggerConfig()) == "online"
    assert wandb_mode(LoggerConfig(mode="offline")) == "offline"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode(LoggerConfig()) == "offline"
    monkeypatch.delenv("WANDB_SWEEP_ID")
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_mode(LoggerConfig()) == "offline"


# ----- 4. the shipped sweep files -----
@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_sweep_file_composes(path: Path) -> None:
    """Every parameter (each listed value, both ends of each distribution) composes with its verb's config."""
    config = load_config(path)
    verb = check(config, path, ROOT / "conf")
    assert verb in ("pretrain", "synth")
    assert config["metric"]["name"] in {"pretrain": ("val/bpb", "val/loss"), "synth": ("val/acc",)}[verb]
    assert "${args_no_hyphens}" in config["command"]
    assert "hydra.run.dir=outputs/sweeps/${oc.env:WANDB_SWEEP_ID}/${oc.env:WANDB_RUN_ID}" in config["command"]


def test_shipped_files_cover_every_family_and_the_matched_grid() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"smoke", "matched_params", "bayes_rnn", "bayes_lstm", "bayes_gru", "bayes_transformer"} <= names
    for family in ("rnn", "lstm", "gru", "transformer"):  # the classic four have a tuned search each
        config = load_config(ROOT / "sweeps" / f"bayes_{family}.yaml")
        assert config["method"] == "bayes" and f"model={family}" in config["command"]
        swept = set(config["parameters"])
        assert "optim.lr" in swept and "model.width" in swept and any("dropout" in k for k in swept)


def test_the_matched_grid_compares_families_of_the_same_size() -> None:
    config = load_config(ROOT / "sweeps" / "matched_params.yaml")
    fixed = [c for c in config["command"][3:] if not c.startswith("${")]
    register_configs()
    sizes = {}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for family in config["parameters"]["model"]["values"]:
            cfg = typed(compose(config_name="pretrain", overrides=[*fixed, f"model={family}"]))
            assert isinstance(cfg, PretrainConfig)
            sizes[family] = build_model(cfg.model, cfg.tokenizer.vocab_size).num_params
    assert set(sizes) <= set(FAMILIES) and len(sizes) >= 4  # the study's choice of families, all in the table
    assert max(sizes.values()) / min(sizes.values()) < 1.01, sizes  # the family contract's tolerance


# ----- 5. bad input: a clear message and exit code 2, before anything runs -----
@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with conf/ only: errors must come before any trial, so no corpus is needed."""
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    (tmp_path / "sweeps").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"parameters": {"optim.lrr": {"values": [0.1]}}},
            r"optim\.lrr=0\.1 does not compose with conf/pretrain\.yaml: Could not override 'optim\.lrr'",
        ),
        ({"parameters": {"model.width": {"min": 16.0, "max": 64.0}}}, r"model\.width=16\.0\d* does not compose"),
        (
            {"parameters": {"+optim.x": {"values": [1]}}},
            r"not a valid W&B sweep config:\n  '\+optim\.x' does not match",
        ),
        ({"parameters": {"optim": {"parameters": {"lr": {"values": [1]}}}}}, r"nested; name the config key"),
        ({"metric": None}, r"has no metric"),
        ({"metric": {"name": "val/acc"}}, r"metric 'val/acc' is not one lmlab pretrain reports; use one of val/loss"),
        ({"command": ["${env}", "lmlab", "pretrain", "${args}"]}, r"one \$\{args_no_hyphens\}"),
        ({"command": ["${env}", "python", "train.py", "${args_no_hyphens}"]}, r"runs no lmlab verb"),
        (
            {"command": [*TINY_COMMAND[:-1], "optim.nope=1", "${args_no_hyphens}"]},
            r"the command's own overrides do not compose",
        ),
        ({"method": "annealing"}, r"not a valid W&B sweep config"),
    ],
    ids=[
        "unknown key",
        "wrong type",
        "plus key",
        "nested",
        "no metric",
        "unknown metric",
        "args",
        "no verb",
        "bad command",
        "bad method",
    ],
)
def test_a_bad_sweep_file_is_a_clear_error(
    bare: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, Any], expected: str
) -> None:
    config = {k: v for k, v in tiny_sweep(**changes).items() if v is not None}
    write_sweep(bare / "sweeps" / "bad.yaml", config)
    assert main(["sweeps/bad.yaml", "--count", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmlab sweep: error: sweeps/bad.yaml") and "Traceback" not in err
    assert re.search(expected, err), err
    assert not (bare / "outputs").exists(), "an invalid sweep must leave nothing behind"


def test_missing_file_and_missing_count_are_clear_errors(bare: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_sweep(bare / "sweeps" / "random.yaml", tiny_sweep(method="random"))
    assert main(["sweeps/nope.yaml"]) == 2
    assert "no sweep file sweeps/nope.yaml; sweeps/ holds random.yaml" in capsys.readouterr().err
    assert main(["sweeps/random.yaml"]) == 2
    assert "is a random sweep, which never ends by itself: give --count N" in capsys.readouterr().err
    assert main(["sweeps/random.yaml", "--count", "2", "-j", "0"]) == 2
    assert "must be at least 1" in capsys.readouterr().err
    assert not (bare / "outputs").exists()


def test_the_lmlab_command_exits_2_on_bad_input(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lmlab", "sweep", "sweeps/nope.yaml", "--count", "1"],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "lmlab sweep: error: no sweep file sweeps/nope.yaml" in result.stderr


# ----- 6. the engine glue: agent-identical arguments, early termination, ranking -----
@pytest.mark.parametrize(
    "params",
    [{"optim.lr": 1e-05, "model.width": 256}, {"model": "rnn", "trainer.compile": True}, {"optim.betas": [0.9, 0.99]}],
)
def test_parameters_become_the_same_overrides_as_under_wandb_agent(params: dict[str, Any]) -> None:
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    agent = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    assert overrides(params) == agent["args_no_hyphens"]
    assert overrides(params, "++") == agent["args_override_hydra"]


def synthetic_sweep(tmp_path: Path, early_terminate: dict[str, Any] | None = None) -> Sweep:
    config = tiny_sweep(metric={"name": "val/bpb", "goal": "minimize"})
    if early_terminate:
        config["early_terminate"] = early_terminate

    def trial(index: int, state: str, bpbs: list[float]) -> Trial:
        curve = [{"step": 10.0 * (i + 1), "val/bpb": bpb} for i, bpb in enumerate(bpbs)]
        return Trial(index, f"run{index}", {"optim.lr": 0.001 * (index + 1)}, state=state, curve=curve)

    trials = [
        trial(0, "finished", [2.0, 1.5, 1.2]),
        trial(1, "finished", [2.1, 1.6, 1.3]),
        trial(2, "failed", []),
        trial(3, "running", [2.6, 2.4]),  # behind the others at the 2nd validation
        trial(4, "running", [1.9]),  # not at the band yet
    ]
    return Sweep(tmp_path / "s.yaml", config, "pretrain", tmp_path / "s-0", trials)


def test_hyperband_stops_a_running_trial_behind_the_best_third(tmp_path: Path) -> None:
    sweep = synthetic_sweep(tmp_path, {"type": "hyperband", "min_iter": 2, "eta": 3})
    assert list(to_stop(sweep)) == ["run3"]
    assert to_stop(sweep)["run3"].startswith("Run: run3 Step: 2 "), "the engine's reason for this very run"
    assert to_stop(synthetic_sweep(tmp_path)) == {}, "no early_terminate: nothing stops"


def test_ranking_orders_by_the_best_value_and_lists_trials_without_one_last(tmp_path: Path) -> None:
    sweep = synthetic_sweep(tmp_path)
    assert [(t.run_id, v) for v, t in ranking(sweep)] == [
        ("run0", 1.2),
        ("run1", 1.3),
        ("run4", 1.9),
        ("run3", 2.4),
        ("run2", None),
    ]
    sweep.config["metric"]["goal"] = "maximize"
    assert [t.run_id for _, t in ranking(sweep)] == ["run3", "run1", "run0", "run4", "run2"]  # each one's maximum
    console = Console(width=200, record=True)
    print_ranking(sweep, console)
    assert "val/bpb (best)" in console.export_text()


# ----- 7. slow: early termination for real, and DDP trials -----
@pytest.mark.slow
def test_hyperband_stops_a_hopeless_trial_mid_run(project: Path, tmp_path: Path) -> None:
    """Three trials one after another; the third (lr 1e-7) trails both others at a band and gets SIGTERM."""
    file = write_sweep(
        project / "sweeps" / "hyperband.yaml",
        tiny_sweep(
            parameters={"optim.lr": {"values": [0.01, 0.02, 1e-7]}},
            early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3},
            command=[*TINY_COMMAND[:-1], "trainer.max_steps=200", "trainer.val_every=10", "${args_no_hyphens}"],
        ),
    )
    result = sweep_cli(project, cli_env(tmp_path), str(file.relative_to(project)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = the_sweep(project, "hyperband")
    trials = state(folder)["trials"]
    assert [t["state"] for t in trials] == ["finished", "finished", "stopped"], result.stdout
    hopeless = trials[2]
    assert hopeless["curve"][-1]["step"] < 200 and not (folder / hopeless["run_id"] / "metrics.json").exists()
    (run,) = offline_runs(folder / hopeless["run_id"])
    assert wandb_summary(run / f"run-{hopeless['run_id']}.wandb")["summary"]["val/loss"] == pytest.approx(
        hopeless["curve"][-1]["val/loss"], rel=1e-6
    )
    assert "stopping early" in result.stdout
    assert " stopped " in table_rows(result.stdout, [t["run_id"] for t in trials])[-1], "ranked last"


@pytest.mark.slow
def test_a_ddp_trial_is_one_wandb_run(project: Path, tmp_path: Path) -> None:
    file = write_sweep(
        project / "sweeps" / "ddp.yaml",
        tiny_sweep(
            parameters={"optim.lr": {"values": [0.01]}},
            command=[*TINY_COMMAND[:3], "trainer=ddp_cpu", *TINY_COMMAND[3:]],
        ),
    )
    result = sweep_cli(project, cli_env(tmp_path), str(file.relative_to(project)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = the_sweep(project, "ddp")
    (trial,) = state(folder)["trials"]
    run_dir = folder / trial["run_id"]
    assert json.loads((run_dir / "metrics.json").read_text())["train/tokens"] == 20 * 2 * 4 * 8  # two ranks
    (run,) = offline_runs(run_dir)
    assert wandb_summary(run / f"run-{trial['run_id']}.wandb")["run_id"] == trial["run_id"]
    assert list(folder.rglob("offline-run-*")) == [run], "rank 1 made a W&B run of its own"
