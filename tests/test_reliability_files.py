"""Files lmlab wrote and reads back (token streams, a run's run.json and metrics.json, a sweep's state): damaged
by hand, a full disk or an older version, each is an LmlabError naming the file, what is wrong and what rebuilds
it; the corpus and labeled-set files are tested with their readers (test_lm_data.py, test_labeled_data.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmlab.core import metrics as M
from lmlab.core.errors import LmlabError
from lmlab.jobs.evaluate import read_metrics
from lmlab.tools.sweep import load_config, open_sweep, read_results, sweep_id
from lmlab.training.runs import RunFolder
from tests.helpers.project import ROOT, lmlab
from tests.helpers.tiny_lm import tiny_overrides, write_corpus


def test_pretraining_on_a_truncated_token_file_exits_nonzero_naming_it(tmp_path: Path) -> None:
    """The issue's case: `train.bin` cut to 100 bytes trained on 50 tokens and exited 0."""
    corpus = write_corpus(tmp_path / "data")
    (corpus / "train.bin").write_bytes((corpus / "train.bin").read_bytes()[:100])
    overrides = [*tiny_overrides(max_steps=2, val_every=2), "logger=none", f"paths.data_dir={tmp_path / 'data'}"]
    result = lmlab("pretrain", *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert f"{corpus / 'train.bin'} holds 50 tokens, but {corpus / 'meta.json'} says 20,000" in result.stderr
    assert "dvc repro tokenize" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{", r"is not valid JSON"),
        ('{"fingerprint": "abc", "identity": {}}', r"has no key 'wandb_id'"),
        ('{"wandb_id": "x1", "fingerprint": 7, "identity": {}}', r"'fingerprint' is 7, not a string"),
    ],
    ids=["not-json", "no-id", "fingerprint-number"],
)
def test_a_damaged_run_json_names_it_and_how_to_start_over(tmp_path: Path, content: str, problem: str) -> None:
    run = RunFolder(tmp_path / "run")
    assert run.read_record() == {}  # none yet: a new run
    run.path.mkdir()
    run.record.write_text(content)
    with pytest.raises(LmlabError, match=problem) as caught:
        run.read_record()
    assert str(run.record) in str(caught.value) and "resume=never" in str(caught.value)


FIGURES = {M.TRAIN_TOKENS_PER_SEC: 1.0, M.TRAIN_WALL_SECONDS: 2.0, M.TRAIN_TOKENS: 3}  # and best/val/loss


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", r"is not valid JSON"),
        (json.dumps(FIGURES), rf"has no key '{M.BEST_VAL_LOSS}'"),
        (json.dumps(FIGURES | {M.BEST_VAL_LOSS: None}), rf"'{M.BEST_VAL_LOSS}' is None, not a number"),
    ],
    ids=["empty", "no-best", "null-best"],
)
def test_evaluate_names_a_damaged_run_metrics_json(tmp_path: Path, content: str, problem: str) -> None:
    """`lmlab evaluate` reads the pretraining run's figures; a damaged file was a bare KeyError or JSONDecodeError."""
    (tmp_path / "metrics.json").write_text(content)
    with pytest.raises(LmlabError, match=problem) as caught:
        read_metrics(tmp_path)
    assert str(tmp_path / "metrics.json") in str(caught.value) and "dvc repro" in str(caught.value)
    (tmp_path / "metrics.json").unlink()
    with pytest.raises(LmlabError, match=r"no .*metrics\.json: .*run .*again"):
        read_metrics(tmp_path)


def test_a_damaged_sweep_state_or_trial_metrics_names_the_file(tmp_path: Path) -> None:
    path = ROOT / "sweeps" / "smoke.yaml"
    folder = tmp_path / sweep_id(path, load_config(path))
    folder.mkdir()
    (folder / "sweep.json").write_text('{"file": "sweeps/smoke.yaml", "trials": {"0": {}}}')
    with pytest.raises(LmlabError, match=r"sweep\.json: 'trials' is \{.*\}, not a list") as caught:
        open_sweep(path, tmp_path, ROOT / "conf")
    assert str(folder / "sweep.json") in str(caught.value) and "to start the sweep over" in str(caught.value)
    (folder / "sweep.json").write_text('{"trials": [{"index": 0}]}')
    with pytest.raises(LmlabError, match=r"sweep\.json: a trial does not read back .*missing .*'run_id'"):
        open_sweep(path, tmp_path, ROOT / "conf")

    (folder / "metrics.json").write_text('["val/loss", 2.5]')
    with pytest.raises(LmlabError, match=r"metrics\.json holds a JSON list, not an object"):
        read_results(folder)


def test_best_so_far_survives_a_moved_run_folder(tmp_path: Path) -> None:
    """Resuming a run whose folder moved kept Lightning from reloading the best score (it only warned "dirpath has
    changed"), so the next validation replaced a better best.ckpt; the checkpoints' state now follows the folder."""
    import warnings

    from lightning.pytorch.callbacks import ModelCheckpoint

    from lmlab.training.callbacks import RunCheckpoint

    old, new = tmp_path / "old" / "checkpoints", tmp_path / "new" / "checkpoints"
    saved = ModelCheckpoint(dirpath=old, filename="best", monitor="val/loss", save_top_k=1)
    saved.best_model_score, saved.best_model_path = torch.tensor(7.2632), str(old / "best.ckpt")
    saved.best_k_models = {str(old / "best.ckpt"): torch.tensor(7.2632)}
    moved = RunCheckpoint(dirpath=new, filename="best", monitor="val/loss", save_top_k=1)
    assert moved.state_key == saved.state_key  # the state a checkpoint holds for it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "dirpath has changed" warning
        moved.load_state_dict(saved.state_dict())
    assert float(moved.best_model_score) == pytest.approx(7.2632)
    assert moved.best_model_path == str(new / "best.ckpt") and list(moved.best_k_models) == [str(new / "best.ckpt")]
