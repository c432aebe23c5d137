"""The scaling study (`dvc repro scaling/dvc.yaml`) end to end at tiny size, and `lmlab scaling point`'s refusals."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from lmlab.cli.scaling import main as scaling_main
from lmlab.core import metrics as M
from tests.helpers.pipeline import shrink_training, write_tiny_datasets
from tests.helpers.project import ROOT, copy_files, copy_project, dvc, env

GRID = {
    "families": ["gru"],
    "widths": [16],
    "gated_deltanet": {"sizes": [{"width": 16, "head_dim": 4}]},
    "seeds": [1],
    "budgets": {"short": 4, "medium": 8, "long": 12},
    "val_every": 4,
    "position_windows": 4,
}


def test_the_scaling_study_runs_each_budget_on_from_the_last_and_reports(tmp_path: Path) -> None:
    """One wsd run per family and size through three budgets, each in its own folder starting from the one
    before's cooldown start, each end a point with its curve (the longest with its loss by position); the report
    names why two families of one size get no fit; then a no-op, and a stage run again resumes its finished runs."""
    root = copy_project(tmp_path / "project")
    write_tiny_datasets(root, tmp_path)
    shrink_training(root)
    params = {"data": "tiny", "task_data": "tiny_reviews", "tokenizer": {"type": "bpe", "vocab_size": 120}}
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump({**shipped, **params}))
    copy_files(root, ("scaling/dvc.yaml",))
    (root / "scaling/params.yaml").write_text(yaml.safe_dump(GRID))

    result = dvc("repro", "scaling/dvc.yaml", cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ran = re.findall(r"Running stage '([\w/.:@-]+)'", result.stdout)
    assert sorted(ran) == sorted(
        ["download_corpus", "download_task", "split_corpus", "split_task", "tokenize"]
        + ["scaling/dvc.yaml:pretrain@gru-16-1", "scaling/dvc.yaml:pretrain_gated_deltanet@size0-1"]
        + ["scaling/dvc.yaml:report"]
    )
    for family in ("gru", "gated_deltanet"):
        flops = []
        for steps in (4, 8, 12):
            point = json.loads((root / f"scaling/metrics/{family}-16-{steps}-s1.json").read_text())
            assert (point["family"], point["width"], point["budget"], point["seed"]) == (family, 16, steps, 1)
            assert point[M.TRAIN_STEPS] == steps and point["schedule"] == "wsd"
            assert [row[0] for row in point["curve"]][-1] == point[M.TRAIN_TOKENS]
            assert ("position" in point) == (steps == 12)
            flops.append(point[M.TRAIN_FLOPS])
        assert flops[0] < flops[1] < flops[2]
        runs = f"data/runs/scaling/seed1/{family}-16"
        for steps, before in ((8, 4), (12, 8)):  # each budget from the one before's cooldown start (wsd: 80%)
            log = (root / runs / str(steps) / "pretrain.log").read_text()
            assert f"resuming from {runs}/{before}/checkpoints/stable.ckpt" in log
    positions = json.loads((root / "scaling/metrics/gated_deltanet-16-12-s1.json").read_text())["position"]
    assert positions[0]["position_from"] == 0 and positions[-1]["position_to"] == 8  # the training window
    config = yaml.safe_load((root / "data/runs/scaling/seed1/gated_deltanet-16/12/.hydra/config.yaml").read_text())
    assert config["model"]["head_dim"] == 4 and config["optim"]["schedule"] == "wsd"
    report = (root / "reports/scaling/scaling.md").read_text()
    assert "gru: 3 configurations of 1 size; a scaling fit needs" in report
    assert "Running stage" not in dvc("repro", "scaling/dvc.yaml", cwd=root).stdout
    # the longest budget's command run again, as its stage reruns after a code edit: it resumes its own finished
    # run, not the checkpoint of the budget before that `continue_from` names (one command, not the stage's six)
    (command,) = [c for c in yaml.safe_load((root / "scaling/dvc.lock").read_text())["stages"]["pretrain@gru-16-1"][
        "cmd"] if "trainer.max_steps=12" in c]  # fmt: skip
    again = subprocess.run(command, shell=True, cwd=root, env=env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    log = (root / "data/runs/scaling/seed1/gru-16/12/pretrain.log").read_text()
    assert log.count("resuming from") == 2
    assert f"resuming from {root / 'data/runs/scaling/seed1/gru-16/12/checkpoints/last.ckpt'}" in log


def test_a_point_is_refused_with_the_reason_and_nothing_written(tmp_path: Path, capsys) -> None:
    out = tmp_path / "point.json"
    assert scaling_main(["point", str(tmp_path), "--budget", "1", "--out", str(out)]) == 2
    assert f"{tmp_path}: no metrics.json; give a finished pretraining run folder" in capsys.readouterr().err
    (tmp_path / "metrics.json").write_text(json.dumps({M.TEST_ACC: 0.5}))
    assert scaling_main(["point", str(tmp_path), "--budget", "1", "--out", str(out)]) == 2
    assert "no finished pretraining run" in capsys.readouterr().err
    assert not out.exists()
