"""`lmlab compare`: rank runs by one metric, as a terminal table, markdown, CSV and plots.

Works on `lmlab.tools.wandb_runs.Run` records, so offline folders and the W&B API give the same report.
Only finished runs are ranked: a failed, crashed or running run is listed after them, unranked,
with its state, since its last value is not a result.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lmlab.analysis.colours import family_colours
from lmlab.analysis.plots import plot
from lmlab.analysis.tables import table
from lmlab.core import metrics as M
from lmlab.core.atomic import write_atomic
from lmlab.core.errors import LmlabError
from lmlab.tools.wandb_runs import Run, number

SHOWN = {M.PARAMS: "params", M.TRAIN_TOKENS_PER_SEC: "tokens/s", M.TRAIN_WALL_SECONDS: "wall s"}  # and headers
TEXT_COLUMNS = ("run", "family", "state", "config")
WIDE_TERMINAL = 120  # columns from which the terminal table also shows the config that differs
CURVE_X = (M.TRAIN_TOKENS, "trainer/global_step", "_step")  # the first that the metric's rows all have


@dataclass
class Row:
    """One run in the report: its rank (None: not a finished run with the metric) and the ranked value: the best
    the run logged (`best_logged`)."""

    rank: int | None
    run: Run
    family: str
    value: float | None


def metrics_logged(runs: Sequence[Run]) -> list[str]:
    """Every numeric metric some run has (summary or config), for the error that lists them."""
    keys = {key for run in runs for key in (*run.summary, *run.config) if number(run.value(key)) is not None}
    return sorted(key for key in keys if not key.startswith("_"))


def rank(runs: Sequence[Run], metric: str, maximize: bool, family_key: str) -> list[Row]:
    """Finished runs with the metric, best first and numbered; then the rest, finished ones first."""
    if not any(number(run.value(metric)) is not None for run in runs):
        raise LmlabError(
            f"--metric {metric}: none of the {len(runs)} runs has a number for it; "
            f"metrics they have: {', '.join(metrics_logged(runs)) or 'none'}"
        )
    rows = [Row(None, run, str(run.config.get(family_key, "?")), best_logged(run, metric, maximize)) for run in runs]
    ranked = sorted(
        (row for row in rows if row.run.state == "finished" and row.value is not None),
        key=lambda row: (-row.value if maximize else row.value, row.run.name),
    )
    for i, row in enumerate(ranked, start=1):
        row.rank = i
    rest = sorted(
        (row for row in rows if row.rank is None), key=lambda row: (row.run.state != "finished", row.run.name)
    )
    return ranked + rest


def of_job_types_logging(runs: Sequence[Run], metric: str, console: Console) -> list[Run]:
    """The runs of the job types that log `metric` (the pretraining runs for val/bpb), saying what is left out:
    a fine-tuning run has no val/bpb to rank, and listing it as a run without one mixes two studies."""
    types = {run.job_type for run in runs if best_logged(run, metric, maximize=False) is not None}
    kept = [run for run in runs if run.job_type in types] if types else list(runs)
    left = sorted({run.job_type or "none" for run in runs} - types) if types else []
    if left:
        console.print(
            f"left out {len(runs) - len(kept)} runs of job type {', '.join(left)}, which log no {metric} "
            "(--job-type or --metric chooses others)"
        )
    return kept


def best_logged(run: Run, metric: str, maximize: bool) -> float | None:
    """The best value of `metric` in the run's history and summary: a run's summary holds its last value, and
    the last validation is not always its best (a checkpoint keeps the best)."""
    values = [number(row.get(metric)) for row in run.history] + [number(run.value(metric))]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if maximize else min(finite)


def differing_config(runs: Sequence[Run], skip: Sequence[str]) -> list[str]:
    """Config keys whose values differ between the runs: what the runs were varied by.

    Runs without a config (killed before W&B wrote anything) have nothing to tell apart, so they are left out.
    """
    configs = [run.config for run in runs if run.config]
    keys = sorted({key for config in configs for key in config} - set(skip) - set(M.COMPARED))
    return [key for key in keys if len({repr(config.get(key)) for config in configs}) > 1]


def fmt(value: Any) -> str:
    """A table cell: 4 significant digits, whole numbers from 1000 on, missing as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if 1e3 <= abs(value) < 1e9 else f"{value:.4g}"
    return str(value)


def header(metric: str) -> list[str]:
    return ["rank", "run", "family", "state", f"best {metric}", *SHOWN.values(), "config"]


def cells(row: Row, metric: str, varied: Sequence[str]) -> list[str]:
    """One table row: the ranked metric's best value (as logged when there is none, so a NaN shows), the other
    figures as last logged; the config column holds the keys that differ."""
    run = row.run
    ranked = row.value if row.value is not None else run.value(metric)
    values = [row.rank, run.name, row.family, run.state, ranked, *(run.value(key) for key in SHOWN)]
    config = " ".join(f"{key}={fmt(run.config.get(key))}" for key in varied) if run.config else ""
    return [*(fmt(value) for value in values), config]


def terminal_table(rows: Sequence[Row], metric: str, maximize: bool, varied: Sequence[str], wide: bool) -> Table:
    """The ranked table; the config column only where the terminal is wide enough to read it."""
    direction = "higher" if maximize else "lower"
    table = Table(title=f"{len(rows)} runs ranked by {metric} ({direction} is better)")
    names = header(metric) if wide else header(metric)[:-1]
    for name in names:
        text = name in TEXT_COLUMNS
        table.add_column(name, justify="left" if text else "right", no_wrap=not text, overflow="fold")
    for row in rows:
        style = None if row.run.state == "finished" else "yellow" if row.run.state == "running" else "red"
        table.add_row(*cells(row, metric, varied)[: len(names)], style=style)
    return table


def markdown(rows: Sequence[Row], metric: str, maximize: bool, varied: Sequence[str], sources: str) -> str:
    """The report page: the ranked table and the two plots."""
    lines = [
        f"# Runs ranked by {metric}",
        "",
        f"{len(rows)} runs from {sources}; {'higher' if maximize else 'lower'} is better. "
        "Only finished runs are ranked; the others are listed after them with their state.",
        "",
        *table(
            header(metric),
            [cells(row, metric, varied) for row in rows],
            right=[name for name in header(metric) if name not in TEXT_COLUMNS],
        ),
    ]
    lines += ["", f"![{metric} per run](curves.png)", "", f"![best {metric} per family](best_per_family.png)", ""]
    return "\n".join(lines)


def csv_text(rows: Sequence[Row], metric: str, varied: Sequence[str]) -> str:
    """Every run, every metric of the vocabulary that any run has, and the config keys that differ."""
    present = [key for key in M.COMPARED if key != metric and any(row.run.value(key) is not None for row in rows)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "rank",
            "run",
            "id",
            "family",
            "state",
            metric,
            *present,
            "group",
            "job_type",
            "sweep",
            "tags",
            *varied,
            "source",
        ]
    )
    for row in rows:
        run = row.run
        metrics = [run.value(key) for key in (metric, *present)]
        writer.writerow(
            [
                "" if row.rank is None else row.rank,
                run.name,
                run.id,
                row.family,
                run.state,
                *("" if value is None else value for value in metrics),
                run.group,
                run.job_type,
                run.sweep,
                " ".join(run.tags),
                *(run.config.get(key, "") for key in varied),
                run.source,
            ]
        )
    return out.getvalue()


def curve(run: Run, metric: str) -> tuple[str, list[float], list[float]]:
    """The metric over training: x is tokens seen when the rows have it, else the step."""
    rows = [row for row in run.history if number(row.get(metric)) is not None]
    x_key = next((key for key in CURVE_X if rows and all(number(row.get(key)) is not None for row in rows)), "")
    return x_key, [row.get(x_key, i) for i, row in enumerate(rows)], [row[metric] for row in rows]


def legend_label(row: Row) -> str:
    """A run's name, with its family and state where they add something: "pretrain-rnn", "lr3e-3 (gru, crashed)"."""
    said = [row.family] if row.family not in row.run.name.split("-") else []
    said += [] if row.run.state == "finished" else [row.run.state]
    return row.run.name + (f" ({', '.join(said)})" if said else "")


def curves_png(rows: Sequence[Row], metric: str) -> bytes:
    """The metric over training, one line per run (dashed: not finished); the y range fits the finished runs,
    so a run that diverged does not flatten the others."""
    buffer = io.BytesIO()
    with plot(buffer, (8, 5)) as ax:
        x_keys, finished_ys = set(), []
        colours = family_colours(sorted({row.family for row in rows}))
        for row in rows:
            x_key, xs, ys = curve(row.run, metric)
            if not ys:
                continue
            x_keys.add(x_key or "row")
            finished = row.run.state == "finished"
            finished_ys += ys if finished else []
            label = legend_label(row)
            style = "-" if finished else "--"
            ax.plot(xs, ys, marker="o", markersize=3, linestyle=style, label=label, color=colours[row.family])
        if finished_ys:
            low, high = min(finished_ys), max(finished_ys)
            pad = 0.25 * (high - low) or 0.05 * abs(high) or 1.0
            ax.set_ylim(low - pad, high + pad)
        if x_keys:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, f"no run logged {metric} over time", ha="center", transform=ax.transAxes)
        ax.set(xlabel=" / ".join(sorted(x_keys)) or "step", ylabel=metric, title=f"{metric} per run")
        ax.grid(alpha=0.3)
    return buffer.getvalue()


def best_per_family_png(rows: Sequence[Row], metric: str, maximize: bool) -> bytes:
    """One bar per family: its best-ranked finished run."""
    best: dict[str, Row] = {}
    for row in rows:
        if row.rank is not None:
            best.setdefault(row.family, row)
    buffer = io.BytesIO()
    with plot(buffer, (max(4, 1.2 * len(best) + 2), 4)) as ax:
        colours = family_colours(list(best))
        bars = ax.bar(list(best), [row.value for row in best.values()], color=[colours[name] for name in best])
        ax.bar_label(bars, labels=[f"{fmt(row.value)}\n{row.run.name}" for row in best.values()], fontsize="small")
        if not best:
            ax.text(0.5, 0.5, f"no finished run has {metric}", ha="center", transform=ax.transAxes)
        direction = "higher" if maximize else "lower"
        ax.set(ylabel=metric, title=f"best {metric} per family ({direction} is better)")
        ax.margins(y=0.2)
    return buffer.getvalue()


def write_ranking(
    runs: Sequence[Run],
    metric: str,
    maximize: bool | None,
    family_key: str,
    out: Path,
    sources: str,
    console: Console,
) -> None:
    """Rank the runs, print the table, write compare.md, compare.csv, curves.png and best_per_family.png into
    ``out``: every file is made before any is written, so an error leaves the previous report as it was."""
    maximize = M.higher_is_better(metric) if maximize is None else maximize
    runs = of_job_types_logging(runs, metric, console)
    rows = rank(runs, metric, maximize, family_key)
    varied = differing_config(runs, skip=[family_key])
    files = {
        "compare.md": markdown(rows, metric, maximize, varied, sources).encode(),
        "compare.csv": csv_text(rows, metric, varied).encode(),
        "curves.png": curves_png(rows, metric),
        "best_per_family.png": best_per_family_png(rows, metric, maximize),
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        write_atomic(out / name, data)
    wide = console.width >= WIDE_TERMINAL
    console.print(terminal_table(rows, metric, maximize, varied, wide))
    if varied and not wide:
        console.print(f"config that differs between the runs (values in compare.md): {', '.join(varied)}")
    console.print(f"wrote {', '.join(str(out / name) for name in files)}")
