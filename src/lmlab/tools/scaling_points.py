"""A finished pretraining run folder read as one point of the scaling study (``lmlab scaling point``; the file
format is `lmlab.analysis.scaling`'s), and what every reader of run folders shares (`lmlab.tools.scaling_runs`).
Imports no analysis: a study's training stages run it, and a report's edit must not rerun them."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import yaml

from lmlab.core import metrics as M
from lmlab.core.atomic import NUMBER, read_json
from lmlab.core.errors import LmlabError
from lmlab.core.rules import dotted

FIGURES = {M.VAL_LOSS: NUMBER, M.TRAIN_FLOPS: NUMBER, M.TRAIN_TOKENS: NUMBER, M.PARAMS: int, M.EMBEDDING_PARAMS: int}
END = (M.VAL_LOSS, M.TRAIN_FLOPS, M.TRAIN_TOKENS)  # what makes a pretraining run's end a point
HYDRA_CONFIG, RECORD, CURVE = Path(".hydra/config.yaml"), "run.json", "val_curve.csv"
REBUILD = "`lmlab pretrain` writes it at the end of a run; rerun that run, or leave its folder out"


def run_config(folder: Path) -> dict[str, Any]:
    """The run's config as dotted keys: Hydra's copy, else the identity its run.json records."""
    if (folder / HYDRA_CONFIG).is_file():
        return dotted(yaml.safe_load((folder / HYDRA_CONFIG).read_text()) or {})
    return dotted(read_json(folder / RECORD, REBUILD, {"identity": dict})["identity"])


def label(config: dict[str, Any], key: str, where: str, option: str | None) -> str:
    """The config's `key`, as text; a config without it is an error naming the `option` that names another key
    (None: the key is fixed, and the folder is no lmlab pretraining run)."""
    if config.get(key) is None:
        fix = f"name the key that holds it with {option}" if option else "give an lmlab pretraining run folder"
        raise LmlabError(f"{where}: its config has no {key}; {fix}")
    return str(config[key])


def curve(folder: Path) -> list[tuple[float, float, float]]:
    """The run's validations as (train/tokens, train/flops, val/loss), from its val_curve.csv (none without one)."""
    if not (folder / CURVE).is_file():
        return []
    with (folder / CURVE).open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(M.VAL_LOSS) and r.get(M.TRAIN_FLOPS)]
    return [(float(r[M.TRAIN_TOKENS]), float(r[M.TRAIN_FLOPS]), float(r[M.VAL_LOSS])) for r in rows]


def study_point(folder: Path, budget: float, position_windows: int, size_key: str = "model.width") -> dict[str, Any]:
    """A finished pretraining run as one point of the scaling study (`lmlab.analysis.scaling`'s metrics file):
    its end's figures, labels from its config, its validation curve, and with `position_windows` its last
    checkpoint's loss by position over the training window (Kaplan et al. 2020, Figure 7, right)."""
    figures = read_json(folder / "metrics.json", REBUILD, optional={**FIGURES, M.TRAIN_STEPS: int})
    missing = [key for key in (*END, M.PARAMS, M.EMBEDDING_PARAMS, M.TRAIN_STEPS) if key not in figures]
    if missing:
        raise LmlabError(f"{folder}/metrics.json has no {', '.join(missing)}: no finished pretraining run; {REBUILD}")
    config = run_config(folder)
    size = config.get(size_key)
    if not isinstance(size, int):
        raise LmlabError(
            f"{folder}: its config's {size_key} is {size!r}, not a whole number; name the size's key with --size-key"
        )
    point: dict[str, Any] = {
        "family": label(config, "model.family", str(folder), None),
        "width": size,
        "budget": budget,
        "seed": config.get("seed"),
        "schedule": config.get("optim.schedule"),
        **figures,
    }
    point["curve"] = [list(row) for row in curve(folder)] or None
    if position_windows:
        point["position"] = position_loss(folder, config, position_windows)
    return {key: value for key, value in point.items() if value is not None}


def position_loss(folder: Path, config: dict[str, Any], windows: int) -> list[dict[str, float]]:
    """The run's last checkpoint's mean test loss per log2 bucket of positions in windows of its training length,
    each read from a fresh state (`lmlab evaluate`'s loss by position)."""
    from lmlab.data.corpus import Corpus
    from lmlab.jobs.long_context import by_position, window_losses
    from lmlab.training.checkpoints import load_language_model

    checkpoint = folder / "checkpoints" / "last.ckpt"
    if not checkpoint.is_file():
        raise LmlabError(f"{folder} has no {checkpoint.relative_to(folder)}: {REBUILD}")
    loaded = load_language_model(checkpoint)
    if not loaded.corpus.get("folder") or not isinstance(config.get("batches.bptt"), int):
        raise LmlabError(
            f"{checkpoint} names no tokenized corpus, or its run's config no batches.bptt: not a pretraining run of "
            "this lmlab; measure its loss by position with `lmlab evaluate`, or leave out --position-windows"
        )
    corpus = Corpus.open(Path(loaded.corpus["folder"]))
    window = loaded.model.window(config["batches.bptt"])
    nats = window_losses(loaded.model.eval(), corpus.tokens("test"), window, windows, 16, "cpu")
    return by_position(nats)
