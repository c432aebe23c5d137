"""Pretraining runs read back as scaling points for `lmlab scaling`, wherever they were made.

A folder is searched for lmlab run folders (a metrics.json beside the run's config: ``.hydra/config.yaml``, or
``run.json``'s identity in a run kept aside as ``<name>.<time>``, e.g. a wsd run's shorter budget); those whose
metrics.json holds no pretraining figures (fine-tuning runs) are left out. A folder holding none is read as W&B
runs (`lmlab compare`'s reader, `lmlab.tools.wandb_runs`), and so is a W&B project (`--project`, e.g. a sweep's
runs). A run's family and size come from its config (``--family-key``, ``--size-key``); its non-embedding
parameters from its figures (W&B runs lack model/embedding_params, so only L(C) is fitted for them).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lmlab.analysis.configurations import Point
from lmlab.analysis.scaling import Measured
from lmlab.core import metrics as M
from lmlab.core.atomic import read_json
from lmlab.core.errors import LmlabError
from lmlab.tools.scaling_points import END, FIGURES, HYDRA_CONFIG, REBUILD, RECORD, curve, label, run_config
from lmlab.tools.wandb_runs import Filters, Run, load_runs, number

SHOWN = 5  # runs left out named in the report's note; the rest counted
CURVE_NOTE = (
    "Validation-curve points are fitted with the runs' ends (`--curves`): a point of a run with a decaying "
    "schedule (cosine: {runs}) before its end is not the loss of a run of that length (Chinchilla's caveat); the "
    "frontier they give is an upper bound."
)


def run_folders(path: Path) -> list[Path]:
    """The lmlab run folders under `path`: a metrics.json beside a config or a run record."""
    found = {m.parent for m in path.rglob("metrics.json") if (m.parent / HYDRA_CONFIG).is_file()}
    found |= {m.parent for m in path.rglob("metrics.json") if (m.parent / RECORD).is_file()}
    return sorted(found)


def non_embedding(params: Any, embedding: Any) -> int | None:
    return int(params - embedding) if number(params) is not None and number(embedding) is not None else None


def folder_run(folder: Path, family_key: str, size_key: str, curves: bool) -> tuple[list[Point], Any] | None:
    """The run's end (and with `curves` its validations) as points, and its curve to draw; None: no pretraining
    run."""
    figures = read_json(folder / "metrics.json", REBUILD, optional=FIGURES)
    if not all(key in figures for key in END):
        return None
    config = run_config(folder)
    family = label(config, family_key, str(folder), "--family-key")
    size = label(config, size_key, str(folder), "--size-key")
    params = non_embedding(figures.get(M.PARAMS), figures.get(M.EMBEDDING_PARAMS))
    end = Point(family, size, params, figures[M.TRAIN_FLOPS], figures[M.TRAIN_TOKENS], figures[M.VAL_LOSS], str(folder))
    validations = curve(folder)
    return [end, *along(end, validations, curves)], (config.get("optim.schedule"), validations)


def along(end: Point, curve: list[tuple[float, float, float]], curves: bool) -> list[Point]:
    """The curve's validations before the run's end, as points flagged as such (only with `curves`)."""
    if not curves:
        return []
    return [
        Point(end.family, end.size, end.params, flops, tokens, loss, end.run, final=False)
        for tokens, flops, loss in curve
        if flops < end.flops and math.isfinite(loss)
    ]


def wandb_run(run: Run, family_key: str, size_key: str, curves: bool) -> tuple[list[Point], Any] | None:
    """A finished W&B run's end (and validations) as points; None: not a finished pretraining run."""
    figures = {key: number(run.value(key)) for key in FIGURES}
    if run.state != "finished" or any(figures[key] is None for key in END):
        return None
    family = label(run.config, family_key, f"W&B run {run.name} ({run.source})", "--family-key")
    size = label(run.config, size_key, f"W&B run {run.name} ({run.source})", "--size-key")
    params = non_embedding(figures[M.PARAMS], figures[M.EMBEDDING_PARAMS])
    end = Point(family, size, params, figures[M.TRAIN_FLOPS], figures[M.TRAIN_TOKENS], figures[M.VAL_LOSS], run.id)
    rows = [r for r in run.history if number(r.get(M.VAL_LOSS)) is not None and number(r.get(M.TRAIN_FLOPS))]
    curve = [(float(r.get(M.TRAIN_TOKENS) or 0), float(r[M.TRAIN_FLOPS]), float(r[M.VAL_LOSS])) for r in rows]
    return [end, *along(end, curve, curves)], (run.config.get("optim.schedule"), curve)


def read_runs(
    paths: list[Path], project: str | None, filters: Filters, family_key: str, size_key: str, curves: bool
) -> Measured:
    """The runs under `paths` (or of a W&B `project`) as points and curves, with notes on what was left out."""
    read: list[tuple[str, tuple[list[Point], Any] | None]] = []
    for path in [] if project else paths:
        if not path.exists():
            raise LmlabError(f"{path}: no such folder; give folders that hold pretraining run folders")
        folders = run_folders(path) if path.is_dir() else []
        if folders:
            read += [(str(f), folder_run(f, family_key, size_key, curves)) for f in folders]
        else:
            wandb = load_runs([path], None, filters)[0]
            read += [(r.source, wandb_run(r, family_key, size_key, curves)) for r in wandb]
    if project:
        read += [(r.source, wandb_run(r, family_key, size_key, curves)) for r in load_runs([], project, filters)[0]]
    kept = {source: got for source, got in read if got is not None}
    where = project or ", ".join(map(str, paths))
    if not kept:
        raise LmlabError(f"no finished pretraining runs (val/loss, train/flops, train/tokens) in {where}")
    measured = Measured([p for points, _ in kept.values() for p in points], where)
    cosine = 0
    for points, (schedule, validations) in kept.values():
        end = points[0]
        measured.curves[end.family, end.size, end.run] = ([c[1] for c in validations], [c[2] for c in validations])
        cosine += schedule == "cosine"
    skipped = [source for source, got in read if got is None]
    if skipped:
        shown = ", ".join(skipped[:SHOWN]) + (f" and {len(skipped) - SHOWN} more" if len(skipped) > SHOWN else "")
        measured.notes.append(
            f"Left out: {len(skipped)} run{'s' * (len(skipped) != 1)} whose metrics.json lacks val/loss, train/flops "
            "or train/tokens "
            f"(fine-tuning runs, or pretraining runs that did not finish): {shown}."
        )
    if curves:
        measured.notes.append(CURVE_NOTE.format(runs=cosine))
    return measured
