"""DVC experiments with Hydra composition: `dvc exp run` composes conf/pipeline.yaml into params.yaml,
`-S` overrides are Hydra overrides of it, and `--queue` with a sweep queues one experiment per value.

It runs in a temporary copy of the project on a tiny local corpus (the data setup of
tests/helpers/pipeline.py). The workspace runs the data stages once; the queued experiments
target `pretrain@gru`, so each one reruns only what its changed key reaches: the tokenizer and
one family's pretraining.
"""

from __future__ import annotations

import json
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
    """Whether the repo's DVC config (`dvc config --list`) composes conf/pipeline.yaml into params.yaml."""
    result = dvc("config", "--list", cwd=cwd)
    assert result.returncode == 0, result.stderr
    settings = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return settings.get("hydra.enabled", "").lower() == "true" and settings.get("hydra.config_name") == "pipeline"


def test_params_yaml_is_the_composed_pipeline_config() -> None:
    """`dvc exp run` rewrites params.yaml from conf/pipeline.yaml; `dvc repro` reads it as is: they must agree."""
    assert composes_pipeline(ROOT), "enable it in .dvc/config: hydra.enabled = true, hydra.config_name = pipeline"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
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
    pipeline = yaml.safe_load((root / "conf/pipeline.yaml").read_text())
    pipeline.update(data="tiny", task_data="tiny_reviews", tokenizer={"type": "bpe", "vocab_size": 120})
    (root / "conf/pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    assert composes_pipeline(root), "enable it in .dvc/config: hydra.enabled = true, hydra.config_name = pipeline"
    git("add", "-A", cwd=root)
    git("commit", "-qm", "tiny pipeline", cwd=root)
    return root


def experiments(root: Path) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json`, as experiment name -> its params.yaml and pretrain@gru metrics."""
    shown = json.loads(run("exp", "show", "--json", cwd=root))
    found = {}
    for baseline in shown:
        for exp in baseline["experiments"] or []:
            data = exp["revs"][0]["data"]
            found[exp["name"]] = {
                "params": data["params"]["params.yaml"]["data"],
                "metrics": data["metrics"]["metrics/pretrain/gru.json"]["data"],
            }
    return found


def test_a_queued_grid_of_hydra_overrides_runs_one_experiment_per_value(project: Path) -> None:
    run("exp", "run", "tokenize", cwd=project)  # the baseline's data, in the workspace: the experiments reuse it
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["data"] == "tiny" and params["tokenizer"]["vocab_size"] == 120, "params.yaml was not composed"
    git("add", "-A", cwd=project)
    git("commit", "-qm", "baseline", cwd=project)

    queued = run("exp", "run", "--queue", "pretrain@gru", "-S", "tokenizer.vocab_size=100,140", cwd=project)
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
