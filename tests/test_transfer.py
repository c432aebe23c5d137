"""The transfer study (when does pretraining pay?): its report from evaluations with known accuracies, and
`dvc repro transfer/dvc.yaml` at tiny size after the main pipeline's data stages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from lmlab.config import ReportConfig
from lmlab.errors import LmlabError
from lmlab.transfer_report import PLOT, transfer_report
from tests.helpers.evaluations import write_evaluation
from tests.helpers.pipeline import shrink_training, write_tiny_datasets
from tests.helpers.project import ROOT, copy_files, copy_project, dvc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def config(root: Path) -> ReportConfig:
    return ReportConfig(
        study="transfer",
        transfer_dir=str(root / "metrics"),
        transfer_eval_dir=str(root / "eval"),
        out_dir=str(root / "reports"),
    )


def write_study(root: Path, family: str, accuracies: dict[int, float], scratch: float, collapsed: int = -1) -> None:
    for steps, acc in accuracies.items():
        name = f"{family}-{steps}"
        write_evaluation(
            root / "metrics" / f"{name}.json", root / "eval" / name, family, acc, scratch, steps == collapsed, steps
        )


def test_the_report_says_from_which_budget_pretraining_pays(tmp_path: Path) -> None:
    """A gain of 8 points on 1,000 documents is significant, 1 point is not; a collapsed classifier gets no
    verdict. The headline follows: the first budget from which every larger one beats from scratch."""
    write_study(tmp_path, "lstm", {30: 0.60, 300: 0.71, 3000: 0.78}, scratch=0.70, collapsed=30)
    write_study(tmp_path, "transformer", {30: 0.62, 300: 0.70, 3000: 0.69}, scratch=0.70)
    write_study(tmp_path, "gru", {30: 0.80, 300: 0.70}, scratch=0.70)
    report = transfer_report(config(tmp_path))
    text = report.read_text()
    assert (
        "- **lstm**: pretraining pays from 3,000 steps (3,072,000 tokens) on "
        "(collapsed at 30; no significant difference at 300; beats at 3,000)" in text
    )
    assert (
        "- **transformer**: pretraining does not pay at any budget up to 3,000 steps "
        "(trails at 30; no significant difference at 300, 3,000)" in text
    )
    assert "- **gru**: pretraining pays at some budgets, not from one on (beats at 30; " in text
    lstm = text[text.index("## lstm") : text.index("## transformer")]
    assert "| 0 (from scratch) | 0 | — | 0.700 [" in lstm
    assert "| 30 | 30,720 |" in lstm and "(collapsed)" in lstm
    assert "- 30 steps: **no verdict**" in lstm
    assert "- 300 steps: no significant difference" in lstm and "- 3,000 steps: pretrained beats from scratch" in lstm
    transformer = text[text.index("## transformer") :]
    assert "- 30 steps: pretrained trails from scratch by 8.0" in transformer
    assert (report.parent / PLOT).read_bytes().startswith(PNG_MAGIC)


def test_a_stray_file_or_a_missing_baseline_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    write_study(tmp_path, "lstm", {30: 0.60}, scratch=0.70)
    (tmp_path / "metrics" / "notes.json").write_text("{}")
    with pytest.raises(LmlabError, match=r"notes.json: not a transfer evaluation"):
        transfer_report(config(tmp_path))
    (tmp_path / "metrics" / "notes.json").unlink()
    metrics = tmp_path / "metrics" / "lstm-30.json"
    figures = json.loads(metrics.read_text())
    metrics.write_text(json.dumps({k: v for k, v in figures.items() if not k.startswith("scratch/")}))
    examples = tmp_path / "eval" / "lstm-30" / "examples.npz"
    saved = dict(np.load(examples))
    np.savez(examples, **{k: v for k, v in saved.items() if "scratch" not in k})
    with pytest.raises(LmlabError, match=r"lstm-30.json: no from-scratch classifier"):
        transfer_report(config(tmp_path))
    assert not (tmp_path / "reports").exists()
    with pytest.raises(LmlabError, match="no transfer evaluations"):
        transfer_report(config(tmp_path / "empty"))


def test_the_transfer_pipeline_reproduces_after_the_main_data_stages(tmp_path: Path) -> None:
    """`dvc repro transfer/dvc.yaml` at tiny size: the main pipeline's data stages it needs, a pretraining and
    a fine-tuning per budget, one from-scratch baseline, an evaluation per budget and the report; then a no-op.
    The main pipeline's training stages are not run."""
    root = copy_project(tmp_path / "project")
    write_tiny_datasets(root, tmp_path)
    shrink_training(root)
    params = {"data": "tiny", "task_data": "tiny_reviews", "tokenizer": {"type": "bpe", "vocab_size": 120}}
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())  # seeds, scale, trainer, budget as make run's
    (root / "params.yaml").write_text(yaml.safe_dump({**shipped, **params, "families": ["lstm"]}))
    copy_files(root, ("transfer/dvc.yaml", "transfer/params.yaml"))
    (root / "transfer/params.yaml").write_text(
        yaml.safe_dump({"families": ["lstm"], "steps": [2, 4], "finetune_steps": 4})
    )

    result = dvc("repro", "transfer/dvc.yaml", cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ran = re.findall(r"Running stage '([\w/.:@-]+)'", result.stdout)
    assert sorted(ran) == sorted(
        ["download_corpus", "download_task", "split_corpus", "split_task", "tokenize"]
        + [
            f"transfer/dvc.yaml:{stage}@lstm-{steps}"
            for stage in ("pretrain", "finetune", "evaluate")
            for steps in (2, 4)
        ]
        + ["transfer/dvc.yaml:scratch@lstm", "transfer/dvc.yaml:report"]
    )
    for steps in (2, 4):
        metrics = json.loads((root / f"transfer/metrics/lstm-{steps}.json").read_text())
        assert {"test/acc", "scratch/test/acc"} <= set(metrics)
        pretrained = json.loads((root / f"data/runs/transfer/pretrain/lstm-{steps}/metrics.json").read_text())
        assert pretrained["train/steps"] == steps
    report = (root / "reports/transfer/transfer.md").read_text()
    assert "| 2 | " in report and "| 4 | " in report and "| 0 (from scratch) | 0 |" in report
    assert (root / "reports/transfer" / PLOT).read_bytes().startswith(PNG_MAGIC)
    assert "Running stage" not in dvc("repro", "transfer/dvc.yaml", cwd=root).stdout
    assert not (root / "data/runs/pretrain").exists()
