"""The scaling report's plots (`lmlab.analysis.scaling` renders them): loss against compute per family with each
size's points and curves, the families' frontiers and fits, loss against non-embedding parameters, and loss by
position by size. Each fit is drawn over the range it saw only, shaded over its resamples' 95% band."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from lmlab.analysis.crossovers import Crossover
from lmlab.analysis.plots import log_loss_axis, plot
from lmlab.analysis.power_laws import FamilyFit, LawFit

PLOTS = {
    "scaling_compute.png": "Loss against training compute: each size's points, the frontier and its fit",
    "scaling_frontiers.png": "The families' compute frontiers and fits",
    "scaling_params.png": "Loss against non-embedding parameters (each size's lowest loss) and its fit",
    "scaling_position.png": "Loss by position, per family, by size",
}


def compute_plot(target: io.BytesIO, fits: list[FamilyFit], curves: dict, colours: dict[str, str]) -> None:
    """Each family's panel: every size's points and validation curves, the frontier and the fit."""
    with plot(target, (min(3.4 * len(fits), 24), 3.6), panels=len(fits), shared=True) as axes:
        for ax, fit in zip(np.atleast_1d(axes), fits, strict=True):
            colour = colours[fit.family]
            for i, size in enumerate(fit.sizes):
                shade = 0.35 + 0.65 * (i + 1) / len(fit.sizes)
                for (family, of, _), (flops, loss) in curves.items():
                    if family == fit.family and of == size:
                        ax.plot(flops, loss, color=colour, alpha=0.25 * shade, linewidth=0.8)
                cells = [c for c in fit.cells if c.size == size]
                ax.scatter(
                    [c.flops for c in cells],
                    [c.loss for c in cells],
                    color=colour,
                    alpha=shade,
                    s=14,
                    marker="os^Dv<>PX"[i % 9],
                    label=size,
                )
            ax.step(
                [c.flops for c in fit.frontier],
                [c.loss for c in fit.frontier],
                where="post",
                color="black",
                linewidth=0.8,
                label="frontier",
            )
            draw_law(ax, fit.compute, colour)
            ax.set_xscale("log")
            log_loss_axis(ax)
            ax.set_title(fit.family, fontsize=9)
            ax.set_xlabel("training FLOPs")
            ax.set_ylabel("validation loss (nats/token)")
            ax.legend(fontsize=6, title="size", title_fontsize=6)


def draw_law(ax: Any, law: LawFit, colour: str, label: str = "fit") -> None:
    """A fit over the range it saw (only where its points follow a power law), shaded over its bootstrap
    resamples' 95% pointwise interval."""
    if law.ok and law.law is not None:
        xs = np.geomspace(*law.span, 100)
        ax.plot(xs, law.law(xs), color=colour, linestyle="--", linewidth=1.2, label=label)
        band = law.band(xs)
        if band is not None:
            ax.fill_between(xs, *band, color=colour, alpha=0.15, linewidth=0)


def frontiers_plot(target: io.BytesIO, fits: list[FamilyFit], crossovers: list[Crossover], colours: dict) -> None:
    with plot(target, (6.4, 4.4)) as ax:
        for fit in fits:
            colour = colours[fit.family]
            ax.plot(
                [c.flops for c in fit.frontier],
                [c.loss for c in fit.frontier],
                "o",
                color=colour,
                markersize=4,
                label=fit.family,
            )
            draw_law(ax, fit.compute, colour, label="")
        for c in crossovers:
            for crossing in c.crossings:
                if crossing.measured:
                    ax.axvline(crossing.compute.estimate, color=colours[c.family], linestyle=":", linewidth=1)
        ax.set_xscale("log")
        log_loss_axis(ax)
        ax.set_xlabel("training FLOPs")
        ax.set_ylabel("validation loss on the frontier")
        ax.set_title(PLOTS["scaling_frontiers.png"] + " (shaded: 95% bootstrap band; dotted: crossings)", fontsize=9)
        ax.legend(fontsize=7)


def params_plot(target: io.BytesIO, fits: list[FamilyFit], colours: dict[str, str]) -> None:
    with plot(target, (6.4, 4.4)) as ax:
        for fit in fits:
            best: dict[str, Any] = {}
            for c in fit.cells:
                if c.params is not None and (c.size not in best or c.loss < best[c.size].loss):
                    best[c.size] = c
            points = sorted(best.values(), key=lambda c: c.params)
            ax.plot(
                [c.params for c in points],
                [c.loss for c in points],
                "o",
                color=colours[fit.family],
                markersize=4,
                label=fit.family,
            )
            draw_law(ax, fit.size, colours[fit.family], label="")
        ax.set_xscale("log")
        log_loss_axis(ax)
        ax.set_xlabel("non-embedding parameters")
        ax.set_ylabel("validation loss (each size's lowest)")
        ax.set_title(PLOTS["scaling_params.png"], fontsize=9)
        ax.legend(fontsize=7)


def position_plot(target: io.BytesIO, positions: dict, colours: dict[str, str]) -> None:
    families = sorted({family for family, _ in positions})
    with plot(target, (min(3.4 * len(families), 24), 3.4), panels=len(families), shared=True) as axes:
        for ax, family in zip(np.atleast_1d(axes), families, strict=True):
            sizes = sorted((s for f, s in positions if f == family), key=lambda s: (len(s), s))
            for i, size in enumerate(sizes):
                middle, loss = positions[family, size]
                ax.plot(middle, loss, color=colours[family], alpha=0.35 + 0.65 * (i + 1) / len(sizes), label=size)
            ax.set_xscale("log", base=2)
            ax.set_title(family, fontsize=9)
            ax.set_xlabel("position in the window")
            ax.set_ylabel("test loss")
            ax.legend(fontsize=6, title="size", title_fontsize=6)
