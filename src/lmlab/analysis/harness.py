"""lm-evaluation-harness figures: the summary `lmlab harness` writes per task, and the comparison report's section
that reads them back.

A summary, ``<metrics_dir>/[seed<k>/]harness/<family>/<task>.json``, holds the task's figures under lmlab's names
(`metrics.harness_metric`: ``harness/<task>/<metric>``, a group's subtasks included) and beside them:

- ``intervals``: each figure's 95% interval, ±1.96 times the standard error the harness reports for it;
- ``chance``: what picking an answer at random scores, for a multiple-choice task's accuracies;
- ``higher_is_better``: each figure's direction, as the harness's task says it;
- ``examples``: the examples each (sub)task scored.

The report shows each family's figures beside its test perplexity (several seeds: the mean and a t-interval
over the seeds, as everywhere in the report). It places one family above another only where their intervals do
not overlap, and says where a family is no better than chance: at lmlab's sizes (about 1.4M parameters) the
standard tasks sit at chance, and an order among noise would be no finding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from scipy.stats import norm

from lmlab.analysis import stats
from lmlab.analysis.config import ReportConfig
from lmlab.analysis.stats import CONFIDENCE, Interval
from lmlab.analysis.tables import table
from lmlab.core import metrics as M
from lmlab.core.atomic import read_json
from lmlab.core.errors import LmlabError

FOLDER = "harness"  # under each seed's metrics folder: <family>/<task>.json
INTERVALS, CHANCE, HIGHER, EXAMPLES = "intervals", "chance", "higher_is_better", "examples"
SUMMARY = {"family": str, "task": str, INTERVALS: dict, CHANCE: dict, HIGHER: dict, EXAMPLES: dict}
Z = float(norm.ppf((1 + CONFIDENCE) / 2))  # 1.96: a normal interval from a standard error
ONE_SEED = "±1.96 harness stderr"


def interval(value: float, stderr: float) -> list[float]:
    """The 95% interval of a figure the harness reports with its standard error."""
    return [value - Z * stderr, value + Z * stderr]


@dataclass
class HarnessFigures:
    """Every family's harness figures: name -> family -> its interval; chance levels and directions by name."""

    figures: dict[str, dict[str, Interval]] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)


def rebuild(family: str, seed: str, task: str, metrics_dir: Path) -> str:
    by_hand = f"lmlab harness family={family} 'tasks=[{task}]' metrics_dir={metrics_dir}"
    if seed:
        return f"run `dvc repro harness@{family}-{seed.removeprefix('seed')}-{task}` (or `{by_hand}`)"
    return f"run `{by_hand}`"


def read_summary(path: Path, how_to_make: str) -> dict[str, Any]:
    """One task's summary, checked: its figures numbers, each interval two of them."""
    summary = read_json(path, how_to_make, SUMMARY)
    for name, value in summary.items():
        if name.startswith(M.HARNESS) and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise LmlabError(f"{path}: {name!r} is {value!r}, not a number: {how_to_make}")
    for name, ends in summary[INTERVALS].items():
        if name not in summary or not (isinstance(ends, list) and len(ends) == 2):
            raise LmlabError(f"{path}: intervals.{name} is not [low, high] of one of its figures: {how_to_make}")
    return summary


def read_family(cfg: ReportConfig, family: str, seeds: list[str]) -> list[dict[str, Any]]:
    """A family's summaries at each seed, merged over its tasks (a figure in two of them is an error)."""
    runs = []
    for seed in seeds:
        metrics_dir = Path(cfg.metrics_dir) / seed
        merged: dict[str, Any] = {INTERVALS: {}, CHANCE: {}, HIGHER: {}, "from": {}}
        for path in sorted((metrics_dir / FOLDER / family).glob("*.json")):
            summary = read_summary(path, rebuild(family, seed, path.stem, metrics_dir))
            for name, value in summary.items():
                if not name.startswith(M.HARNESS):
                    continue
                if name in merged["from"]:
                    raise LmlabError(f"{name} is in both {merged['from'][name]} and {path}: remove one of them")
                merged["from"][name] = path
                merged[name] = value
            for key in (INTERVALS, CHANCE, HIGHER):
                merged[key] |= summary[key]
        if merged["from"]:
            runs.append(merged)
    return runs


def over_seeds(runs: list[dict[str, Any]], name: str) -> Interval | None:
    """A figure over the seeds that have it: one seed's with the harness's interval (NaN ends where the harness
    gave no standard error: no verdict then), several with a t-interval."""
    values = [run for run in runs if name in run]
    if len(values) == 1:
        low, high = values[0][INTERVALS].get(name, [math.nan, math.nan])
        return Interval(float(values[0][name]), float(low), float(high), ONE_SEED)
    return stats.over_seeds([float(run[name]) for run in values]) if values else None


def load(cfg: ReportConfig, families: list[str], seeds: list[str]) -> HarnessFigures:
    """Every family's harness figures (none: an empty `figures`, and the report has no harness section)."""
    found = HarnessFigures()
    runs = {family: read_family(cfg, family, seeds) for family in families}
    names = sorted({name for family_runs in runs.values() for run in family_runs for name in run["from"]})
    for name in names:
        found.figures[name] = {f: i for f in families if (i := over_seeds(runs[f], name)) is not None}
        for family_runs in runs.values():
            for run in family_runs:
                if name in run[CHANCE]:
                    found.chance[name] = float(run[CHANCE][name])
                found.higher_is_better.setdefault(name, bool(run[HIGHER].get(name, True)))
    return found


def shown(value: Interval) -> str:
    digits = 3 if math.isfinite(value.estimate) and abs(value.estimate) < 100 else 1
    return f"{value.estimate:.{digits}f}" if math.isnan(value.low) else value.show(digits)


def above(value: Interval, chance: float) -> bool:
    """Above chance: the whole interval (a figure without one never is)."""
    return value.low > chance


def label(name: str) -> str:
    """`harness/lambada_openai/acc` as a column: `lambada_openai acc`."""
    return name.removeprefix(M.HARNESS).replace("/", " ")


def verdict(name: str, figures: dict[str, Interval], chance: float | None, higher: bool) -> str:
    """One line: the pairs of families whose intervals are apart (the better one first), no verdict for the
    rest; and which families are no better than chance (their interval reaches down to it)."""
    pairs = list(combinations(figures, 2))
    apart = [(a, b) for a, b in pairs if figures[a].low > figures[b].high or figures[b].low > figures[a].high]
    ordered = [(a, b) if (figures[a].estimate > figures[b].estimate) == higher else (b, a) for a, b in apart]
    if not pairs:
        said = "one family: nothing to compare"
    elif not ordered:
        said = "no verdict: the intervals overlap"
    else:
        said = "; ".join(f"{a} better than {b} (intervals apart)" for a, b in ordered)
        said += "; no verdict between the others (their intervals overlap)" if len(ordered) < len(pairs) else ""
    if chance is not None:
        at_chance = [family for family, value in figures.items() if not above(value, chance)]
        if at_chance and len(at_chance) == len(figures):
            said += f"; no family is above chance ({chance:.3f})"
        elif at_chance:
            said += f"; no better than chance ({chance:.3f}): {', '.join(at_chance)}"
    return f"- **{label(name)}**: {said}"


def section(found: HarnessFigures, ppl: dict[str, Interval]) -> list[str]:
    """The report's harness section: the table beside test perplexity, the verdicts, and what chance says."""
    if not found.figures:
        return []
    families = list(ppl)
    header = ["family", "test ppl", *map(label, found.figures)]
    rows = [
        [family, ppl[family].show(1), *(shown(f[family]) if family in f else "—" for f in found.figures.values())]
        for family in families
    ]
    chance_row = [
        "chance",
        "—",
        *(f"{found.chance[name]:.3f}" if name in found.chance else "—" for name in found.figures),
    ]
    lines = [
        "## lm-evaluation-harness",
        "",
        "Each family's figures from `lmlab harness` (`metrics/seed<k>/harness/<family>/<task>.json`) beside its test "
        f"perplexity. Brackets: {CONFIDENCE:.0%} intervals (one seed: ±1.96 times the standard error the harness "
        "reports over the task's examples, which crosses 0 for a figure near it on few examples; several: a "
        "t-interval over the seeds). A family is called better than another only where their intervals do not "
        "overlap, and above chance (**chance**: picking a multiple-choice answer at random) only where its whole "
        "interval is.",
        "",
        *table(header, [*rows, *([chance_row] if found.chance else [])]),
    ]
    lines += [
        "",
        *(
            verdict(name, figures, found.chance.get(name), found.higher_is_better.get(name, True))
            for name, figures in found.figures.items()
        ),
        "",
    ]
    with_chance = [name for name in found.figures if name in found.chance]
    if with_chance and all(
        not above(value, found.chance[name]) for name in with_chance for value in found.figures[name].values()
    ):
        lines += [
            "No family is above chance on any multiple-choice figure here: at this size these tasks do not tell "
            "the families apart, and the table is a record, not a ranking.",
            "",
        ]
    return lines
