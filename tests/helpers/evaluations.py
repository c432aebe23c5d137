"""What `lmlab evaluate` writes for one evaluation, made up with known accuracies: the reports' tests read it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmlab.analysis.examples import Examples
from lmlab.core import metrics as M
from lmlab.core.atomic import published_together

DOCS = 1000  # test documents: a 4-point gain on 1,000 is significant, a 1-point one is not


def predictions(labels: np.ndarray, acc: float, seed: int) -> np.ndarray:
    """Predictions right for a random `acc` share of the documents, wrong (the other class) for the rest."""
    right = np.random.default_rng(seed).permutation(len(labels)) < round(acc * len(labels))
    return np.where(right, labels, 1 - labels)


def write_evaluation(
    metrics_file: Path,
    evaluated: Path,
    family: str,
    acc: float,
    scratch_acc: float,
    collapsed: bool = False,
    steps: int = 300,
    seed: int = 1337,
    curves: dict[str, str] | None = None,
) -> None:
    """The metrics file and the evaluation folder (sample, per-example record, Setting) of a family pretrained
    `steps` steps, with per-example records that give `acc` and `scratch_acc`, and the `curves` (name: CSV text)
    in `<metrics_file's folder>/curves/<family>/`; published as one set, as `lmlab evaluate` does."""
    evaluated.mkdir(parents=True)
    with published_together(evaluated / M.EVALUATION_MANIFEST) as written:
        for name, text in (curves or {}).items():
            path = written.setdefault(M.curve_role(name), metrics_file.parent / "curves" / family / f"{name}.csv")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        write_files(metrics_file, evaluated, family, acc, scratch_acc, collapsed, steps, seed)
        written |= {"metrics": metrics_file, "sample": evaluated / "sample.txt"}
        written |= {"examples": evaluated / "examples.npz", "setting": evaluated / "setting.json"}


def write_files(
    metrics_file: Path,
    evaluated: Path,
    family: str,
    acc: float,
    scratch_acc: float,
    collapsed: bool,
    steps: int,
    seed: int,
) -> None:
    labels = (np.arange(DOCS) % 5 < 3).astype(np.int64)  # 60% class 1: the majority baseline scores 0.600
    pretrained = np.ones(DOCS, np.int64) if collapsed else predictions(labels, acc, 1)
    scratch = predictions(labels, scratch_acc, 2)
    metrics = {
        "model/params": 1_400_000,
        "train/wall_seconds": 31.5,
        "train/tokens_per_sec": 12_000.0,
        "infer/tokens_per_sec": 40_000.0,
        "infer/ms_per_generated_token": 1.5,
        "val/ppl": 300.0,
        "test/ppl": 320.0,
        "test/bpb": 1.8,
        "test/acc": float(np.mean(pretrained == labels)),
        "test/f1": acc - 0.05,
        "scratch/test/acc": float(np.mean(scratch == labels)),
        "scratch/test/f1": scratch_acc - 0.05,
    }
    metrics_file.parent.mkdir(parents=True, exist_ok=True)
    metrics_file.write_text(json.dumps(metrics))
    (evaluated / "sample.txt").write_text(f"a {family} sample\n")
    block_nats = np.random.default_rng(3).gamma(50, 0.12, size=200) * 256  # about 6 nats per token
    Examples(block_nats, np.full(200, 256), labels, 1, {"test/": pretrained, "scratch/test/": scratch}).save(
        evaluated / "examples.npz"
    )
    setting = {
        "corpus": {"name": "sotu", "tokens": {"train": 90_000, "test": 51_200}, "bytes": {"test": 204_800}},
        "labeled": {"name": "reviews", "classes": ["neg", "pos"], "documents": {"test": DOCS}},
        "tokenizer": "bpe8000",
        "pretraining": {
            "steps": steps,
            "tokens": steps * 1024,
            "flops": steps * 1024 * 3e6 * (1.5 if family == "transformer" else 1.0),
            "seed": seed,
            "accelerator": "cpu",
            "precision": "32-true",
        },
        "fine-tuning seeds": {"test/": seed, "scratch/test/": seed},
        "evaluation": {"device": "cpu", "test tokens": 51_200, "test documents": DOCS, "prompt": "The year began"},
        "commit": "0123456789ab",
    }
    (evaluated / "setting.json").write_text(json.dumps(setting))
