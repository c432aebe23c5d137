"""`lmlab report study=scaling`, and the report `lmlab scaling` writes from any runs: one rendering for both.

The study's runs are read from ``<scaling_dir>/*.json``, one file per run (e.g. ``<family>-<width>-<budget>.json``,
``...-s<seed>.json``), holding the run's final figures under lmlab.core.metrics's names and:

    family, width, budget          the run's family, model.width (its size's label) and budget (the grid's number)
    val/loss, train/flops, train/tokens, model/params, model/embedding_params   the run's end (required)
    seed, train/steps, schedule    optional: told in the report's setting
    curve                          optional: the validation curve, [[train/tokens, train/flops, val/loss], ...],
                                   drawn but never fitted (not the loss of a run of that length)
    position                       optional: loss by position, [{position_from, position_to, loss}, ...] as
                                   `lmlab evaluate` measures it; drawn per family by size

Writes ``<out_dir>/scaling/scaling.md`` and its plots, staged and moved into place whole; the fits are
`lmlab.analysis.power_laws`', the crossovers `lmlab.analysis.crossovers`'.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmlab.analysis.colours import family_colours
from lmlab.analysis.config import ReportConfig
from lmlab.analysis.configurations import Point
from lmlab.analysis.crossovers import Crossover, crossover
from lmlab.analysis.power_laws import RESAMPLES, FamilyFit, LawFit, fit_family, interval
from lmlab.analysis.scaling_plots import compute_plot, frontiers_plot, params_plot, position_plot
from lmlab.analysis.stats import Interval
from lmlab.analysis.tables import table
from lmlab.core import metrics as M
from lmlab.core.atomic import NUMBER, check_keys, read_json, staged_dir, write_atomic
from lmlab.core.errors import LmlabError

REFERENCE = "transformer"
REPORT = "scaling.md"
REQUIRED = {
    "family": str,
    "width": int,
    "budget": NUMBER,
    M.VAL_LOSS: NUMBER,
    M.TRAIN_FLOPS: NUMBER,
    M.TRAIN_TOKENS: NUMBER,
    M.PARAMS: int,
    M.EMBEDDING_PARAMS: int,
}
OPTIONAL = {"seed": int, M.TRAIN_STEPS: int, "schedule": str, "curve": list, "position": list}
POSITION = {"position_from": int, "position_to": int, "loss": NUMBER}
REBUILD = "run `dvc repro scaling/dvc.yaml` to write it again"


@dataclass
class Measured:
    """What the runs hold: the points fitted, and the curves drawn beside them."""

    points: list[Point]
    sources: str  # where they came from, for the report's setting
    curves: dict[tuple[str, str, str], tuple[list[float], list[float]]] = field(default_factory=dict)  # (family,
    # size, run) -> training FLOPs and val/loss of its validations
    positions: dict[tuple[str, str], tuple[list[float], list[float]]] = field(default_factory=dict)  # (family,
    # size) -> middle position and loss
    notes: list[str] = field(default_factory=list)


def load(folder: Path) -> Measured:
    """The study's runs (module docstring): their ends as points, their curves and loss by position to draw."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise LmlabError(f"no scaling metrics (*.json) in {folder}: run `dvc repro scaling/dvc.yaml`")
    measured = Measured([], str(folder))
    runs = [read_run(path, measured) for path in files]
    for family in sorted({run["family"] for run in runs}):
        measured.notes.append(setting([run for run in runs if run["family"] == family]))
    return measured


def read_run(path: Path, measured: Measured) -> dict[str, Any]:
    """One metrics file, checked: its end added to the points, its curve and loss by position to the drawn."""
    run = read_json(path, REBUILD, REQUIRED, OPTIONAL)
    family, size = run["family"], str(run["width"])
    params = run[M.PARAMS] - run[M.EMBEDDING_PARAMS]
    flops, tokens, loss = (float(run[key]) for key in (M.TRAIN_FLOPS, M.TRAIN_TOKENS, M.VAL_LOSS))
    measured.points.append(Point(family, size, params, flops, tokens, loss, path.stem))
    curve = run.get("curve", [])
    if not all(isinstance(r, list) and len(r) == 3 and all(isinstance(v, NUMBER) for v in r) for r in curve):
        raise LmlabError(f"{path}: curve is not a list of [train/tokens, train/flops, val/loss]: {REBUILD}")
    if curve:
        measured.curves[family, size, path.stem] = ([r[1] for r in curve], [r[2] for r in curve])
    positions = run.get("position", [])
    for i, row in enumerate(positions):
        if not isinstance(row, dict):
            raise LmlabError(f"{path}: position[{i}] is not an object: {REBUILD}")
        check_keys(row, path, REBUILD, POSITION, within=f"position[{i}].")
    if positions and (family, size) not in measured.positions:  # one seed's is enough to draw
        middle = [(r["position_from"] + r["position_to"] - 1) / 2 + 1 for r in positions]  # 1-based positions
        measured.positions[family, size] = (middle, [r["loss"] for r in positions])
    return run


def setting(runs: list[dict[str, Any]]) -> str:
    """One family's grid, for the report's setting: widths, budgets, seeds and schedules."""

    def listed(key: str) -> str:
        values = sorted({run[key] for run in runs if key in run})
        return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)

    told = [f"{key}s {listed(key)}" for key in ("width", "budget", "seed", "schedule") if listed(key)]
    return f"{runs[0]['family']}: {len(runs)} runs; " + "; ".join(told)


def write_report(cfg: ReportConfig) -> Path:
    measured = load(Path(cfg.scaling_dir))
    out = Path(cfg.out_dir) / "scaling"
    files = render(measured, RESAMPLES, REFERENCE, cfg.families)
    with staged_dir(out) as staging:
        for name, data in files.items():
            (staging / name).write_bytes(data)
    return out / REPORT


def write_files(measured: Measured, out: Path, resamples: int, reference: str) -> list[Path]:
    """`lmlab scaling`'s report: the same files, each written whole into `out` beside whatever else it holds."""
    files = render(measured, resamples, reference)
    for name, data in files.items():
        write_atomic(out / name, data)
    return [out / name for name in files]


def render(
    measured: Measured, resamples: int, reference: str, families: Sequence[str] | None = None
) -> dict[str, bytes]:
    """The report's files (scaling.md and its PNGs) from the runs: one fit per family, each family that cannot
    be fitted in its row with the reason, and each family's crossover with the `reference` family."""
    names = sorted({p.family for p in measured.points})
    if families:
        missing = sorted(set(families) - set(names))
        if missing:
            raise LmlabError(f"no runs of {', '.join(missing)} in {measured.sources} (families there: {names})")
        names = sorted(families)
    fits: dict[str, FamilyFit] = {}
    refused: dict[str, str] = {}
    for name in names:
        try:
            fits[name] = fit_family([p for p in measured.points if p.family == name], resamples)
        except LmlabError as err:
            refused[name] = str(err)
    crossovers = [crossover(fits[n], fits[reference]) for n in fits if reference in fits and n != reference]
    colours = family_colours(names)
    files = {REPORT: markdown(measured, names, fits, refused, crossovers, reference).encode()}
    if fits:
        files["scaling_compute.png"] = png(compute_plot, list(fits.values()), measured.curves, colours)
        files["scaling_frontiers.png"] = png(frontiers_plot, list(fits.values()), crossovers, colours)
        files["scaling_params.png"] = png(params_plot, list(fits.values()), colours)
    positions = {key: value for key, value in measured.positions.items() if key[0] in names}
    if positions:
        files["scaling_position.png"] = png(position_plot, positions, colours)
    return files


def png(draw: Any, *args: Any) -> bytes:
    buffer = io.BytesIO()
    draw(buffer, *args)
    return buffer.getvalue()


def shown(interval: Interval, digits: str = ".3g") -> str:
    return f"{interval.estimate:{digits}} [{interval.low:{digits}}, {interval.high:{digits}}]"


def law_cells(law: LawFit, names: str) -> list[str]:
    """A law's parameters with their intervals, its residual RMSE and its verdict; no figures when the verdict
    says there is no law (an exponent is never printed for points that do not follow one)."""
    if not law.ok:
        return ["-"] * (len(names) + 1) + [law.verdict]
    return [shown(law.intervals[n]) for n in names] + [f"{law.rmse:.4f}", law.verdict]


def markdown(
    measured: Measured,
    names: list[str],
    fits: dict[str, FamilyFit],
    refused: dict[str, str],
    crossovers: list[Crossover],
    reference: str,
) -> str:
    hows: dict[str, list[str]] = {}
    for fit in fits.values():
        if fit.compute.intervals:
            hows.setdefault(fit.compute.intervals["b"].how, []).append(fit.family)
    how = "; ".join(f"{how} for {', '.join(families)}" for how, families in hows.items())
    lines = [
        "# Scaling laws",
        "",
        f"Runs: {measured.sources} ({len(measured.points)} points). Method and rules: docs/scaling.md. "
        f"Intervals: 95% percentile bootstrap, never the fit's covariance{': ' + how if how else ''}. '-': no "
        "figures, the verdict says why.",
        "",
        *[f"- {note}" for note in measured.notes],
        *([""] if measured.notes else []),
        *(["![loss against compute](scaling_compute.png)", "![frontiers](scaling_frontiers.png)", ""] if fits else []),
        "## Loss against training compute: L(C) = a C^-b + c on the frontier",
        "",
    ]
    header = ["family", "runs", "sizes", "frontier points", "compute fitted (FLOPs)", "a", "b", "c"]
    header += ["RMSE (log loss)", "verdict"]
    rows = []
    for name in names:
        if name in refused:
            rows.append([name, "", "", "", "", "-", "-", "-", "-", refused[name]])
            continue
        fit = fits[name]
        runs = sum(c.runs for c in fit.cells if c.final)
        span = f"{fit.compute.span[0]:.2g}-{fit.compute.span[1]:.2g}" if fit.compute.ok else ""
        curve = " (with validation-curve points: not the loss of runs that long)" if fit.curves else ""
        counts = [str(runs), str(len(fit.sizes)), str(len(fit.frontier)), span]
        rows.append([f"{name}{curve}", *counts, *law_cells(fit.compute, "abc")])
    lines += table(header, rows, right=("runs", "sizes", "frontier points", "RMSE (log loss)"))
    lines += [
        "",
        "## Loss against non-embedding parameters, and the compute-optimal size",
        "",
        "L(N) = a N^-b + c on each size's lowest loss (at the largest budget it was trained to; converged only "
        "where its loss had flattened); N_opt(C) = k C^e on the sizes of the frontier.",
        "",
        *(["![loss against parameters](scaling_params.png)", ""] if fits else []),
    ]
    header = ["family", "L(N): a", "b", "c", "RMSE", "verdict", "N_opt: k", "e", "RMSE (log N)", "verdict"]
    rows = [[name, *law_cells(fit.size, "abc"), *law_cells(fit.optimal, "ke")] for name, fit in fits.items()]
    lines += table(header, rows, right=("RMSE", "RMSE (log N)"))
    lines += ["", f"## Crossovers with the {reference}", ""]
    if reference not in fits:
        lines.append(f"None: no fit of the {reference} ({refused.get(reference, 'no runs')}).")
    lines += [f"- {c.family}: {c.statement()}" for c in crossovers]
    lines += improvement(list(fits.values()), reference)
    if any(family in names for family, _ in measured.positions):
        lines += ["", "## Loss by position", "", "![loss by position](scaling_position.png)"]
    return "\n".join(lines) + "\n"


def improvement(fits: list[FamilyFit], reference: str) -> list[str]:
    """How fast each family's loss falls where every family with a law was measured: the local exponent of its
    L(C) at the most compute all their ranges hold (and of L(N) at the most parameters), against the reference's
    from paired draws (each family's resamples are drawn independently, so draw i against draw i is fair)."""
    if not any(fit.compute.ok or fit.size.ok for fit in fits):
        return []
    lines = [
        "",
        "## How fast each family improves, where all were measured",
        "",
        "The local exponent -d ln L / d ln C of a law with an offset, b a C^-b / (a C^-b + c) (below b), is the "
        "alpha of the law without one (Kaplan et al.'s form, L = (C_c / C)^alpha) tangent to it there: the "
        "figure to set beside theirs. Each is taken at the most compute (parameters) that every family's law "
        "saw, so none is extrapolated; against the "
        f"{reference}'s: the difference of paired draws ('steeper': its interval above 0).",
    ]
    for title, of, unit in (("L(C)", lambda f: f.compute, "FLOPs"), ("L(N)", lambda f: f.size, "parameters")):
        laws = {fit.family: of(fit) for fit in fits if of(fit).ok}
        at = min((law.span[1] for law in laws.values()), default=np.nan)
        lines.append("")
        if not laws or at < max(law.span[0] for law in laws.values()):
            lines.append(f"{title}: {'no family has a law' if not laws else 'no range common to every law'}.")
            continue
        local = {name: law.local(at) for name, law in laws.items()}
        rows = []
        for name, (values, slopes) in local.items():
            cells = [shown(interval(values[1:], values[0], laws[name].how), ".4g")]
            cells.append(shown(interval(slopes[1:], slopes[0], laws[name].how)))
            if name != reference and reference in local:
                ref = local[reference][1]
                diff = interval(slopes[1:] - ref[1:], slopes[0] - ref[0], "paired draws")
                word = "steeper" if diff.low > 0 else "shallower" if diff.high < 0 else "not resolved"
                cells.append(f"{shown(diff)}: {word}")
            else:
                cells.append("-")
            rows.append([name, *cells])
        header = ["family", "loss", "local exponent", f"minus the {reference}'s"]
        lines += [f"{title} at {at:.3g} {unit}:", "", *table(header, rows)]
        if reference not in local:
            lines += ["", f"The {reference} has no {title} law here: nothing to compare against."]
    return lines
