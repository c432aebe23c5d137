"""`lmlab compare` on real offline W&B runs made by tiny `lmlab pretrain` runs in a throwaway project.

One module fixture makes, in three processes at once: a 2-job Hydra multirun (group `mr`); a 2-job learning
rate sweep whose runs carry the `sweep:<id>` tag that `lmlab sweep` gives its trials, where the second
trial diverges (NaN loss: exit code 2, a failed run); and a run killed with SIGKILL mid-training. Every run
is read back through `wandb leet inspect`; ranks are checked against each run's own metrics.json.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from rich.console import Console

from lmlab.core.metrics import higher_is_better
from lmlab.tools.rank import curves_png, legend_label, rank, write_ranking
from lmlab.tools.wandb_runs import Filters, Run, read_offline_runs
from tests.helpers.project import ROOT, copy_project
from tests.helpers.project import cli_env as offline_env
from tests.helpers.project import env as project_env
from tests.helpers.tiny_lm import tiny_overrides, write_corpus

TINY = tiny_overrides(max_steps=10)
SWEEP = "tinysweep"  # the offline sweep: its trials' tag is sweep:tinysweep
RUNS = ["killed", "mr/0-lstm", "mr/1-gru", "sw/0-rnn", "sw/1-rnn"]  # run folders under outputs/
STALE = 11 * 60  # W&B's reader calls a run without an exit record crashed after 10 minutes without a write
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cli_env(tmp: Path) -> dict[str, str]:
    """W&B offline, caches in `tmp`, and records on disk within 0.2 s (so a killed run leaves them)."""
    return offline_env(tmp, WANDB__TRANSACTION_LOG_FLUSH_INTERVAL="0.2")


def pretrain(project: Path, env: dict[str, str], args: list[str], log: Path, script: str = "") -> subprocess.Popen:
    """Start `lmlab pretrain` (or `script` standing in for it), its output to `log`."""
    command = [sys.executable, *([script] if script else ["-m", "lmlab"]), "pretrain", *args]
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)


def run_file(run_dir: Path) -> Path:
    (file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    return file


def age(run_dir: Path, seconds: float) -> None:
    """Make a run's W&B log look last written `seconds` ago: the machine 'crashed' that long before we look."""
    for file in run_dir.glob("wandb/offline-run-*/run-*.wandb"):
        then = time.time() - seconds
        os.utime(file, (then, then))


def kill_when_logged(proc: subprocess.Popen, mark: Path, run_dir: Path) -> None:
    """Wait until the stalled run has its first validation in its W&B log, then SIGKILL it (W&B's service too)."""
    deadline = time.monotonic() + 240
    while not mark.exists() or b"val/bpb" not in run_file(run_dir).read_bytes():
        assert proc.poll() is None, f"exited {proc.returncode} before stalling"
        assert time.monotonic() < deadline, "the run never stalled with a validation in its W&B log"
        time.sleep(0.1)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    _, alive = psutil.wait_procs(children, timeout=15)
    for child in alive:  # wandb's service of the killed run, which we started
        child.kill()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("compare")
    project = copy_project(tmp / "project")
    write_corpus(project / "data")
    env = cli_env(tmp)
    out = project / "outputs"
    diverging = ["trainer.gradient_clip_val=null", "optim.schedule=constant", "optim.warmup_steps=0"]
    stall = {**env, "LMLAB_TEST_STALL_AT": "7", "LMLAB_TEST_STALL_MARK": str(project / "stalled")}
    procs = {
        "multirun": pretrain(
            project,
            env,
            ["-m", "model=lstm,gru", "name=mr", "logger.tags=[mr]", *TINY, f"hydra.sweep.dir={out}/mr"],
            tmp / "multirun.log",
        ),
        "sweep": pretrain(  # lr 1e6 without clipping: NaN within a few steps (validation after every step)
            project,
            env,
            ["-m", "model=rnn", "optim.lr=3e-3,1e6", "name=sw", f"logger.tags=['sweep:{SWEEP}']"]
            + [*tiny_overrides(max_steps=10, val_every=1), *diverging, f"hydra.sweep.dir={out}/sw"],
            tmp / "sweep.log",
        ),
        "killed": pretrain(
            project,
            stall,
            ["model=gru", "name=killed", *tiny_overrides(max_steps=20), f"hydra.run.dir={out}/killed"],
            tmp / "killed.log",
            script=str(ROOT / "tests" / "helpers" / "stalling_lmlab.py"),
        ),
    }
    try:
        kill_when_logged(procs["killed"], project / "stalled", out / "killed")
        for name, proc in procs.items():
            expected = {"sweep": 2, "killed": -signal.SIGKILL}.get(name, 0)
            assert proc.wait(timeout=300) == expected, (tmp / f"{name}.log").read_text()[-3000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return project


def run_dir(run: Run) -> Path:
    return Path(run.source).parents[2]


@pytest.fixture(scope="module")
def runs(project: Path) -> dict[str, Run]:
    """Every run of the fixture read back in-process, by run folder; the killed run aged into 'crashed'."""
    age(project / "outputs" / "killed", STALE)
    read = read_offline_runs([project / "outputs"], Filters())
    by_folder = {run_dir(run).relative_to(project / "outputs").as_posix(): run for run in read}
    assert sorted(by_folder) == RUNS
    return by_folder


def metrics(run: Run) -> dict[str, float]:
    return json.loads((run_dir(run) / "metrics.json").read_text())


def val_curve(folder: Path) -> list[float]:
    with (folder / "val_curve.csv").open(newline="") as f:
        return [float(row["val/bpb"]) for row in csv.DictReader(f)]


# ----- reading runs back -----
def test_runs_are_read_with_group_tags_sweep_state_and_history(runs: dict[str, Run]) -> None:
    lstm = runs["mr/0-lstm"]
    assert (lstm.group, lstm.job_type, lstm.state, lstm.sweep) == ("mr", "pretrain", "finished", "")
    assert {"lstm", "sotu", "bpe8000", "mr"} <= set(lstm.tags)
    assert lstm.config["model.family"] == "lstm" and lstm.config["trainer.max_steps"] == 10
    assert lstm.value("model/params") == metrics(lstm)["model/params"]
    assert lstm.value("val/bpb") == pytest.approx(metrics(lstm)["val/bpb"], rel=1e-6)
    assert [row["val/bpb"] for row in lstm.history if "val/bpb" in row] == pytest.approx(val_curve(run_dir(lstm)))

    good, diverged = runs["sw/0-rnn"], runs["sw/1-rnn"]
    assert good.sweep == diverged.sweep == SWEEP
    assert (good.state, diverged.state) == ("finished", "failed")
    assert diverged.config["optim.lr"] == 1e6 and not (run_dir(diverged) / "metrics.json").exists()
    assert runs["killed"].state == "crashed" and not (run_dir(runs["killed"]) / "metrics.json").exists()


def test_filters_by_group_tag_sweep_and_job_type(runs: dict[str, Run]) -> None:
    def chosen(**given: object) -> list[str]:
        return sorted(name for name, run in runs.items() if Filters(**given).matches(run))

    assert chosen(group="mr") == ["mr/0-lstm", "mr/1-gru"]
    assert chosen(tags=("gru",)) == ["killed", "mr/1-gru"]
    assert chosen(tags=("mr", "gru")) == ["mr/1-gru"]
    assert chosen(tags=("mr", "rnn")) == []
    assert chosen(sweep=SWEEP) == ["sw/0-rnn", "sw/1-rnn"]
    assert chosen(group="sw", sweep=SWEEP, tags=("rnn",)) == ["sw/0-rnn", "sw/1-rnn"]
    assert chosen(sweep="other") == []
    assert chosen(job_type="pretrain") == RUNS
    assert chosen(job_type="finetune") == []
    assert Filters(group="mr", tags=("a",), sweep=SWEEP, job_type="pretrain").api() == {
        "$and": [
            {"tags": {"$in": ["a"]}},
            {"group": "mr"},
            {"$or": [{"sweep": SWEEP}, {"tags": {"$in": [f"sweep:{SWEEP}"]}}]},
            {"jobType": "pretrain"},
        ]
    }


def best_bpb(run: Run) -> float:
    """The lowest val/bpb of the run's validations (its metrics.json holds the last)."""
    return min(val_curve(run_dir(run)))


def test_ranking_puts_finished_runs_in_metric_order_and_the_others_after(runs: dict[str, Run]) -> None:
    """Ranked by the best value each run logged, not its last (a run's summary holds the last)."""
    finished = sorted((run for run in runs.values() if run.state == "finished"), key=best_bpb)
    assert len(finished) == 3
    rows = rank(list(runs.values()), "val/bpb", maximize=False, family_key="model.family")
    assert [row.run.id for row in rows[:3]] == [run.id for run in finished]
    assert [row.rank for row in rows] == [1, 2, 3, None, None]
    assert [row.value for row in rows[:3]] == pytest.approx([best_bpb(run) for run in finished])
    assert {row.run.state for row in rows[3:]} == {"failed", "crashed"}

    reverse = rank(list(runs.values()), "val/bpb", maximize=True, family_key="model.family")  # best = highest
    highest = sorted(finished, key=lambda run: -max(val_curve(run_dir(run))))
    assert [row.run.id for row in reverse[:3]] == [run.id for run in highest]
    assert higher_is_better("train/tokens_per_sec") and higher_is_better("test/f1")
    assert not higher_is_better("val/bpb") and not higher_is_better("train/wall_seconds")


def test_killed_run_is_running_until_its_heartbeat_is_stale_and_one_finished_run_after_resume(
    project: Path, tmp_path: Path
) -> None:
    """A copy of the killed run: 'running' while its log is fresh, 'crashed' once stale; resumed, one finished run."""
    folder = tmp_path / "killed"
    shutil.copytree(project / "outputs" / "killed", folder)
    age(folder, 0)
    (fresh,) = read_offline_runs([folder], Filters())
    assert fresh.state == "running"
    age(folder, STALE)
    (stale,) = read_offline_runs([folder], Filters())
    assert stale.state == "crashed"

    resumed = subprocess.run(  # from the checkpoint by path: resume=auto would refuse after an edit of the code
        [sys.executable, "-m", "lmlab", "pretrain", "model=gru", "name=killed", *tiny_overrides(max_steps=20)]
        + [f"hydra.run.dir={folder}", f"resume={folder / 'checkpoints' / 'last.ckpt'}"],
        cwd=project,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert len(list(folder.glob("wandb/offline-run-*"))) == 2, "the resume should continue the same W&B run"
    (run,) = read_offline_runs([folder], Filters())
    assert run.id == stale.id and run.state == "finished"
    curve = val_curve(folder)
    assert len(curve) == 4  # steps 5 (before the kill), 10, 15, 20 (after the resume)
    assert [row["val/bpb"] for row in run.history if "val/bpb" in row] == pytest.approx(curve, rel=1e-6)


# ----- the CLI -----
def test_cli_writes_the_ranked_table_markdown_csv_and_plots(project: Path, runs: dict[str, Run]) -> None:
    out = project / "reports" / "all"
    result = subprocess.run(
        [sys.executable, "-m", "lmlab", "compare", "--out", str(out)],
        cwd=project,
        env=project_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "5 runs ranked by val/bpb (lower is better)" in result.stdout
    assert "crashed" in result.stdout and "failed" in result.stdout

    with (out / "compare.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    by_id = {run.id: name for name, run in runs.items()}
    finished = sorted((name for name in RUNS if runs[name].state == "finished"), key=lambda n: best_bpb(runs[n]))
    assert [by_id[row["id"]] for row in rows[:3]] == finished
    assert [row["rank"] for row in rows] == ["1", "2", "3", "", ""]
    for row in rows[:3]:
        expected = metrics(runs[by_id[row["id"]]])
        assert float(row["val/bpb"]) == pytest.approx(expected["val/bpb"], rel=1e-6)
        assert float(row["model/params"]) == expected["model/params"]
        assert row["state"] == "finished" and row["job_type"] == "pretrain"
    assert {by_id[row["id"]]: row["state"] for row in rows[3:]} == {"sw/1-rnn": "failed", "killed": "crashed"}
    assert [float(row["optim.lr"]) for row in rows if by_id[row["id"]].startswith("sw/")] == [3e-3, 1e6]

    page = (out / "compare.md").read_text()
    assert all(f"| {run.name} |" in page for run in runs.values())
    assert "(curves.png)" in page and "(best_per_family.png)" in page
    for name in ("curves.png", "best_per_family.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
    assert not list(out.glob(".*")), "temporary files left behind"


def test_cli_bad_inputs_exit_2_with_a_clear_message(project: Path, tmp_path: Path) -> None:
    one_run = str(project / "outputs" / "sw" / "1-rnn")
    env = {**cli_env(tmp_path), "HOME": str(tmp_path)}  # no W&B API key anywhere
    cases = {
        "missing_path": (["nosuch/folder"], project, "nosuch/folder: no such file or folder"),
        "no_runs_here": ([], tmp_path, "neither outputs nor data/runs exists"),
        "no_runs_under": (["conf"], project, "no W&B runs (offline-run-*/run-*.wandb) under conf"),
        "unknown_metric": (
            [one_run, "--metric", "val/bpx"],
            project,
            "--metric val/bpx: none of the 1 runs has a number for it",
        ),
        "no_match": ([one_run, "--group", "nosuch"], project, "has group 'nosuch'; they have groups: sw"),
        "bad_project": (["--project", "lmlab"], project, "give it as entity/project"),
        "no_api_key": (["--project", "me/lmlab"], project, "wandb login"),
        "both_directions": (["--max", "--min"], project, "argument --min: not allowed with argument --max"),
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "lmlab", "compare", *args, "--out", str(tmp_path / name)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, cwd, _) in cases.items()
    }
    errors = {}
    for name, proc in procs.items():
        errors[name] = proc.communicate(timeout=300)[1]
        assert proc.returncode == 2, f"{name}: exit {proc.returncode}\n{errors[name][-2000:]}"
        assert "lmlab compare: error: " in errors[name] and cases[name][2] in errors[name], errors[name][-2000:]
        assert "Traceback" not in errors[name], name
        assert not (tmp_path / name).exists(), f"{name}: wrote a report"
    assert "val/bpb" in errors["unknown_metric"].split("metrics they have:")[1]
    assert "lmlab pretrain" in errors["no_runs_here"] and "lmlab pretrain" in errors["no_runs_under"]


def synthetic(name: str, family: str, curve: list[float], job_type: str = "pretrain", metric: str = "val/bpb") -> Run:
    history = [{metric: v, "train/tokens": 100 * (i + 1)} for i, v in enumerate(curve)]
    config = {"model.family": family}
    return Run(name, name, "g", job_type, [], "finished", config, {metric: curve[-1]}, history, "", name)


def test_a_run_is_ranked_by_its_best_value_and_labelled_once() -> None:
    """rnn's last validation (2.03) is worse than lstm's (2.00), but its best (1.96) is better: the best ranks.
    A run named after its family is labelled once in the plot's legend ("pretrain-rnn", not "pretrain-rnn (rnn)")."""
    rnn, lstm = synthetic("pretrain-rnn", "rnn", [2.10, 1.96, 2.03]), synthetic("wide", "lstm", [2.05, 2.00])
    rows = rank([lstm, rnn], "val/bpb", maximize=False, family_key="model.family")
    assert [(row.run.name, row.value) for row in rows] == [("pretrain-rnn", 1.96), ("wide", 2.00)]
    png = curves_png(rows, "val/bpb")
    assert png.startswith(b"\x89PNG")
    assert [legend_label(row) for row in rows] == ["pretrain-rnn", "wide (lstm)"]


def test_runs_of_job_types_that_do_not_log_the_metric_are_left_out(tmp_path: Path) -> None:
    """With no --job-type, val/bpb ranks the pretraining runs; fine-tuning runs (no val/bpb) are left out with a
    line saying so, not listed as runs without a value."""
    runs = [
        synthetic("pretrain-gru", "gru", [2.0, 1.9]),
        synthetic("finetune-gru", "gru", [0.6, 0.7], "finetune", "finetune/val/acc"),
        synthetic("finetune-gru-scratch", "gru", [0.6, 0.65], "finetune", "finetune/val/acc"),
    ]
    console = Console(record=True, width=200)
    write_ranking(runs, "val/bpb", None, "model.family", tmp_path / "out", "test", console)
    said = console.export_text()
    assert "left out 2 runs of job type finetune, which log no val/bpb" in said
    table = (tmp_path / "out" / "compare.csv").read_text()
    assert "pretrain-gru" in table and "finetune-gru" not in table
