"""The comparison report's length section: loss by position, loss past the training window, and generation
cost against length, from the curve files `lmlab evaluate` writes (`lmlab.jobs.long_context`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmlab.analysis.colours import family_colours
from lmlab.analysis.plots import plot
from lmlab.analysis.tables import table
from lmlab.core.metrics import GENERATION_FILE, LENGTH_FILE, POSITION_FILE

PLOTS = {
    "loss_by_position.png": "Test loss by position in windows read from a fresh state",
    "loss_vs_length.png": "Test loss at the training window and past it (2x, 4x)",
    "generation_vs_length.png": "Generation: ms per token and state size against length",
}
CURVES = (POSITION_FILE, LENGTH_FILE, GENERATION_FILE)


def section(families: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown: a row per family with the loss at each multiple of the training window (with its interval)
    and the generation cost at the shortest and longest length measured."""
    factors = sorted({int(r["factor"]) for f in families.values() for r in f[LENGTH_FILE]})
    lengths = sorted({int(r["length"]) for f in families.values() for r in f[GENERATION_FILE]})
    if not factors and not lengths:
        return []
    ends = [lengths[0], lengths[-1]] if len(lengths) > 1 else lengths
    header = [
        "family",
        *(f"loss {k}x" for k in factors),
        *(f"gen ms/tok @{n}" for n in ends),
        *(f"state KB @{n}" for n in ends),
    ]
    rows = []
    for name, f in families.items():
        by_factor = {int(r["factor"]): r for r in f[LENGTH_FILE]}
        by_length = {int(r["length"]): r for r in f[GENERATION_FILE]}
        loss = [
            f"{r['loss']:.3f} [{r['low']:.3f}, {r['high']:.3f}]" if (r := by_factor.get(k)) else "—" for k in factors
        ]
        ms = [f"{r['ms_per_token']:.2f}" if (r := by_length.get(n)) else "—" for n in ends]
        kb = [f"{r['state_bytes'] / 1024:,.1f}" if (r := by_length.get(n)) else "—" for n in ends]
        rows.append([name, *loss, *ms, *kb])
    return [
        "## Length: how far each family uses its context, past the training window, and what generation costs",
        "",
        "Test text in windows of 4x the training window, each read from a fresh state. **loss 1x**: nats per "
        "token at the training window's positions; **loss kx**: at the positions past it, up to k times its "
        "length (what no training window reached); bootstrap intervals over windows (several seeds: the seeds' "
        "mean and t-interval). A Transformer with rotary "
        "positions is run past its context with the same weights, one with learned positions has no figure "
        "there (—). **gen ms/tok @n**: one sequence, the ms per token generating the 32 tokens before length n "
        "one at a time (those before them read as a prompt); **state KB @n**: what the family carries there "
        "(a KV cache grows with n, a recurrent state does not).",
        "",
        *table(header, rows),
        "",
    ]


def plots(families: dict[str, dict[str, Any]], folder: Path) -> None:
    """The three plots; one without data (evaluations made before lmlab measured lengths) says so."""
    colours = family_colours(list(families))
    position_plot(families, colours, folder / "loss_by_position.png")
    length_plot(families, colours, folder / "loss_vs_length.png")
    generation_plot(families, colours, folder / "generation_vs_length.png")


def position_plot(families: dict[str, dict[str, Any]], colours: dict[str, str], path: Path) -> None:
    with plot(path, (7, 4.5)) as ax:
        for name, f in families.items():
            rows = f[POSITION_FILE]
            middle = [(r["position_from"] + r["position_to"] - 1) / 2 + 1 for r in rows]  # 1-based positions
            ax.plot(middle, [r["loss"] for r in rows], marker="o", label=name, color=colours[name])
        log_scale(ax, "x", any(f[POSITION_FILE] for f in families.values()), base=2)
        ax.set(xlabel="position in the window (log2 buckets)", ylabel="test loss (nats/token)", title=PLOTS[path.name])
        ax.grid(alpha=0.3)
        ax.legend()


def length_plot(families: dict[str, dict[str, Any]], colours: dict[str, str], path: Path) -> None:
    with plot(path, (7, 4.5)) as ax:
        for name, f in families.items():
            rows = f[LENGTH_FILE]
            ax.errorbar(
                [r["factor"] for r in rows],
                [r["loss"] for r in rows],
                yerr=[[r["loss"] - r["low"] for r in rows], [r["high"] - r["loss"] for r in rows]],
                marker="o",
                capsize=3,
                label=name,
                color=colours[name],
            )
        log_scale(ax, "x", any(f[LENGTH_FILE] for f in families.values()), base=2)
        ax.set(xlabel="window / training window", ylabel="test loss (nats/token)", title=PLOTS[path.name])
        ax.grid(alpha=0.3)
        ax.legend()


def generation_plot(families: dict[str, dict[str, Any]], colours: dict[str, str], path: Path) -> None:
    with plot(path, (10, 4.2), panels=2) as (speed, memory):
        for name, f in families.items():
            rows = f[GENERATION_FILE]
            lengths = [r["length"] for r in rows]
            speed.plot(lengths, [r["ms_per_token"] for r in rows], marker="o", label=name, color=colours[name])
            memory.plot(lengths, [r["state_bytes"] / 1024 for r in rows], marker="o", label=name, color=colours[name])
        speed.set(xlabel="length (tokens)", ylabel="ms per generated token")
        memory.set(xlabel="length (tokens)", ylabel="state (KB)")
        measured = any(f[GENERATION_FILE] for f in families.values())
        for ax in (speed, memory):
            log_scale(ax, "x", measured)
            log_scale(ax, "y", measured)
            ax.grid(alpha=0.3)
        speed.legend(fontsize=8)
        speed.figure.suptitle(PLOTS[path.name], fontsize=11)


def log_scale(ax: Any, axis: str, measured: bool, base: int = 10) -> None:
    """A log axis where there is data; without any, a note in the plot instead (log scaling needs data)."""
    if measured:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=base)
    elif axis == "x":
        ax.text(0.5, 0.5, "not measured: evaluate again", ha="center", va="center", transform=ax.transAxes)
