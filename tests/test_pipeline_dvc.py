"""`dvc repro` of the pipeline on a tiny local dataset and tiny models, in a temporary copy of the project."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers.project import copy_project, dvc

FAMILIES = ("rnn", "lstm", "gru", "transformer")
DATA_STAGES = ["download_corpus", "download_task", "split_corpus", "split_task", "tokenize"]
PRETRAIN_STAGES = [f"pretrain@{family}" for family in FAMILIES]
LATER_STAGES = [f"{stage}@{family}" for stage in ("finetune", "evaluate") for family in FAMILIES] + ["report"]

WORDS = (
    "state union congress nation people law war peace trade tax school road farm bank court "
    "army navy treaty budget freedom justice labor health energy"
).split()


def write_corpus(folder: Path, documents: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for i in range(documents):
        lines = [" ".join(rng.choices(WORDS, k=rng.randint(5, 15))).capitalize() + "." for _ in range(8)]
        (folder / f"doc{i:03d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_reviews(path: Path, rows: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["category", "text", "movie_name"])
        for i in range(rows):
            label = rng.choice(["fresh", "rotten", "plot"])
            writer.writerow([label, " ".join(rng.choices(WORDS, k=12)), f"movie{i % 17}"])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = copy_project(tmp_path / "project")
    write_corpus(tmp_path / "corpus", documents=40)
    write_reviews(tmp_path / "reviews.csv", rows=200)
    (root / "conf/data/tiny.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "source": {"kind": "local", "path": str(tmp_path / "corpus"), "members": ["*.txt"]},
                "reader": {"format": "text", "files": {"all": "*.txt"}},
                "split": {"val_fraction": 0.1, "test_fraction": 0.1, "seed": 7},
            }
        )
    )
    (root / "conf/task_data/tiny_reviews.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "tiny_reviews",
                "source": {"kind": "local", "path": str(tmp_path / "reviews.csv")},
                "reader": {
                    "format": "csv",
                    "files": {"all": "reviews.csv"},
                    "text_field": "text",
                    "label_field": "category",
                    "group_field": "movie_name",
                    "label_map": {"rotten": "negative", "fresh": "positive"},
                },
                "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 7},
            }
        )
    )
    (root / "conf/tokenizer/bpe.yaml").write_text(
        (root / "conf/tokenizer/bpe.yaml").read_text().replace("byte_fallback: true", "byte_fallback: false")
    )
    shrink_training(root)
    write_params(root, vocab_size=120)
    return root


def edit_yaml(path: Path, **values: object) -> None:
    config = yaml.safe_load(path.read_text())
    config.update(values)
    path.write_text(yaml.safe_dump(config))


def shrink_training(root: Path) -> None:
    """Tiny models and a few steps: the stages run as shipped, only smaller."""
    for family in FAMILIES:
        edit_yaml(root / f"conf/model/{family}.yaml", layers=1, width=16, embed_dim=None, heads=2, context=16)
    edit_yaml(root / "conf/task/pretrain.yaml", batch_size=2, bptt=8, val_batch_size=2, val_max_tokens=512)
    edit_yaml(root / "conf/trainer/cpu.yaml", max_steps=4, val_every=2, log_every=1, threads=1)
    edit_yaml(
        root / "conf/task/finetune.yaml",
        batch_size=4,
        val_batch_size=8,
        max_tokens=16,
        adapt_steps=2,
        adapt_batch_size=2,
        adapt_bptt=8,
    )
    finetune = root / "conf/finetune.yaml"
    finetune.write_text(
        finetune.read_text().replace("max_steps: 300", "max_steps: 4").replace("val_every: 100", "val_every: 2")
    )
    edit_yaml(root / "conf/evaluate.yaml", batch_size=2, window=8, speed_tokens=64, generate_tokens=4, threads=1)


def write_params(root: Path, vocab_size: int) -> None:
    params = {
        "data": "tiny",
        "task_data": "tiny_reviews",
        "tokenizer": {"type": "bpe", "vocab_size": vocab_size},
        "families": list(FAMILIES),
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def repro(root: Path, *targets: str) -> list[str]:
    result = dvc("repro", *targets, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    return re.findall(r"Running stage '([\w@]+)'", result.stdout)


def test_repro_builds_every_stage_then_reruns_only_what_changed(project: Path) -> None:
    """The main job, `make run`, on a tiny configuration: from the download to the comparison report."""
    assert sorted(repro(project)) == sorted(DATA_STAGES + PRETRAIN_STAGES + LATER_STAGES)

    out = project / "data/tokenized/tiny-bpe120"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["vocab_size"] == 120 and meta["dtype"] == "uint16"
    split_meta = json.loads((project / "data/splits/tiny/meta.json").read_text())
    assert sum(s["documents"] for s in split_meta["splits"].values()) == 40
    for split in ("train", "val", "test"):
        tokens = np.memmap(out / f"{split}.bin", dtype=meta["dtype"], mode="r")
        assert len(tokens) == meta["splits"][split]["tokens"] > 0
        assert int((tokens == meta["special_ids"]["eod"]).sum()) == split_meta["splits"][split]["documents"]
        labels = np.load(out / "task" / f"{split}.labels.npy")
        assert len(labels) == meta["task"]["splits"][split]["documents"] > 0
    assert (project / "data/raw/tiny/source.json").exists()
    for family in FAMILIES:
        metrics = json.loads((project / f"metrics/pretrain/{family}.json").read_text())
        assert metrics["train/steps"] == 4 and metrics["val/loss"] > 0
        assert metrics["train/tokens"] == 4 * 2 * (8 if family != "transformer" else 16)
        run = project / f"data/runs/pretrain/{family}"
        assert (run / "checkpoints/last.ckpt").is_file() and (run / ".hydra/config.yaml").is_file()
        assert list(run.glob("wandb/offline-run-*/run-*.wandb"))  # the default logger: W&B, offline
    for verb in ("pretrain", "finetune", "evaluate", "report"):  # each stage writes into its own folders
        assert not (project / "outputs" / verb).exists()
    for family in FAMILIES:
        metrics = json.loads((project / f"metrics/{family}.json").read_text())
        for key in ("test/ppl", "test/bpb", "test/acc", "test/f1", "scratch/test/acc", "scratch/test/f1"):
            assert isinstance(metrics[key], float), (family, key)
        assert (
            metrics["model/params"]
            == json.loads((project / f"metrics/pretrain/{family}.json").read_text())["model/params"]
        )
        assert (project / f"data/runs/finetune/{family}-scratch/checkpoints/best.ckpt").is_file()
    report = (project / "reports/comparison.md").read_text()
    assert all(f"| {family} |" in report for family in FAMILIES)
    assert len(list((project / "reports").glob("*.png"))) == 4
    plots = dvc("plots", "show", "--json", cwd=project)
    assert plots.returncode == 0 and "metrics/curves/gru/pretrain.csv" in plots.stdout, plots.stderr

    assert repro(project) == []  # nothing changed: a no-op

    write_params(project, vocab_size=140)
    assert sorted(repro(project, *PRETRAIN_STAGES)) == sorted(["tokenize", *PRETRAIN_STAGES])
    assert json.loads((project / "data/tokenized/tiny-bpe140/meta.json").read_text())["vocab_size"] == 140
    assert json.loads((project / "metrics/pretrain/gru.json").read_text())["model/embedding_params"] == 140 * 16


def test_editing_one_family_reruns_only_that_family(project: Path) -> None:
    repro(project, *PRETRAIN_STAGES)
    edit_yaml(project / "conf/model/gru.yaml", width=24)
    assert repro(project, *PRETRAIN_STAGES) == ["pretrain@gru"]
    metrics = json.loads((project / "metrics/pretrain/gru.json").read_text())
    assert metrics["model/embedding_params"] == 120 * 24 and metrics["train/steps"] == 4


def test_editing_a_split_param_reruns_split_and_tokenize_only(project: Path) -> None:
    repro(project, *PRETRAIN_STAGES)
    config = project / "conf/data/tiny.yaml"
    config.write_text(config.read_text().replace("seed: 7", "seed: 8"))
    assert sorted(repro(project, *PRETRAIN_STAGES)) == sorted(["split_corpus", "tokenize", *PRETRAIN_STAGES])
