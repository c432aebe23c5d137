"""`lmlab report`: the families side by side, from what `lmlab evaluate` wrote.

Reads ``<metrics_dir>/<family>.json``, ``<metrics_dir>/curves/<family>/*.csv``
and ``<samples_dir>/<family>/sample.txt``; writes ``<out_dir>/comparison.md``,
its PNG plots, and ``<out_dir>/curves/{pretrain,finetune,scratch}.csv``: every
family's curve in one file with a ``family`` column, which the top-level
``plots`` of dvc.yaml draw one line per family (template ``.dvc/plots/families.json``),
so that no family is named there. The metrics files are checked before anything is written;
everything is then written to a staging folder and moved into place at the end, so a failed
report leaves the previous one as it was, and no staging folder.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # not pyplot: files only, no display backend or global state
from omegaconf import OmegaConf

from lmlab import metrics as M
from lmlab.config import ReportConfig
from lmlab.data.atomic import NUMBER, check_keys, read_json
from lmlab.errors import LmlabError

PLOTS = {
    "val_loss_vs_tokens.png": "Validation loss against training tokens",
    "val_loss_vs_time.png": "Validation loss against training wall time",
    "accuracy.png": "Test accuracy and macro F1: fine-tuned from pretraining vs. from scratch",
    "throughput.png": "Training and inference throughput",
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
# What `lmlab evaluate` always writes, and the figures the report shows when present: numbers, or the file is damaged.
REQUIRED = {M.TEST_ACC: NUMBER, M.TEST_F1: NUMBER}
SHOWN = {key: NUMBER for _, key, _ in COLUMNS}


def family_names(cfg: ReportConfig) -> list[str]:
    if cfg.families is not None:
        names = list(cfg.families)
    else:
        params = Path(cfg.params_file)
        if not params.is_file():
            raise LmlabError(f"families=null reads them from {params}, which does not exist; give families=[...]")
        names = list(OmegaConf.load(params).get("families") or [])
    if not names:
        raise LmlabError("no families to report: give families=[gru,transformer,...] (or list them in params.yaml)")
    return names


def load(cfg: ReportConfig) -> dict[str, dict[str, Any]]:
    """Each family's metrics, curves and sample; a missing or damaged file names the stage that makes it."""
    families: dict[str, dict[str, Any]] = {}
    for family in family_names(cfg):
        path = Path(cfg.metrics_dir) / f"{family}.json"
        rebuild = f"run `dvc repro evaluate@{family}` (or `lmlab evaluate family={family}`)"
        metrics = read_json(path, rebuild, REQUIRED, SHOWN)
        if M.SCRATCH_TEST_ACC in metrics:  # the baseline's figures come as a pair, as its verdict reads them
            check_keys(metrics, path, rebuild, {M.SCRATCH_TEST_F1: NUMBER})
        curves = Path(cfg.metrics_dir) / "curves" / family
        sample = Path(cfg.samples_dir) / family / "sample.txt"
        families[family] = {
            "metrics": metrics,
            "pretrain": read_curve(curves / f"{M.PRETRAIN_CURVE_FILE}.csv"),
            "sample": sample.read_text().strip() if sample.is_file() else "",
        }
    return families


def read_curve(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def report(cfg: ReportConfig) -> Path:
    families = load(cfg)
    out = Path(cfg.out_dir)
    staging = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        curve_plot(families, M.TRAIN_TOKENS, "training tokens", staging / "val_loss_vs_tokens.png")
        curve_plot(families, M.TRAIN_WALL_SECONDS, "training wall time (s)", staging / "val_loss_vs_time.png")
        accuracy_plot(families, staging / "accuracy.png")
        throughput_plot(families, staging / "throughput.png")
        (staging / "comparison.md").write_text(markdown(families))
        combine_curves(Path(cfg.metrics_dir) / "curves", list(families), staging / "curves")
        out.mkdir(parents=True, exist_ok=True)
        for item in staging.iterdir():
            if item.is_dir():
                shutil.rmtree(out / item.name, ignore_errors=True)
            item.replace(out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "comparison.md"


def combine_curves(curves_dir: Path, families: list[str], out: Path) -> None:
    """``<kind>.csv`` of every family's ``<curves_dir>/<family>/<kind>.csv`` rows, each with its family."""
    out.mkdir()
    for kind in M.CURVE_FILES:
        rows: list[dict[str, str]] = []
        for family in families:
            path = curves_dir / family / f"{kind}.csv"
            if path.is_file():
                with path.open(newline="") as f:
                    rows += [{"family": family, **row} for row in csv.DictReader(f)]
        fields = list(dict.fromkeys(key for row in rows for key in row))
        with (out / f"{kind}.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields or ["family"])
            writer.writeheader()
            writer.writerows(rows)


def cell(metrics: dict[str, Any], key: str, fmt: str) -> str:
    return fmt.format(metrics[key]) if isinstance(metrics.get(key), int | float) else "—"


def markdown(families: dict[str, dict[str, Any]]) -> str:
    header = ["family", *(c[0] for c in COLUMNS)]
    rows = [[name, *(cell(f["metrics"], key, fmt) for _, key, fmt in COLUMNS)] for name, f in families.items()]
    lines = [
        "# Model comparison",
        "",
        "One row per family, all trained on the same data, tokenizer, steps and schedule "
        "(made by `lmlab report` from `metrics/<family>.json`; `dvc repro` rebuilds it).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        "- **params**: trainable parameters (a tied embedding counted once); **non-emb params**: those outside "
        "the embedding (and an untied output layer). **train s**, **train tok/s**: "
        "pretraining wall time and throughput (validation excluded from the throughput).",
        "- **infer tok/s**: forward passes over test windows; **gen ms/tok**: sampling one sequence token by "
        "token (carried state or KV cache).",
        "- **ppl**, **bpb**: perplexity and bits per UTF-8 byte of the corpus's val and test splits.",
        "- **acc**, **F1** (macro): the labeled set's test split, classifier fine-tuned from the pretrained "
        "model; **scratch**: the same classifier and recipe from random initialisation.",
        "",
        "## Does pretraining pay?",
        "",
        *verdicts(families),
        "",
        "## Plots",
        "",
        *(f"![{title}]({name})\n" for name, title in PLOTS.items()),
        "## Samples",
        "",
        "Generated by each pretrained model from an empty prompt (64 tokens, temperature 0.8, top-p 0.95).",
        "",
    ]
    for name, f in families.items():
        lines += [f"**{name}**", "", "> " + (f["sample"].replace("\n", " ") or "(no sample)"), ""]
    return "\n".join(lines)


def verdicts(families: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for name, f in families.items():
        m = f["metrics"]
        if M.TEST_ACC not in m or M.SCRATCH_TEST_ACC not in m:
            out.append(f"- {name}: no from-scratch baseline was evaluated")
            continue
        gain = m[M.TEST_ACC] - m[M.SCRATCH_TEST_ACC]
        if abs(gain) < 0.0005:
            verdict = "ties with from scratch"
        else:
            verdict = f"{'beats' if gain > 0 else 'trails'} from scratch by {abs(gain) * 100:.1f} accuracy points"
        out.append(
            f"- {name}: pretrained {verdict} ({m['test/acc']:.3f} vs {m['scratch/test/acc']:.3f}; "
            f"F1 {m['test/f1']:.3f} vs {m['scratch/test/f1']:.3f})"
        )
    return out


def family_colours(names: list[str]) -> dict[str, str]:
    """One colour per family, the same in every plot: Tableau's 10 (matplotlib's tab10, Vega's category10,
    which .dvc/plots/families.json names) in the families' alphabetical order, as DVC's plots assign them."""
    palette = [f"C{i}" for i in range(10)]
    return {name: palette[i % len(palette)] for i, name in enumerate(sorted(names))}


def curve_plot(families: dict[str, dict[str, Any]], x: str, label: str, path: Path) -> None:
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    colours = family_colours(list(families))
    for name, f in families.items():
        rows = [r for r in f["pretrain"] if x in r and M.VAL_LOSS in r]
        ax.plot([r[x] for r in rows], [r[M.VAL_LOSS] for r in rows], marker="o", label=name, color=colours[name])
    ax.set(xlabel=label, ylabel="validation loss (nats/token)", title=f"Validation loss against {label}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def bars(path: Path, title: str, ylabel: str, groups: dict[str, list[float | None]], names: list[str]) -> None:
    """Grouped bars: one group per family, one bar per series in `groups`; missing values are left out."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    width = 0.8 / len(groups)
    for i, (series, values) in enumerate(groups.items()):
        xs = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(names))]
        shown = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
        drawn = ax.bar([x for x, _ in shown], [v for _, v in shown], width, label=series)
        ax.bar_label(drawn, fmt="%.3g", fontsize=7, rotation=90, padding=2)
    ax.set_xticks(range(len(names)), names)
    ax.set(ylabel=ylabel, title=title)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.25)  # head room for the legend above the bars
    ax.legend(loc="upper center", ncols=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def accuracy_plot(families: dict[str, dict[str, Any]], path: Path) -> None:
    series = {
        "accuracy, pretrained": M.TEST_ACC,
        "accuracy, from scratch": M.SCRATCH_TEST_ACC,
        "macro F1, pretrained": M.TEST_F1,
        "macro F1, from scratch": M.SCRATCH_TEST_F1,
    }
    groups = {label: [f["metrics"].get(key) for f in families.values()] for label, key in series.items()}
    bars(path, "Test accuracy and F1: pretrained vs. from scratch", "score", groups, list(families))


def throughput_plot(families: dict[str, dict[str, Any]], path: Path) -> None:
    series = {"training": M.TRAIN_TOKENS_PER_SEC, "inference": M.INFER_TOKENS_PER_SEC}
    groups = {label: [f["metrics"].get(key) for f in families.values()] for label, key in series.items()}
    bars(path, "Throughput", "tokens per second", groups, list(families))
