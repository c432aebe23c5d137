"""`lmlab report study=transfer`: when does pretraining pay? Fine-tuned accuracy against the pretraining budget.

Reads what `lmlab evaluate` wrote for each family pretrained for each number of steps, at each seed of
transfer/params.yaml (`dvc repro transfer/dvc.yaml`): ``<transfer_dir>/seed<k>/<family>-<steps>.json`` and
``<transfer_eval_dir>/seed<k>/<family>-<steps>/{examples.npz,setting.json}``. Each evaluation holds the
classifier fine-tuned from that budget's checkpoint and the seed's one from-scratch classifier of the family, on
the same test documents. One seed: the difference at every budget is a paired bootstrap over test documents;
several: the seeds' mean with a t-interval over them, paired by seed (`lmlab.analysis.figures`). Writes
``<out_dir>/transfer/transfer.md`` (a table per family and a verdict per budget that follows its interval) and
``transfer_accuracy.png`` (the transfer curve), staged and moved into place whole.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from lmlab.analysis.colours import family_colours
from lmlab.analysis.config import ReportConfig
from lmlab.analysis.evaluations import figures_over_seeds, read_evaluation, seed_folders
from lmlab.analysis.figures import Figures, outcome, pretraining_verdict
from lmlab.analysis.plots import plot
from lmlab.analysis.stats import Interval
from lmlab.analysis.tables import table
from lmlab.core import metrics as M
from lmlab.core.atomic import staged_dir
from lmlab.core.errors import LmlabError

PLOT = "transfer_accuracy.png"
NAME = re.compile(r"(?P<family>\w+)-(?P<steps>\d+)\.json")
Studies = dict[str, dict[int, dict[str, Any]]]  # family -> pretraining steps -> its evaluation


def evaluate_stage(family: str, steps: int, seed: str) -> str:
    """The DVC stage that writes one evaluation (`seed` the seed<k> folder, "" for none: `lmlab evaluate` by hand)."""
    if not seed:
        return f"run `lmlab evaluate family={family} ...` with out=<transfer_dir>/{family}-{steps}.json"
    return f"run `dvc repro transfer/dvc.yaml:evaluate@{family}-{steps}-{seed.removeprefix('seed')}`"


def load_seed(cfg: ReportConfig, seed: str) -> Studies:
    """One seed's evaluations, from every ``<family>-<steps>.json`` in its folder `seed` of transfer_dir."""
    root = Path(cfg.transfer_dir) / seed
    studies: Studies = defaultdict(dict)
    for path in sorted(root.glob("*.json")):
        name = NAME.fullmatch(path.name)
        if name is None:
            raise LmlabError(f"{path}: not a transfer evaluation (<family>-<steps>.json); remove it")
        family, steps = name["family"], int(name["steps"])
        rebuild = evaluate_stage(family, steps, seed)
        evaluation = read_evaluation(path, Path(cfg.transfer_eval_dir) / seed / path.stem, rebuild)
        if evaluation["figures"].gain is None:
            raise LmlabError(f"{path}: no from-scratch classifier was evaluated beside it: {rebuild}")
        studies[family][steps] = evaluation
    if not studies:
        raise LmlabError(f"no transfer evaluations in {root}: run `dvc repro transfer/dvc.yaml`")
    return studies


def load(cfg: ReportConfig) -> Studies:
    """Each family's evaluation per budget over the seeds of the study's params file (`evaluations.seed_folders`;
    `evaluations.figures_over_seeds`): every seed must hold the same budgets, or the comparison would mix seeds."""
    seeds = seed_folders(cfg)
    per_seed = {seed: load_seed(cfg, seed) for seed in seeds}
    have = {
        seed: {(f, steps) for f, budgets in studies.items() for steps in budgets} for seed, studies in per_seed.items()
    }
    for seed in seeds[1:]:
        for family, steps in sorted(have[seeds[0]] ^ have[seed]):
            lacking, holding = (seed, seeds[0]) if (family, steps) in have[seeds[0]] else (seeds[0], seed)
            raise LmlabError(
                f"{Path(cfg.transfer_dir) / lacking} lacks {family}-{steps}.json, which {holding} has: "
                f"{evaluate_stage(family, steps, lacking)} (or remove the other seed's if the budget is gone)"
            )
    labels = [int(seed.removeprefix("seed")) for seed in seeds if seed]
    studies: Studies = {}
    first = per_seed[seeds[0]]
    for family in sorted(first):
        studies[family] = {}
        for steps in sorted(first[family]):
            runs = [per_seed[seed][family][steps] for seed in seeds]
            studies[family][steps] = {**runs[0], "figures": figures_over_seeds(runs), "seeds": labels}
    return studies


def write_report(cfg: ReportConfig) -> Path:
    studies = load(cfg)
    out = Path(cfg.out_dir) / "transfer"
    with staged_dir(out) as staging:
        accuracy_plot(studies, staging / PLOT)
        (staging / "transfer.md").write_text(markdown(studies))
    return out / "transfer.md"


def tokens_of(evaluation: dict[str, Any]) -> float:
    return float(evaluation["setting"]["pretraining"]["tokens"])


def scratch_of(budgets: dict[int, dict[str, Any]]) -> Figures:
    """The family's from-scratch figures (the same classifier in every budget's evaluation)."""
    return next(iter(budgets.values()))["figures"]


def headline(family: str, budgets: dict[int, dict[str, Any]]) -> str:
    """From which budget on the pretrained classifier beats the from-scratch one at every larger budget too,
    then the budgets at each outcome."""
    outcomes = {steps: outcome(e["figures"]) for steps, e in budgets.items()}
    beats = [steps for steps, word in outcomes.items() if word == "beats"]
    if beats and all(outcomes[steps] == "beats" for steps in budgets if steps >= min(beats)):
        first = min(beats)
        verdict = f"pretraining pays from {first:,} steps ({tokens_of(budgets[first]):,.0f} tokens) on"
    elif beats:
        verdict = "pretraining pays at some budgets, not from one on"
    else:
        verdict = f"pretraining does not pay at any budget up to {max(budgets):,} steps"
    at = {word: ", ".join(f"{s:,}" for s, w in outcomes.items() if w == word) for word in outcomes.values()}
    return f"- **{family}**: {verdict} ({'; '.join(f'{word} at {steps}' for word, steps in at.items())})"


def majority_of(studies: Studies) -> Interval:
    """The majority-class baseline's accuracy: every evaluation holds it, on the same test documents."""
    return scratch_of(next(iter(studies.values()))).majority


def how_intervals(studies: Studies) -> str:
    seeds = next(iter(next(iter(studies.values())).values()))["seeds"]
    if len(seeds) <= 1:
        which = f" ({seeds[0]})" if seeds else ""
        return f"one seed{which}: a bootstrap over test documents (paired for the difference)"
    return (
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): the mean and a t-interval over the seeds, which holds "
        "the pretraining and fine-tuning noise as well (the difference paired by seed)"
    )


def markdown(studies: Studies) -> str:
    majority = majority_of(studies)
    lines = [
        "# When does pretraining pay?",
        "",
        "Each family pretrained for a number of steps, then fine-tuned on the labeled set with the main study's "
        "recipe for `finetune_steps` (transfer/params.yaml), against the same recipe from random initialisation "
        "(0 steps) on the same test documents. "
        f"Brackets: 95% intervals, {how_intervals(studies)}: *beats* or *trails* only where the interval of the "
        "difference excludes zero; a classifier that predicts one class for at least 95% of test documents is "
        f"collapsed and gets no verdict. Majority class: {majority.show()}.",
        "",
        f"![fine-tuned accuracy against pretraining tokens]({PLOT})",
        "",
        *(headline(family, budgets) for family, budgets in studies.items()),
        "",
    ]
    for family, budgets in studies.items():
        first = scratch_of(budgets)
        scratch = first.accuracy[M.SCRATCH_TEST].show() + (" (collapsed)" if M.SCRATCH_TEST in first.collapsed else "")
        header = ["pretraining steps", "tokens", "LM test ppl", "accuracy", "pretrained − scratch (points)"]
        rows = [["0 (from scratch)", "0", "—", scratch, "—"]]
        for steps, evaluation in budgets.items():
            f: Figures = evaluation["figures"]
            collapsed = " (collapsed)" if M.TEST in f.collapsed else ""
            gain = f.gain.map(lambda x: 100 * x).show(1) if f.gain else "—"
            accuracy = f"{f.accuracy[M.TEST].show()}{collapsed}"
            rows.append([f"{steps:,}", f"{tokens_of(evaluation):,.0f}", f.ppl.show(1), accuracy, gain])
        lines += [f"## {family}", "", *table(header, rows, right=header[:3])]
        lines += ["", *(pretraining_verdict(f"{steps:,} steps", e["figures"]) for steps, e in budgets.items()), ""]
    return "\n".join(lines)


def accuracy_plot(studies: Studies, path: Path) -> None:
    """Accuracy against pretraining tokens (log), one line per family with its from-scratch level as a band."""
    colours = family_colours(list(studies))
    with plot(path, (7, 4.5)) as ax:
        for family, budgets in studies.items():
            points = [budgets[steps]["figures"].accuracy[M.TEST] for steps in budgets]
            ax.errorbar(
                [tokens_of(e) for e in budgets.values()],
                [p.estimate for p in points],
                yerr=[[p.estimate - p.low for p in points], [p.high - p.estimate for p in points]],
                marker="o",
                capsize=3,
                color=colours[family],
                label=f"{family}, pretrained",
            )
            scratch = scratch_of(budgets).accuracy[M.SCRATCH_TEST]
            ax.axhline(scratch.estimate, color=colours[family], linestyle="--", label=f"{family}, from scratch")
            ax.axhspan(scratch.low, scratch.high, color=colours[family], alpha=0.1)
        majority = majority_of(studies)
        ax.axhline(majority.estimate, color="grey", linestyle=":", label="majority class")
        ax.set_xscale("log")
        ax.set(xlabel="pretraining tokens (log scale)", ylabel="test accuracy after fine-tuning")
        ax.set_title("Fine-tuned accuracy against pretraining budget", fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
