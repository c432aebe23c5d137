"""Loading trained models back from Lightning checkpoints, safely (`weights_only=True`).

A pretraining checkpoint holds a language model; a fine-tuning checkpoint a
classifier on top of one. Both carry an ``lmlab`` section saying how to
rebuild the model (its config, vocabulary size, tokenized corpus, classes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmlab.core.errors import LmlabError
from lmlab.models import LanguageModel, ModelConfig, build_model, family_config
from lmlab.models.classifier import Classifier

SEED_FOLDER = re.compile(r"seed(?P<seed>\d+)")  # the pipelines' runs of one seed: seed<k>/<verb>/<run>/


@dataclass
class Checkpoint:
    model: LanguageModel
    corpus: dict[str, str]  # name, tokenizer, folder of the tokenized corpus it was trained on
    step: int


@dataclass
class ClassifierCheckpoint:
    model: Classifier
    classes: list[str]
    corpus: dict[str, str]
    max_tokens: int
    step: int


def training_command(path: Path, verb: str) -> str:
    """The command that trains the run `path` belongs to: the DVC stage where the path is a pipeline's run
    (`data/runs/seed<k>/<verb>/<run>/checkpoints/`: `dvc.yaml`'s, or `transfer/dvc.yaml`'s under
    `data/runs/transfer/`), else the verb."""
    run = path.parent.parent
    seed = SEED_FOLDER.fullmatch(run.parent.parent.name)
    above = run.parent.parent.parent  # data/runs, or data/runs/transfer
    pipeline = above.name == "runs" or (above.name == "transfer" and above.parent.name == "runs")
    if path.parent.name != "checkpoints" or run.parent.name != verb or seed is None or not pipeline:
        return f"`lmlab {verb}`"
    if above.name == "transfer":  # <family>-<steps>, or the seed's <family>-scratch baseline
        scratch = verb == "finetune" and run.name.endswith("-scratch")
        stage = f"scratch@{run.name.removesuffix('-scratch')}" if scratch else f"{verb}@{run.name}"
        return f"`dvc repro transfer/dvc.yaml:{stage}-{seed['seed']}`"
    return f"`dvc repro {verb}@{run.name.removesuffix('-scratch')}-{seed['seed']}`"


def read_checkpoint(path: Path, verb: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's contents; a missing file names the command that makes it (`training_command`)."""
    if not path.is_file():
        raise LmlabError(f"no checkpoint at {path}: train it first ({training_command(path, verb)})")
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated file, or one holding more than tensors and plain data
        raise LmlabError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from err
    extra = saved.get("lmlab") if isinstance(saved, dict) else None
    if extra is None or "model" not in extra:
        raise LmlabError(f"{path} is not an lmlab checkpoint (no 'lmlab' section)")
    return saved


def model_config(saved: dict[str, Any]) -> ModelConfig:
    """The family's config the checkpoint was trained with."""
    return family_config(saved["lmlab"]["model"])


def prefixed(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}


def load_language_model(path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """The model saved in a pretraining checkpoint, weights verified to load completely."""
    saved = read_checkpoint(path, "pretrain", map_location)
    if "classes" in saved["lmlab"]:
        raise LmlabError(
            f"{path} is a fine-tuning checkpoint; give a pretraining one (data/runs/seed<k>/pretrain/<family>/...)"
        )
    model = build_model(model_config(saved), saved["lmlab"]["vocab_size"])
    model.load_state_dict(prefixed(saved["state_dict"], "model."), strict=True)
    return Checkpoint(model.to(map_location), saved["lmlab"].get("corpus", {}), saved.get("global_step", 0))


def load_classifier(path: Path, map_location: str | torch.device = "cpu") -> ClassifierCheckpoint:
    """The classifier saved by `lmlab finetune`, weights verified to load completely."""
    saved = read_checkpoint(path, "finetune", map_location)
    extra = saved["lmlab"]
    if "classes" not in extra:
        raise LmlabError(
            f"{path} is a pretraining checkpoint; give a fine-tuning one (data/runs/seed<k>/finetune/<family>/...)"
        )
    head = extra["classifier"]
    model = Classifier(
        build_model(model_config(saved), extra["vocab_size"]),
        len(extra["classes"]),
        head["pooling"],
        head["head_hidden"],
        head["head_dropout"],
    )
    model.load_state_dict(prefixed(saved["state_dict"], "model."), strict=True)
    return ClassifierCheckpoint(
        model.to(map_location),
        list(extra["classes"]),
        extra["corpus"],
        extra["max_tokens"],
        saved.get("global_step", 0),
    )
