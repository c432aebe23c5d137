"""The transfer study (when does pretraining pay?): its report from evaluations with known accuracies, and
`dvc repro transfer/dvc.yaml` at tiny size after the main pipeline's data stages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from lmlab.analysis.config import ReportConfig
from lmlab.analysis.transfer import PLOT, write_report
from lmlab.core import metrics as M
from lmlab.core.atomic import published_together
from lmlab.core.errors import LmlabError
from tests.helpers.evaluations import write_evaluation
from tests.helpers.pipeline import shrink_training, write_tiny_datasets
from tests.helpers.project import ROOT, copy_files, copy_project, dvc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def config(root: Path, seeds: list[int] | None = None) -> ReportConfig:
    return ReportConfig(
        study="transfer",
        seeds=seeds,
        params_file=str(root / "params.yaml"),
        transfer_dir=str(root / "metrics"),
        transfer_eval_dir=str(root / "eval"),
        out_dir=str(root / "reports"),
    )


def write_study(
    root: Path, family: str, accuracies: dict[int, float], scratch: float, collapsed: int = -1, seed: int = 1337
) -> None:
    params = root / "params.yaml"  # the study's seeds, as transfer/params.yaml lists them
    seeds = yaml.safe_load(params.read_text())["seeds"] if params.is_file() else []
    params.write_text(yaml.safe_dump({"seeds": sorted({*seeds, seed})}))
    for steps, acc in accuracies.items():
        name = f"seed{seed}/{family}-{steps}"
        metrics, evaluated = root / "metrics" / f"{name}.json", root / "eval" / name
        write_evaluation(metrics, evaluated, family, acc, scratch, steps == collapsed, steps, seed)


def test_the_report_says_from_which_budget_pretraining_pays(tmp_path: Path) -> None:
    """A gain of 8 points on 1,000 documents is significant, 1 point is not; a collapsed classifier gets no
    verdict. The headline follows: the first budget from which every larger one beats from scratch."""
    write_study(tmp_path, "lstm", {30: 0.60, 300: 0.71, 3000: 0.78}, scratch=0.70, collapsed=30)
    write_study(tmp_path, "transformer", {30: 0.62, 300: 0.70, 3000: 0.69}, scratch=0.70)
    write_study(tmp_path, "gru", {30: 0.80, 300: 0.70}, scratch=0.70)
    report = write_report(config(tmp_path))
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


def test_several_seeds_give_t_intervals_and_a_verdict_from_their_spread(tmp_path: Path) -> None:
    """Each seed's chain (pretraining, fine-tuning, its own from-scratch baseline): the difference is paired by
    seed, and the verdict follows the seeds' spread, not any one seed's bootstrap."""
    gains = {1: (0.74, 0.66), 2: (0.75, 0.74), 3: (0.73, 0.71)}  # seed -> accuracy at 300 and 3,000 steps
    for seed, (at300, at3000) in gains.items():
        write_study(tmp_path, "lstm", {300: at300, 3000: at3000}, scratch=0.70, seed=seed)
    text = write_report(config(tmp_path)).read_text()
    assert "3 seeds (1, 2, 3): the mean and a t-interval over the seeds" in text
    # 300 steps: gains 4, 5, 3 points: mean 4.0, t(2) 4.303 x sd 1.0 / sqrt(3) = 2.48 either side
    assert "- 300 steps: pretrained beats from scratch by 4.0 [1.5, 6.5] accuracy points" in text, text
    assert "| 300 | 307,200 |" in text and "0.740 [0.715, 0.765]" in text
    # 3,000 steps: -4, +4, +1 points: the seeds disagree, so no verdict whatever each seed's bootstrap says
    assert "- 3,000 steps: no significant difference between pretrained and from scratch (0.3 [" in text
    assert "- **lstm**: pretraining pays at some budgets, not from one on" in text

    only = write_report(config(tmp_path, seeds=[2])).read_text()
    assert "one seed (2): a bootstrap" in only and "by 5.0 [" in only

    (tmp_path / "metrics/seed3/lstm-3000.json").unlink()
    with pytest.raises(LmlabError, match=r"seed3 lacks lstm-3000.json, which seed1 has.*evaluate@lstm-3000-3"):
        write_report(config(tmp_path))
    with pytest.raises(LmlabError, match=r"seed3 lacks lstm-3000.json, which seed1 has.*evaluate@lstm-3000-3"):
        write_report(config(tmp_path, seeds=[3, 1]))  # the first seed lacking what a later one has
    with pytest.raises(LmlabError, match=r"seeds=\[1, 1\] names a seed twice"):
        write_report(config(tmp_path, seeds=[1, 1]))
    (tmp_path / "params.yaml").write_text("seeds: [1, 2, 4]\n")  # a seed listed but not run
    with pytest.raises(LmlabError, match=r"no transfer evaluations in .*seed4: run `dvc repro transfer/dvc.yaml`"):
        write_report(config(tmp_path))


def test_a_stray_file_or_a_missing_baseline_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    write_study(tmp_path, "lstm", {30: 0.60}, scratch=0.70)
    (tmp_path / "metrics/seed1337/notes.json").write_text("{}")
    with pytest.raises(LmlabError, match=r"notes.json: not a transfer evaluation"):
        write_report(config(tmp_path))
    (tmp_path / "metrics/seed1337/notes.json").unlink()
    metrics, evaluated = tmp_path / "metrics/seed1337/lstm-30.json", tmp_path / "eval/seed1337/lstm-30"
    figures, saved = json.loads(metrics.read_text()), dict(np.load(evaluated / "examples.npz"))
    with published_together(evaluated / M.EVALUATION_MANIFEST) as written:  # an evaluation with no baseline
        metrics.write_text(json.dumps({k: v for k, v in figures.items() if not k.startswith("scratch/")}))
        np.savez(evaluated / "examples.npz", **{k: v for k, v in saved.items() if "scratch" not in k})
        written |= {"metrics": metrics, "examples": evaluated / "examples.npz"}
        written |= {"sample": evaluated / "sample.txt", "setting": evaluated / "setting.json"}
    with pytest.raises(LmlabError, match=r"lstm-30.json: no from-scratch classifier"):
        write_report(config(tmp_path))
    assert not (tmp_path / "reports").exists()
    with pytest.raises(LmlabError, match="no transfer evaluations"):
        write_report(config(tmp_path / "empty"))


def test_the_transfer_pipeline_reproduces_after_the_main_data_stages(tmp_path: Path) -> None:
    """`dvc repro transfer/dvc.yaml` at tiny size, one budget at two seeds: the main pipeline's data stages it
    needs, a pretraining, a fine-tuning and an evaluation per budget and seed, one from-scratch baseline per seed
    and the report; then a no-op. Each seed's chain is seeded by it. The main pipeline's training stages are not
    run."""
    root = copy_project(tmp_path / "project")
    write_tiny_datasets(root, tmp_path)
    shrink_training(root)
    params = {"data": "tiny", "task_data": "tiny_reviews", "tokenizer": {"type": "bpe", "vocab_size": 120}}
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())  # seeds, scale, trainer, budget as make run's
    (root / "params.yaml").write_text(yaml.safe_dump({**shipped, **params, "families": ["lstm"]}))
    copy_files(root, ("transfer/dvc.yaml", "transfer/params.yaml"))
    (root / "transfer/params.yaml").write_text(
        yaml.safe_dump({"families": ["lstm"], "seeds": [1, 2], "steps": [3], "finetune_steps": 4})
    )

    result = dvc("repro", "transfer/dvc.yaml", cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ran = re.findall(r"Running stage '([\w/.:@-]+)'", result.stdout)
    assert sorted(ran) == sorted(
        ["download_corpus", "download_task", "split_corpus", "split_task", "tokenize"]
        + [
            f"transfer/dvc.yaml:{stage}@lstm-3-{seed}"
            for stage in ("pretrain", "finetune", "evaluate")
            for seed in (1, 2)
        ]
        + ["transfer/dvc.yaml:scratch@lstm-1", "transfer/dvc.yaml:scratch@lstm-2", "transfer/dvc.yaml:report"]
    )
    for seed in (1, 2):
        metrics = json.loads((root / f"transfer/metrics/seed{seed}/lstm-3.json").read_text())
        assert {"test/acc", "scratch/test/acc"} <= set(metrics)
        runs = root / f"data/runs/transfer/seed{seed}"
        assert json.loads((runs / "pretrain/lstm-3/metrics.json").read_text())["train/steps"] == 3
        for run, key in (
            ("pretrain/lstm-3", "batches"),
            ("finetune/lstm-3", "finetune"),
            ("finetune/lstm-scratch", "finetune"),
        ):
            assert json.loads((runs / run / "run.json").read_text())["identity"][key]["seed"] == seed
    report = (root / "reports/transfer/transfer.md").read_text()
    assert "| 3 | " in report and "| 0 (from scratch) | 0 |" in report
    assert "2 seeds (1, 2): the mean and a t-interval over the seeds" in report
    assert (root / "reports/transfer" / PLOT).read_bytes().startswith(PNG_MAGIC)
    assert "Running stage" not in dvc("repro", "transfer/dvc.yaml", cwd=root).stdout
    assert not (root / "data/runs/pretrain").exists()
