"""A tiny pipeline for DVC tests: local datasets, tiny models and a few steps; the stages run as shipped."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import yaml

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


def edit_yaml(path: Path, **values: object) -> None:
    config = yaml.safe_load(path.read_text())
    config.update(values)
    path.write_text(yaml.safe_dump(config))


def shrink_training(root: Path) -> None:
    """The verbs' defaults take `debug=tiny` (and `finetune=tiny`), cut to 4 steps: the stages run as shipped,
    only smaller."""
    for verb in ("pretrain", "finetune"):
        config = root / f"conf/{verb}.yaml"
        text = config.read_text().replace("  - debug: null", "  - debug: tiny")
        config.write_text(text.replace("  - finetune: default", "  - finetune: tiny"))
    tiny = root / "conf/debug/tiny.yaml"
    settings = yaml.safe_load(tiny.read_text())
    settings["trainer"].update(max_steps=4, val_every=2, log_every=1)
    tiny.write_text("# @package _global_\n" + yaml.safe_dump(settings))
    edit_yaml(
        root / "conf/evaluate.yaml",
        batch_size=2,
        window=8,
        speed_tokens=64,
        generate_tokens=4,
        threads=1,
        position_windows=8,
        generation_lengths=[32, 64],
    )


def write_tiny_datasets(root: Path, tmp_path: Path) -> None:
    """conf/data/tiny.yaml (40 local text files) and conf/task_data/tiny_reviews.yaml (a 200-row csv), and a BPE
    tokenizer without byte fallback (the tiny corpus is too small for 256 byte pieces)."""
    write_corpus(tmp_path / "corpus", documents=40)
    write_reviews(tmp_path / "reviews.csv", rows=200)
    configs = {
        "data/tiny.yaml": {
            "name": "tiny",
            "source": {"kind": "local", "path": str(tmp_path / "corpus"), "members": ["*.txt"]},
            "reader": {"format": "text", "files": {"all": "*.txt"}},
            "split": {"val_fraction": 0.1, "test_fraction": 0.1, "seed": 7},
        },
        "task_data/tiny_reviews.yaml": {
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
        },
    }
    for name, config in configs.items():
        (root / "conf" / name).write_text(yaml.safe_dump(config))
    bpe = root / "conf/tokenizer/bpe.yaml"
    bpe.write_text(bpe.read_text() + "byte_fallback: false\n")
