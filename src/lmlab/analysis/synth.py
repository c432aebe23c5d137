"""`lmlab report study=synth`: the synthetic tasks side by side, from the metrics files `lmlab synth` wrote.

Reads ``<synth_dir>/mqar/<family>-<width>-<T>x<pairs>-lr<lr>.json`` and
``<synth_dir>/parity/<family>[-negative]-lr<lr>.json`` (either may be absent); writes
``<out_dir>/synth/synth.md`` with the accuracy against state size for recall (Zoology's Figure 2) and the
accuracy against sequence length for parity, every accuracy with its 95% interval (a bootstrap over
validation examples), and a verdict that follows the interval. Written to a staging folder and moved into
place whole.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from lmlab.analysis.colours import family_colours
from lmlab.analysis.config import ReportConfig
from lmlab.analysis.plots import plot
from lmlab.analysis.tables import table
from lmlab.core import metrics as M
from lmlab.core.atomic import NUMBER, read_json, staged_dir
from lmlab.core.errors import LmlabError

SOLVED = M.SOLVED  # an accuracy whose whole interval lies at or above this solves the task
RISING = 0.02  # a run at its budget whose accuracy rose more than this over its last quarter has not converged
# MQAR: recall counts from this far above 1/pairs (a context value at random); 0.26 against 0.25 is a trace of
# binding two intervals apart, not recall the literature would call partial
RECALL_MARGIN = 0.05
PLOTS = {
    "mqar_accuracy_vs_state.png": "Associative recall: accuracy against the state a family carries",
    "mqar_steps_vs_state.png": "Associative recall: steps to solve against the state a family carries",
    "parity_accuracy_vs_length.png": "Parity: accuracy at and beyond the training length",
}
REQUIRED = {"task": str, "family": str, "width": int, "seq_len": int, M.VAL_ACC: NUMBER, M.STATE_BYTES: int}
OPTIONAL = {
    "lengths": list,
    "pairs": int,
    "modulus": int,
    M.PARAMS: int,
    M.TRAIN_STEPS: int,
    "lr": NUMBER,
    "intervals": dict,
    "curve": list,  # [step, val/acc] at every validation
    "max_steps": int,
    "solved": NUMBER,
    M.STEPS_TO_SOLVE: int,
    "negative_eigenvalues": bool,  # Mamba-2's and Gated DeltaNet's option (Grazzi et al. 2025), when on
}
REBUILD = "run `dvc repro synth/dvc.yaml` (or `lmlab synth` for that run) to write it again"


def load(folder: Path) -> list[dict[str, Any]]:
    runs = [{**read_json(path, REBUILD, REQUIRED, OPTIONAL), "path": path} for path in sorted(folder.glob("*.json"))]
    for run in runs:
        for key, value in run.get("intervals", {}).items():
            if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, NUMBER) for v in value)):
                raise LmlabError(f"{folder}: {run['family']}'s intervals.{key} is not [low, high]: {REBUILD}")
    return runs


def interval(run: dict[str, Any], key: str) -> tuple[float, float, float]:
    """The accuracy and its interval; an interval that was not written is the point itself."""
    value = float(run[key])
    low, high = run.get("intervals", {}).get(key, [value, value])
    return value, float(low), float(high)


def parity_verdict(low: float, high: float, chance: float) -> str:
    """Parity's verdict: "at chance" when the interval holds the accuracy of guessing (1/modulus)."""
    if low >= SOLVED:
        return "solved"
    if low <= chance <= high:
        return "at chance"
    return "partly"


def still_rising(run: dict[str, Any]) -> bool | None:
    """Whether a run that ended unsolved was still learning: its last validation's accuracy more than RISING
    above the best of those in the first three quarters of its steps. None where it cannot be told (a run
    made before lmlab recorded its curve, or one validation only)."""
    curve = run.get("curve") or []
    if len(curve) < 2:
        return None
    last_step, last_acc = curve[-1]
    earlier = [acc for step, acc in curve if step <= 0.75 * last_step]
    return bool(earlier) and last_acc - max(earlier) > RISING


def converged(verdict: str, run: dict[str, Any]) -> str:
    """The verdict at the training length. A run that met the stopping rule solved the task, even where its last
    validation's interval dips below SOLVED (the rule reads the accuracy, the interval its noise). A verdict
    short of solved is one of what the family can learn only where its curve had flattened; a run still rising
    at its budget has not converged, whatever its accuracy."""
    if verdict == "solved" or M.STEPS_TO_SOLVE in run:
        return "solved"
    rising = still_rising(run)
    if rising:
        return f"not converged at {run.get(M.TRAIN_STEPS, 0):,} steps"
    return verdict if rising is not None else f"{verdict} (convergence not recorded)"


def steps_to_solve(run: dict[str, Any]) -> str:
    if M.STEPS_TO_SOLVE in run:
        return f"{run[M.STEPS_TO_SOLVE]:,}"
    return f"> {run.get(M.TRAIN_STEPS, 0):,}" if M.TRAIN_STEPS in run else ""


def recall_verdict(low: float, pairs: int | None) -> str:
    """MQAR's verdict. A model that learns only the format names one of the context's `pairs` values at random
    (accuracy 1/pairs) without binding any key to its value: an interval reaching down to within RECALL_MARGIN
    of that is no recall."""
    if low >= SOLVED:
        return "solved"
    if pairs and low <= 1 / pairs + RECALL_MARGIN:
        return "no recall"
    return "partly"


RECIPE_CAVEAT = (
    "Each row is the family's run at the best of the learning rates tried (`synth/params.yaml`: `lrs`), chosen "
    "by accuracy at the training length, as Zoology reports: recurrent models recall and track state only in "
    "a narrow learning-rate window, which differs by family and moves with width (docs/diagnostics.md: on "
    "4-pair recall, Mamba-2 solves at lr 3e-3 and not at 5e-4, the Transformer at width 64 the reverse). A "
    "verdict holds for the rates and steps shown."
)
MQAR_SETTING = ("family", "negative_eigenvalues", "width", "seq_len", "pairs")
PARITY_SETTING = ("family", "negative_eigenvalues", "width", "seq_len", "modulus")


def model_name(run: dict[str, Any]) -> str:
    """The family, and the option that changes what it can track when it is on."""
    return f"{run['family']} (negative eigenvalues)" if run.get("negative_eigenvalues") else run["family"]


STOPPING = (
    f"Each run trains until its accuracy at the training length is at or above {SOLVED} at two validations in a "
    "row ('steps to solve': the step of the first of them) or to its step budget ('> N': not solved in N steps). "
    f"A run at its budget whose accuracy rose more than {RISING} over the last quarter of its steps is 'not "
    "converged at N steps', whatever its accuracy: 'partly', 'no recall' and 'at chance' are verdicts on runs "
    "whose curve had flattened."
)


def best_per_setting(runs: list[dict[str, Any]], setting: tuple[str, ...]) -> list[dict[str, Any]]:
    """Of the runs that differ only in learning rate, the one most accurate at the training length, with every
    rate tried and its accuracy under "tried" (the table shows them)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[tuple(run.get(key) for key in setting)].append(run)
    best = []
    for items in groups.values():
        by_lr: dict[Any, Path] = {}
        for run in items:
            if run.get("lr") in by_lr:
                raise LmlabError(
                    f"{by_lr[run.get('lr')]} and {run['path']} are runs of one setting at one learning rate "
                    f"({', '.join(f'{k} {run.get(k)}' for k in setting)}, lr {run.get('lr')}): remove one"
                )
            by_lr[run.get("lr")] = run["path"]
        # the most accurate; of runs that solved, the fastest
        chosen = max(items, key=lambda r: (M.STEPS_TO_SOLVE in r, -r.get(M.STEPS_TO_SOLVE, 0), r[M.VAL_ACC]))
        tried = {r["lr"]: r[M.VAL_ACC] for r in items if "lr" in r and r is not chosen}
        best.append({**chosen, "tried": tried})
    return best


def recipe(run: dict[str, Any]) -> str:
    """The learning rate and steps of the run shown, and the other rates tried with their accuracies."""
    lr = f"{run['lr']:g}" if "lr" in run else "?"
    others = "".join(f"; {other:g}: {acc:.3f}" for other, acc in sorted(run.get("tried", {}).items()))
    steps = f", {run[M.TRAIN_STEPS]:,} steps" if M.TRAIN_STEPS in run else ""
    return f"{lr}{steps}{others}"


def shown(value: float, low: float, high: float) -> str:
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def write_report(cfg: ReportConfig) -> Path:
    root = Path(cfg.synth_dir)
    mqar = best_per_setting(load(root / "mqar"), MQAR_SETTING)
    parity = best_per_setting(load(root / "parity"), PARITY_SETTING)
    if not mqar and not parity:
        raise LmlabError(f"no synthetic-task metrics in {root}/mqar or {root}/parity: run `dvc repro synth/dvc.yaml`")
    out = Path(cfg.out_dir) / "synth"
    colours = family_colours(sorted({run["family"] for run in mqar + parity}))
    lines = ["# Synthetic tasks", ""]
    with staged_dir(out) as staging:
        lines += [STOPPING, ""]
        if mqar:
            lines += mqar_section(mqar)
            mqar_plot(mqar, colours, staging / "mqar_accuracy_vs_state.png")
            steps_plot(mqar, colours, staging / "mqar_steps_vs_state.png")
        if parity:
            lines += parity_section(parity)
            parity_plot(parity, colours, staging / "parity_accuracy_vs_length.png")
        (staging / "synth.md").write_text("\n".join(lines) + "\n")
    return out / "synth.md"


def mqar_section(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Associative recall (MQAR)",
        "",
        "Key-value pairs, then each key again; accuracy at the answer positions of the validation examples "
        "with its 95% interval (bootstrap over examples); "
        f"'solved': the stopping rule met, or the whole interval at or above {SOLVED}; 'no recall': it reaches "
        f"down to within {RECALL_MARGIN} of 1/pairs, the accuracy of naming one of the context's values at random "
        "(the format learnt, at most a trace of binding); 'partly': above that. State: what the family carries "
        "after the sequence (a Transformer's KV cache of it). "
        f"{RECIPE_CAVEAT}",
        "",
        "![accuracy against state size](mqar_accuracy_vs_state.png)",
        "![steps to solve against state size](mqar_steps_vs_state.png)",
        "",
    ]
    header = ["family", "width", "length", "pairs", "params", "state KB", "lr, steps; other lrs", "accuracy"]
    header += ["steps to solve", "verdict"]
    rows = []
    for run in sorted(runs, key=lambda r: (model_name(r), r["seq_len"], r.get("pairs", 0), r["width"])):
        value, low, high = interval(run, M.VAL_ACC)
        verdict = converged(recall_verdict(low, run.get("pairs")), run)
        rows.append(
            [model_name(run), str(run["width"]), str(run["seq_len"]), str(run.get("pairs", ""))]
            + [f"{run.get(M.PARAMS, 0):,}", f"{run[M.STATE_BYTES] / 1024:,.1f}", recipe(run)]
            + [shown(value, low, high), steps_to_solve(run), verdict]
        )
    right = ("width", "length", "pairs", "params", "state KB", "steps to solve")
    return [*lines, *table(header, rows, right=right), ""]


def lengths_of(run: dict[str, Any]) -> list[int]:
    """The multiples of the training length a run was validated at (`task.lengths`)."""
    return [f for f in run.get("lengths", [1]) if M.val_acc_at(f) in run]


def parity_section(runs: list[dict[str, Any]]) -> list[str]:
    factors = sorted({f for run in runs for f in lengths_of(run)})
    lines = [
        "## Parity and counting (state tracking)",
        "",
        "The count of ones modulo m at every position of random bits (m = 2: parity), trained at the length "
        "given; at 1x every answer counts, at kx only the answers past the training length. 'at chance' when "
        f"the interval holds 1/m, 'solved' when it lies at or above {SOLVED} (at 1x, also when the run met the "
        f"stopping rule). {RECIPE_CAVEAT}",
        "",
        "![accuracy against length](parity_accuracy_vs_length.png)",
        "",
    ]
    header = ["family", "m", "length", "state KB", "lr, steps; other lrs", "steps to solve"]
    header += [f"{f}x" for f in factors]
    rows = []
    for run in sorted(runs, key=lambda r: (model_name(r), r.get("modulus", 2), r["seq_len"])):
        chance = 1 / run.get("modulus", 2)
        cells = []
        for factor in factors:
            key = M.val_acc_at(factor)
            if key not in run:
                cells.append("")
                continue
            value, low, high = interval(run, key)
            verdict = parity_verdict(low, high, chance)
            verdict = converged(verdict, run) if factor == 1 else verdict  # the curve is the training length's
            cells.append("no answers" if math.isnan(value) else f"{shown(value, low, high)} {verdict}")
        rows.append(
            [model_name(run), str(run.get("modulus", 2)), str(run["seq_len"]), f"{run[M.STATE_BYTES] / 1024:,.1f}"]
            + [recipe(run), steps_to_solve(run), *cells]
        )
    return [*lines, *table(header, rows, right=("m", "length", "state KB", "steps to solve")), ""]


def setting_of(run: dict[str, Any], runs: list[dict[str, Any]], keys: tuple[str, ...]) -> str:
    """The run's values of the keys the runs differ in ("T=128, pairs=8"), to tell its line apart."""
    differ = [k for k in keys if len({r.get(k) for r in runs}) > 1]
    return ", ".join(f"{LABELS[k]}={run.get(k)}" for k in differ)


LABELS = {"seq_len": "T", "pairs": "pairs", "modulus": "m"}


def mqar_lines(runs: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """The MQAR plots' lines: a family at one setting (the length and pairs the runs differ in), its runs in
    order of state size."""
    lines: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        lines[model_name(run), setting_of(run, runs, ("seq_len", "pairs"))].append(run)
    return [
        (name, setting, sorted(items, key=lambda r: r[M.STATE_BYTES]))
        for (name, setting), items in sorted(lines.items())
    ]


def mqar_plot(runs: list[dict[str, Any]], colours: dict[str, str], path: Path) -> None:
    with plot(path, (6.4, 4.2)) as ax:
        for name, setting, items in mqar_lines(runs):
            xs = [r[M.STATE_BYTES] / 1024 for r in items]
            points = [interval(r, M.VAL_ACC) for r in items]
            ax.errorbar(
                xs,
                [v for v, _, _ in points],
                yerr=[[v - lo for v, lo, _ in points], [hi - v for v, _, hi in points]],
                marker="o",
                capsize=3,
                color=colours[items[0]["family"]],
                linestyle="--" if items[0].get("negative_eigenvalues") else "-",
                label=f"{name} ({setting})" if setting else name,
            )
        for pairs in sorted({r["pairs"] for r in runs if "pairs" in r}):
            ax.axhline(1 / pairs, color="grey", linestyle=":", label=f"1/pairs ({pairs}): a context value at random")
        ax.set_xscale("log")
        ax.set_xlabel("state after the sequence (KB, log scale)")
        ax.set_ylabel("recall accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(PLOTS[path.name], fontsize=10)
        ax.legend(fontsize=8)


def parity_plot(runs: list[dict[str, Any]], colours: dict[str, str], path: Path) -> None:
    with plot(path, (6.4, 4.2)) as ax:
        for run in sorted(runs, key=lambda r: (model_name(r), r.get("modulus", 2), r["seq_len"])):
            setting = setting_of(run, runs, ("seq_len", "modulus"))
            factors = lengths_of(run)
            points = [interval(run, M.val_acc_at(f)) for f in factors]
            ax.errorbar(
                [f * run["seq_len"] for f in factors],
                [v for v, _, _ in points],
                yerr=[[v - lo for v, lo, _ in points], [hi - v for v, _, hi in points]],
                marker="o",
                capsize=3,
                color=colours[run["family"]],
                linestyle="--" if run.get("negative_eigenvalues") else "-",
                label=f"{model_name(run)} ({setting})" if setting else model_name(run),
            )
        for chance in sorted({1 / r.get("modulus", 2) for r in runs}):
            ax.axhline(chance, color="grey", linestyle=":", label="chance" if chance == 0.5 else f"chance {chance:.2f}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length (training length first)")
        ax.set_ylabel("accuracy (beyond the training length past 1x)")
        ax.set_ylim(0.0, 1.02)
        ax.set_title(PLOTS[path.name], fontsize=10)
        ax.legend(fontsize=8)


def steps_plot(runs: list[dict[str, Any]], colours: dict[str, str], path: Path) -> None:
    """Steps to solve against state size (a run not solved by its budget: an open marker at its budget)."""
    with plot(path, (6.4, 4.2)) as ax:
        for name, setting, items in mqar_lines(runs):
            family = items[0]["family"]
            solved = [r for r in items if M.STEPS_TO_SOLVE in r]
            label = f"{name} ({setting})" if setting else name
            if solved:  # a family none of whose runs solved is in the legend once, by its open markers
                ax.plot(
                    [r[M.STATE_BYTES] / 1024 for r in solved],
                    [r[M.STEPS_TO_SOLVE] for r in solved],
                    marker="o",
                    color=colours[family],
                    label=label,
                )
            unsolved = [r for r in items if M.STEPS_TO_SOLVE not in r and M.TRAIN_STEPS in r]
            if not unsolved:
                continue
            ax.scatter(
                [r[M.STATE_BYTES] / 1024 for r in unsolved],
                [r[M.TRAIN_STEPS] for r in unsolved],
                marker="^",
                facecolors="none",
                edgecolors=colours[family],
                label=None if solved else f"{label}: not solved by its budget",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("state after the sequence (KB, log scale)")
        ax.set_ylabel("optimizer steps to solve (open: budget, unsolved)")
        ax.set_title(PLOTS[path.name], fontsize=10)
        ax.legend(fontsize=8)
