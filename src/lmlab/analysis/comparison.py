"""`lmlab report`: the families side by side, from what `lmlab evaluate` wrote.

Reads ``<metrics_dir>/<family>.json``, ``<metrics_dir>/curves/<family>/*.csv``,
``<samples_dir>/<family>/{sample.txt,examples.npz,setting.json}`` and, where `lmlab harness` wrote them,
``<metrics_dir>/harness/<family>/<task>.json`` (`lmlab.analysis.harness`); writes ``<out_dir>/comparison.md``,
``<out_dir>/summary.json`` (the headline test figures, the pipeline's DVC metrics)
(every compared figure with its 95% interval, verdicts that follow the intervals: `lmlab.analysis.figures`),
its PNG plots, and ``<out_dir>/curves/{pretrain,finetune,scratch}.csv``: every
family's curve in one file with a ``family`` column, which the top-level
``plots`` of dvc.yaml draw one line per family (template ``.dvc/plots/families.json``),
so that no family is named there. The metrics files are checked before anything is written;
everything is then written to a staging folder and moved into place at the end, so a failed
report leaves the previous one as it was, and no staging folder.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lmlab.analysis import harness, lengths
from lmlab.analysis.colours import family_colours
from lmlab.analysis.config import ReportConfig
from lmlab.analysis.evaluations import load, seed_folders
from lmlab.analysis.figures import pretraining_verdict
from lmlab.analysis.plots import plot
from lmlab.analysis.stats import CONFIDENCE, Interval
from lmlab.analysis.tables import table
from lmlab.core import metrics as M
from lmlab.core.atomic import NUMBER, staged_into, write_json

PLOTS = {  # every plot `report` draws, the length section's included
    "val_loss_vs_tokens.png": "Validation loss against training tokens",
    "val_loss_vs_time.png": "Validation loss against training wall time",
    "accuracy.png": "Test accuracy and macro F1: fine-tuned from pretraining vs. from scratch",
    "throughput.png": "Training and inference throughput",
    "val_loss_vs_flops.png": "Validation loss against training FLOPs",
    "pareto.png": "Test bits per byte against training FLOPs and wall time (lower left is better)",
    **lengths.PLOTS,
}
COLUMNS = [  # (header, metric key, format)
    ("params", M.PARAMS, "{:,.0f}"),
    ("non-emb params", M.NON_EMBEDDING_PARAMS, "{:,.0f}"),
    ("train s", M.TRAIN_WALL_SECONDS, "{:.0f}"),
    ("train tok/s", M.TRAIN_TOKENS_PER_SEC, "{:,.0f}"),
    ("infer tok/s", M.INFER_TOKENS_PER_SEC, "{:,.0f}"),
    ("gen ms/tok", M.INFER_MS_PER_TOKEN, "{:.2f}"),
    ("val ppl", M.VAL_PPL, "{:.1f}"),
    ("test ppl", M.TEST_PPL, "{:.1f}"),
    ("test bpb", M.TEST_BPB, "{:.3f}"),
    ("acc", M.TEST_ACC, "{:.3f}"),
    ("F1", M.TEST_F1, "{:.3f}"),
    ("scratch acc", M.SCRATCH_TEST_ACC, "{:.3f}"),
    ("scratch F1", M.SCRATCH_TEST_F1, "{:.3f}"),
]
SHOWN = {key: NUMBER for _, key, _ in COLUMNS}  # numbers where present, or the metrics file is damaged
# The columns shown with their interval, and where `Figures` holds it.
INTERVALS = {
    M.TEST_PPL: lambda f: f.ppl,
    M.TEST_BPB: lambda f: f.bpb,
    M.TEST_ACC: lambda f: f.accuracy.get(M.TEST),
    M.SCRATCH_TEST_ACC: lambda f: f.accuracy.get(M.SCRATCH_TEST),
}
COLLAPSE_MARKED = {M.TEST_ACC: M.TEST, M.SCRATCH_TEST_ACC: M.SCRATCH_TEST}


SUMMARY = "summary.json"  # the pipeline's DVC metrics file: `dvc exp show` columns <family>.bpb, <family>.acc
SUMMARY_METRICS = {"bpb": M.TEST_BPB, "acc": M.TEST_ACC}  # short names: the file holds test figures only


def summary(families: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The headline test figures per family, for `dvc exp show` / `dvc metrics diff`: a row per experiment
    that fits a terminal of 200 columns, where the per-family metrics files (every figure, one file each) make
    hundreds of columns."""
    return {
        family: {short: f["metrics"][key] for short, key in SUMMARY_METRICS.items() if key in f["metrics"]}
        for family, f in families.items()
    }


def write_report(cfg: ReportConfig) -> Path:
    families = load(cfg, SHOWN)
    benchmarks = harness.load(cfg, list(families), seed_folders(cfg))
    out = Path(cfg.out_dir)
    with staged_into(out, "out_dir") as staging:
        curve_plot(families, M.TRAIN_TOKENS, "training tokens", staging / "val_loss_vs_tokens.png")
        curve_plot(families, M.TRAIN_WALL_SECONDS, "training wall time (s)", staging / "val_loss_vs_time.png")
        accuracy_plot(families, staging / "accuracy.png")
        throughput_plot(families, staging / "throughput.png")
        curve_plot(families, M.TRAIN_FLOPS, "training FLOPs", staging / "val_loss_vs_flops.png", log_x=True)
        pareto_plot(families, staging / "pareto.png")
        lengths.plots(families, staging)
        (staging / "comparison.md").write_text(markdown(families, benchmarks))
        write_json(staging / SUMMARY, summary(families))
        combine_curves(families, staging / "curves")
    return out / "comparison.md"


def combine_curves(families: dict[str, dict[str, Any]], out: Path) -> None:
    """``<kind>.csv`` of every family's curve rows (their mean over the seeds), each with its family."""
    out.mkdir()
    for kind in M.CURVE_FILES:
        rows = [
            {"family": name, **{k: f"{v:.12g}" for k, v in row.items()}}
            for name, f in families.items()
            for row in f[kind]
        ]
        fields = list(dict.fromkeys(key for row in rows for key in row))
        with (out / f"{kind}.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields or ["family"])
            writer.writeheader()
            writer.writerows(rows)


def cell(f: dict[str, Any], key: str, fmt: str) -> str:
    """A figure as the table shows it: with its interval where it has one, marked where its classifier collapsed."""
    interval: Interval | None = INTERVALS[key](f["figures"]) if key in INTERVALS else None
    if interval is not None:
        digits = int(fmt.removeprefix("{:.").removesuffix("f}"))
        shown = interval.show(digits)
    elif isinstance(f["metrics"].get(key), int | float):
        shown = fmt.format(f["metrics"][key])
    else:
        return "—"
    return shown + (" (collapsed)" if COLLAPSE_MARKED.get(key) in f["figures"].collapsed else "")


def markdown(families: dict[str, dict[str, Any]], benchmarks: harness.HarnessFigures) -> str:
    header = ["family", *(c[0] for c in COLUMNS)]
    rows = [[name, *(cell(f, key, fmt) for _, key, fmt in COLUMNS)] for name, f in families.items()]
    majority: Interval = next(iter(families.values()))["figures"].majority
    baseline = ["majority class", *(majority.show(3) if key == M.TEST_ACC else "—" for _, key, _ in COLUMNS)]
    lines = [
        "# Model comparison",
        "",
        "One row per family, all trained on the same data and tokenizer, with the budget in the Setting "
        "(made by `lmlab report` from `metrics/seed<k>/<family>.json`; `dvc repro` rebuilds it). "
        f"Brackets: {CONFIDENCE:.0%} intervals ({how_intervals(families)}); overlapping intervals are no "
        "evidence of a difference.",
        "",
        *setting_lines(families),
        "",
        "## Results",
        "",
        *table(header, [*rows, baseline]),
        "",
        "- **params**: trainable parameters (a tied embedding counted once); **non-emb params**: those outside "
        "the embedding (and an untied output layer). **train s**, **train tok/s**: "
        "pretraining wall time and throughput (validation excluded from the throughput).",
        "- **infer tok/s**: forward passes over test windows; **gen ms/tok**: sampling one sequence token by "
        "token (carried state or KV cache).",
        "- **ppl**, **bpb**: perplexity and bits per UTF-8 byte of the corpus's val and test splits.",
        "- **acc**, **F1** (macro): the labeled set's test split, classifier fine-tuned from the pretrained "
        "model; **scratch**: the same classifier and recipe from random initialisation; **majority class**: "
        "predicting the train split's most frequent class for every document. **(collapsed)**: the classifier "
        "predicts one class for at least 95% of test documents.",
        "",
        *harness.section(benchmarks, {name: f["figures"].ppl for name, f in families.items()}),
        "## Does pretraining pay?",
        "",
        "Fine-tuned from the pretrained model minus the same recipe from scratch, on the same test documents "
        f"({'a t-interval over the seeds of the paired difference' if seeds_of(families) > 1 else 'a paired bootstrap'}"
        "): *beats* or *trails* only where the interval excludes zero.",
        "",
        *(pretraining_verdict(name, f["figures"]) for name, f in families.items()),
        "",
        *lengths.section(families),
        "## Plots",
        "",
        *(f"![{title}]({name})\n" for name, title in PLOTS.items()),
        "## Samples",
        "",
        "Each pretrained model continues the same prompt, the start of the test split's first document "
        f"(64 tokens, temperature 0.8, top-p 0.95): *{one_line(prompt_of(families))}*",
        "",
    ]
    for name, f in families.items():
        lines += [f"**{name}**", "", "> " + (one_line(f["sample"]) or "(no sample)"), ""]
    return "\n".join(lines)


def one_line(text: str) -> str:
    return " ".join(text.split())


def prompt_of(families: dict[str, dict[str, Any]]) -> str:
    return str(next(iter(families.values()))["setting"]["evaluation"].get("prompt", ""))


def seeds_of(families: dict[str, dict[str, Any]]) -> int:
    return len(next(iter(families.values()))["settings"])


def how_intervals(families: dict[str, dict[str, Any]]) -> str:
    seeds = seeds_of(families)
    if seeds > 1:
        return (
            f"{seeds} seeds: the mean and a t-interval over the seeds, which holds the training noise as well; "
            "the other columns and the curves are means over the seeds"
        )
    return "one seed: a bootstrap over test documents for accuracy, over blocks of test text for ppl and bpb"


def setting_lines(families: dict[str, dict[str, Any]]) -> list[str]:
    """What every figure was measured on: data, tokenizer, budget, device, seeds, code."""
    first = next(iter(families.values()))["setting"]
    corpus, labeled, evaluation = first["corpus"], first["labeled"], first["evaluation"]
    budgets = {name: f["setting"]["pretraining"] for name, f in families.items()}
    steps = {(b.get("steps"), b.get("tokens")) for b in budgets.values()}
    budget = (
        "{:,} steps, {:,.0f} tokens per family".format(*next(iter(steps)))
        if len(steps) == 1 and None not in next(iter(steps))
        else "; ".join(f"{name} {b.get('steps')} steps, {b.get('tokens'):,.0f} tokens" for name, b in budgets.items())
    )
    flops = [f"{name} {b['flops']:.2e}" for name, b in budgets.items() if isinstance(b.get("flops"), int | float)]
    if flops:
        budget += f"; training FLOPs (forward + backward, counted from each architecture): {', '.join(flops)}"
    pretraining = next(iter(budgets.values()))
    device = ", ".join(f"{k} {pretraining[k]}" for k in ("accelerator", "devices", "precision") if k in pretraining)
    settings = [setting for f in families.values() for setting in f["settings"]]
    seeds = sorted({str(setting["pretraining"].get("seed")) for setting in settings})
    tuning = sorted({str(s) for setting in settings for s in setting.get("fine-tuning seeds", {}).values()})
    splits = ", ".join(f"{split} {n:,}" for split, n in corpus.get("tokens", {}).items())
    documents = ", ".join(f"{split} {n:,}" for split, n in labeled.get("documents", {}).items())
    return [
        "## Setting",
        "",
        f"- **corpus** {corpus.get('name')}: tokens per split {splits}; **tokenizer** {first['tokenizer']}",
        f"- **labeled set** {labeled.get('name')} (classes {', '.join(map(str, labeled.get('classes', [])))}): "
        f"documents per split {documents}",
        f"- **pretraining budget**: {budget}" + (f"; {device}" if device else ""),
        f"- **seeds**: pretraining {', '.join(seeds)}; fine-tuning {', '.join(tuning)} (one seed per run; "
        f"{seeds_of(families)} per family)",
        f"- **evaluation**: the first {evaluation.get('test tokens', 0):,} test tokens, "
        f"{evaluation.get('test documents', 0):,} test documents, on {evaluation.get('device')}",
        f"- **code**: commit {first['commit']}",
    ]


def curve_plot(families: dict[str, dict[str, Any]], x: str, label: str, path: Path, log_x: bool = False) -> None:
    with plot(path, (7, 4.5)) as ax:
        if log_x:
            ax.set_xscale("log")
        colours = family_colours(list(families))
        for name, f in families.items():
            rows = [r for r in f["pretrain"] if x in r and M.VAL_LOSS in r]
            ax.plot([r[x] for r in rows], [r[M.VAL_LOSS] for r in rows], marker="o", label=name, color=colours[name])
        ax.set(xlabel=label, ylabel="validation loss (nats/token)", title=f"Validation loss against {label}")
        ax.grid(alpha=0.3)
        ax.legend()


def bars(
    path: Path,
    title: str,
    ylabel: str,
    groups: dict[str, list[float | Interval | None]],
    names: list[str],
    reference: tuple[str, Interval] | None = None,
) -> None:
    """Grouped bars: one group per family, one bar per series in `groups` (an `Interval` draws its error bar);
    missing values are left out. `reference`: a labelled horizontal line with its band (a baseline)."""
    with plot(path, (7, 4.5)) as ax:
        width = 0.8 / len(groups)
        for i, (series, values) in enumerate(groups.items()):
            xs = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(names))]
            shown = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
            heights = [v.estimate if isinstance(v, Interval) else v for _, v in shown]
            errors = [
                (v.estimate - v.low, v.high - v.estimate) if isinstance(v, Interval) else (0.0, 0.0) for _, v in shown
            ]
            drawn = ax.bar(
                [x for x, _ in shown],
                heights,
                width,
                label=series,
                yerr=list(zip(*errors, strict=True)) if any(e != (0.0, 0.0) for e in errors) else None,
                capsize=2,
            )
            ax.bar_label(drawn, fmt="%.3g", fontsize=7, rotation=90, padding=2)
        if reference is not None:
            label, line = reference
            ax.axhline(line.estimate, color="black", linestyle="--", linewidth=1, label=f"{label} {line.estimate:.3f}")
            ax.axhspan(line.low, line.high, color="black", alpha=0.08)
        ax.set_xticks(range(len(names)), names)
        ax.set(ylabel=ylabel, title=title)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.25)  # head room for the legend above the bars
        ax.legend(loc="upper center", ncols=2, fontsize=8)


def accuracy_plot(families: dict[str, dict[str, Any]], path: Path) -> None:
    """Accuracy with its 95% interval, macro F1, and the majority-class baseline as a line with its band."""
    groups: dict[str, list[float | Interval | None]] = {
        "accuracy, pretrained": [f["figures"].accuracy.get(M.TEST) for f in families.values()],
        "accuracy, from scratch": [f["figures"].accuracy.get(M.SCRATCH_TEST) for f in families.values()],
        "macro F1, pretrained": [f["metrics"].get(M.TEST_F1) for f in families.values()],
        "macro F1, from scratch": [f["metrics"].get(M.SCRATCH_TEST_F1) for f in families.values()],
    }
    majority = next(iter(families.values()))["figures"].majority
    title = f"Test accuracy ({CONFIDENCE:.0%} intervals) and F1: pretrained vs. from scratch"
    bars(path, title, "score", groups, list(families), ("majority class", majority))


def pareto_plot(families: dict[str, dict[str, Any]], path: Path) -> None:
    """Each family's test bpb (with its interval) against what its training cost: FLOPs (counted from the
    architecture, `flops_per_token`) and wall time on this machine. The dashed line joins the families no
    other beats on both axes (the Pareto front); a family without a FLOPs count is left out of that panel."""
    colours = family_colours(list(families))
    with plot(path, (10, 4.5), panels=2) as axes:
        costs = {
            "training FLOPs": lambda f: f["setting"]["pretraining"].get("flops"),
            "training wall time (s)": lambda f: f["metrics"].get(M.TRAIN_WALL_SECONDS),
        }
        for ax, (label, cost) in zip(axes, costs.items(), strict=True):
            points = []
            for name, f in families.items():
                x, bpb = cost(f), INTERVALS[M.TEST_BPB](f["figures"])
                if not isinstance(x, int | float) or bpb is None:
                    continue
                error = [[bpb.estimate - bpb.low], [bpb.high - bpb.estimate]]
                ax.errorbar(x, bpb.estimate, yerr=error, fmt="o", capsize=3, color=colours[name], label=name)
                points.append((x, bpb.estimate))
            front = [p for p in sorted(points) if not any(q[0] <= p[0] and q[1] < p[1] for q in points if q != p)]
            if len(front) > 1:
                ax.plot(*zip(*front, strict=True), linestyle="--", color="grey", alpha=0.6)
            if points and max(x for x, _ in points) > 10 * min(x for x, _ in points):  # costs over a decade apart
                ax.set_xscale("log")
            ax.set(xlabel=label, ylabel=f"test bits per byte ({CONFIDENCE:.0%} interval)")
            ax.grid(alpha=0.3)
        for ax in axes:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="small")
                break
        axes[0].figure.suptitle(PLOTS["pareto.png"])


def throughput_plot(families: dict[str, dict[str, Any]], path: Path) -> None:
    series = {"training": M.TRAIN_TOKENS_PER_SEC, "inference": M.INFER_TOKENS_PER_SEC}
    groups = {label: [f["metrics"].get(key) for f in families.values()] for label, key in series.items()}
    bars(path, "Throughput", "tokens per second", groups, list(families))
