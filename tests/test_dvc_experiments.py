"""DVC experiments with Hydra composition: `dvc exp run` composes conf/dvc/pipeline.yaml into params.yaml,
`-S` overrides are Hydra overrides of it, and `--queue` with a sweep queues one experiment per value.

It runs in a temporary copy of the project on a tiny local corpus (the data setup of
tests/helpers/pipeline.py). The workspace runs the data stages once; the queued experiments
target `pretrain@gru-1337`, so each one reruns only what its changed key reaches: the tokenizer and
one family's pretraining.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.helpers.pipeline import shrink_training, write_tiny_datasets
from tests.helpers.project import ROOT, copy_project, dvc

GIT_ID = {"user.name": "lmlab tests", "user.email": "tests@lmlab.invalid"}


def composes_pipeline(cwd: Path) -> bool:
    """Whether the repo's DVC config (`dvc config --list`) composes conf/dvc/pipeline.yaml into params.yaml."""
    result = dvc("config", "--list", cwd=cwd)
    assert result.returncode == 0, result.stderr
    settings = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return settings.get("hydra.enabled", "").lower() == "true" and (
        settings.get("hydra.config_dir"),
        settings.get("hydra.config_name"),
    ) == ("conf/dvc", "pipeline")


def test_params_yaml_is_the_composed_pipeline_config() -> None:
    """`dvc exp run` rewrites params.yaml from conf/dvc/pipeline.yaml; `dvc repro` reads it as is: they must agree."""
    assert composes_pipeline(ROOT), (
        "enable it in .dvc/config: hydra.enabled = true, hydra.config_dir = conf/dvc, hydra.config_name = pipeline"
    )
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "dvc"), version_base=None):
        composed = OmegaConf.to_container(compose(config_name="pipeline"), resolve=True)
    assert composed == yaml.safe_load((ROOT / "params.yaml").read_text())


def git(*args: str, cwd: Path) -> None:
    config = [arg for key, value in GIT_ID.items() for arg in ("-c", f"{key}={value}")]
    subprocess.run(["git", *config, *args], cwd=cwd, check=True, capture_output=True)


def run(*args: str, cwd: Path) -> str:
    result = dvc(*args, cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A committed copy of the project whose pipeline reads a tiny local corpus and trains tiny models."""
    root = copy_project(tmp_path / "project")
    shutil.copy2(ROOT / ".gitignore", root / ".gitignore")
    write_tiny_datasets(root, tmp_path)
    pretrain = root / "conf/pretrain.yaml"  # no W&B: this test is about DVC, and each run saves seconds
    pretrain.write_text(pretrain.read_text().replace("- logger: wandb", "- logger: none"))
    shrink_training(root)
    pipeline = yaml.safe_load((root / "conf/dvc/pipeline.yaml").read_text())
    pipeline.update(data="tiny", task_data="tiny_reviews", tokenizer={"type": "bpe", "vocab_size": 120})
    (root / "conf/dvc/pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    assert composes_pipeline(root), (
        "enable it in .dvc/config: hydra.enabled = true, hydra.config_dir = conf/dvc, hydra.config_name = pipeline"
    )
    git("add", "-A", cwd=root)
    git("commit", "-qm", "tiny pipeline", cwd=root)
    return root


def experiments(root: Path) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json`, as experiment name -> its params.yaml and pretrain@gru-1337 metrics."""
    shown = json.loads(run("exp", "show", "--json", cwd=root))
    found = {}
    for baseline in shown:
        for exp in baseline["experiments"] or []:
            data = exp["revs"][0]["data"]
            found[exp["name"]] = {
                "params": data["params"]["params.yaml"]["data"],
                "metrics": data["metrics"]["metrics/seed1337/pretrain/gru.json"]["data"],
            }
    return found


def test_a_queued_grid_of_hydra_overrides_runs_one_experiment_per_value(project: Path) -> None:
    run("exp", "run", "tokenize", cwd=project)  # the baseline's data, in the workspace: the experiments reuse it
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["data"] == "tiny" and params["tokenizer"]["vocab_size"] == 120, "params.yaml was not composed"
    git("add", "-A", cwd=project)
    git("commit", "-qm", "baseline", cwd=project)

    queued = run("exp", "run", "--queue", "pretrain@gru-1337", "-S", "tokenizer.vocab_size=100,140", cwd=project)
    assert queued.count("Queued experiment") == 2
    try:
        run("queue", "start", cwd=project)
        deadline = time.monotonic() + 180
        while "Queued" in (status := run("queue", "status", cwd=project)) or "Running" in status:
            assert time.monotonic() < deadline, f"experiments still running:\n{status}"
            time.sleep(1)
    finally:
        dvc("queue", "stop", "--kill", cwd=project)
    assert status.count("Success") == 2, status

    done = experiments(project)
    assert sorted(e["params"]["tokenizer"]["vocab_size"] for e in done.values()) == [100, 140]
    for exp in done.values():
        vocab = exp["params"]["tokenizer"]["vocab_size"]
        assert exp["params"]["data"] == "tiny"
        assert exp["metrics"]["model/embedding_params"] == vocab * 32  # the tied vocab x 32 embedding (debug=tiny)
        assert exp["metrics"]["train/steps"] == 4
    assert not (project / "metrics").exists(), "the queue runs in temporary copies, never in the workspace"


def test_an_experiment_runs_the_study_over_seeds_with_the_trainer_it_names(project: Path) -> None:
    """`dvc exp run -S trainer=... -S scale=... -S seeds=...` (README): the stages' matrix gives each seed its
    runs, and the trainer file decides how they train (here DDP in two CPU processes, the GPU path's code).
    Two seeds' pretraining and one fine-tuning (tests/test_report.py aggregates seeds' evaluations)."""
    overrides = ["families=[gru]", "seeds=[1,2]", "trainer=ddp_cpu", "scale=tiny"]
    shown = run(
        "exp", "run", *(arg for o in overrides for arg in ("-S", o)), "pretrain@gru-1", "finetune@gru-2", cwd=project
    )
    ran = set(re.findall(r"Running stage '([\w@-]+)'", shown))
    assert {"pretrain@gru-1", "pretrain@gru-2", "finetune@gru-2"} <= ran and "finetune@gru-1" not in ran, ran
    for seed in (1, 2):
        run_dir = project / f"data/runs/seed{seed}/pretrain/gru"
        config = yaml.safe_load((run_dir / ".hydra/config.yaml").read_text())
        assert config["trainer"]["strategy"] == "ddp" and config["trainer"]["devices"] == 2
        assert json.loads((run_dir / "run.json").read_text())["identity"]["batches"]["seed"] == seed
    finetuned = yaml.safe_load((project / "data/runs/seed2/finetune/gru/.hydra/config.yaml").read_text())
    assert finetuned["seed"] == 2 and finetuned["trainer"]["devices"] == 2  # the LHT key: finetune.seed
    assert finetuned["paths"]["runs_dir"] == "data/runs/seed2"  # finetune.checkpoint: its seed's pretraining run
    assert (project / "data/runs/seed2/finetune/gru-scratch/checkpoints/best.ckpt").is_file()
