"""Where one family's fitted compute frontier crosses another's (a recurrent family against the Transformer).

The crossings are the roots of L_1(C) - L_2(C) (two power laws in C cross at most twice) within a window
reaching DECADES decades beyond the compute either fit saw; each comes with a 95% percentile interval from the
families' bootstrap fits (resample i of one against resample i of the other, each resample's crossing nearest
the estimate). A crossing inside the compute both fits saw is a measurement; outside it, an extrapolation,
said with the ranges. No crossing in the window is said too, with the family that is lower throughout. Where
either law is bent (`LawFit.extrapolates`: its exponent is only its range's slope), the window is the compute
both fits saw: nothing is extrapolated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmlab.analysis.power_laws import FamilyFit, interval, laws_at
from lmlab.analysis.stats import Interval

DECADES = 3
STEPS = 2001  # points of the window's log grid the roots are found between (linear interpolation)


@dataclass(frozen=True)
class Crossing:
    compute: Interval  # training FLOPs
    share: float  # of the resamples whose frontiers cross within the window
    measured: bool  # inside the compute both fits saw
    lower_above: str  # the family whose loss is lower above the crossing


@dataclass(frozen=True)
class Crossover:
    family: str
    reference: str
    crossings: list[Crossing]
    spans: dict[str, tuple[float, float]]  # the compute each fit saw
    window: tuple[float, float]
    lower: str  # without a crossing: the family lower throughout the window
    share: float  # of the resamples whose frontiers cross anywhere in the window
    reason: str = ""  # why there is none to compute
    bent: tuple[str, ...] = ()  # the families whose law is bent: the window is the compute both fits saw

    def window_said(self) -> str:
        if self.bent:
            return f"the compute both fits saw; {' and '.join(self.bent)}'s law bends, so it is not extrapolated"
        return f"the measured compute and {DECADES} decades beyond it"

    def statement(self) -> str:
        if self.reason:
            return f"not computed: {self.reason}"
        if not self.crossings:
            crossed = f"; {self.share:.0%} of the resamples cross" if self.share else ""
            return (
                f"no crossing within {flops(self.window[0])}-{flops(self.window[1])} FLOPs ({self.window_said()}): "
                f"{self.lower} is lower throughout{crossed}"
            )
        return "; ".join(self.describe(c) for c in self.crossings)

    def describe(self, crossing: Crossing) -> str:
        c = crossing.compute
        where = (
            "within the compute both fits saw"
            if crossing.measured
            else "an extrapolation: the fits saw "
            + ", ".join(f"{name} {flops(lo)}-{flops(hi)}" for name, (lo, hi) in self.spans.items())
        )
        return (
            f"cross at {flops(c.estimate)} FLOPs [{flops(c.low)}, {flops(c.high)}] ({crossing.share:.0%} of the "
            f"resamples cross), {crossing.lower_above} lower above it; {where}"
        )


def flops(value: float) -> str:
    return f"{value:.2g}" if np.isfinite(value) else "?"


def crossover(fit: FamilyFit, reference: FamilyFit) -> Crossover:
    """Where `fit`'s frontier crosses `reference`'s (module docstring)."""
    names = (fit.family, reference.family)
    laws = (fit.compute, reference.compute)
    spans = {name: law.span for name, law in zip(names, laws, strict=True)}
    bad = [name for name, law in zip(names, laws, strict=True) if not law.ok]
    if bad:
        why = f"{' and '.join(bad)}'s frontier {'does' if len(bad) == 1 else 'do'} not follow a power law"
        return Crossover(*names, [], spans, (np.nan, np.nan), "", 0.0, why)
    low, high = min(s[0] for s in spans.values()), max(s[1] for s in spans.values())
    both = (max(s[0] for s in spans.values()), min(s[1] for s in spans.values()))
    bent = tuple(name for name, law in zip(names, laws, strict=True) if not law.extrapolates)
    if bent and both[0] >= both[1]:
        why = f"the fits saw no compute in common, and {' and '.join(bent)}'s law bends (not extrapolated)"
        return Crossover(*names, [], spans, (np.nan, np.nan), "", 0.0, why, bent)
    window = both if bent else (low / 10**DECADES, high * 10**DECADES)
    grid = np.geomspace(*window, STEPS)
    estimate = np.array([[laws[0].law.a, laws[0].law.b, laws[0].law.c]])
    found = roots(estimate, np.array([[laws[1].law.a, laws[1].law.b, laws[1].law.c]]), grid)[0]
    boot = roots(laws[0].resampled, laws[1].resampled, grid)
    crossed = np.isfinite(boot).any(axis=1)
    share = float(crossed.mean())
    crossings = []
    for log_c in found[np.isfinite(found)]:
        nearest = np.full(len(boot), np.nan)
        rows = np.flatnonzero(crossed)
        nearest[rows] = boot[rows, np.nanargmin(np.abs(boot[rows] - log_c), axis=1)]
        compute = interval(np.exp(nearest), float(np.exp(log_c)), "both families' bootstrap resamples, paired")
        above = np.exp(log_c + 0.01)
        lower = names[0] if laws[0].law(above) < laws[1].law(above) else names[1]
        measured = both[0] <= compute.estimate <= both[1]
        crossings.append(Crossing(compute, share, bool(measured), lower))
    middle = float(np.sqrt(window[0] * window[1]))
    lower = names[0] if laws[0].law(middle) < laws[1].law(middle) else names[1]
    return Crossover(*names, crossings, spans, window, lower, share, bent=bent)


def roots(first: np.ndarray, second: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(R, len(grid) - 1) log compute of each sign change of L_1 - L_2 between neighbouring grid points, NaN
    elsewhere; rows of a, b, c (NaN rows: failed fits, no roots)."""
    log_grid = np.log(grid)
    with np.errstate(invalid="ignore"):
        d = laws_at(first, grid) - laws_at(second, grid)
        change = np.sign(d[:, 1:]) * np.sign(d[:, :-1]) < 0
        at = log_grid[:-1] + (log_grid[1:] - log_grid[:-1]) * d[:, :-1] / (d[:, :-1] - d[:, 1:])
    return np.where(change, at, np.nan)
