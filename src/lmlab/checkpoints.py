"""Loading a trained language model back from a Lightning checkpoint, safely (`weights_only=True`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from lmlab.config import ModelConfig
from lmlab.errors import LmlabError
from lmlab.models import LanguageModel, build_model


@dataclass
class Checkpoint:
    model: LanguageModel
    corpus: dict[str, str]  # name, tokenizer, folder of the tokenized corpus it was trained on
    step: int


def load_language_model(path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """The model saved in a pretraining checkpoint, weights verified to load completely."""
    if not path.is_file():
        family = path.parent.parent.name if path.parent.name == "checkpoints" else "<family>"
        raise LmlabError(f"no checkpoint at {path}: train it first (`dvc repro pretrain@{family}` or `lmlab pretrain`)")
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated file, or one holding more than tensors and plain data
        raise LmlabError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from err
    extra: dict[str, Any] | None = saved.get("lmlab") if isinstance(saved, dict) else None
    if extra is None or "model" not in extra:
        raise LmlabError(f"{path} is not an lmlab pretraining checkpoint (no 'lmlab' section)")
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), extra["model"]))
    model = build_model(cfg, extra["vocab_size"])
    weights = {k.removeprefix("model."): v for k, v in saved["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(weights, strict=True)
    return Checkpoint(model=model.to(map_location), corpus=extra.get("corpus", {}), step=saved.get("global_step", 0))
