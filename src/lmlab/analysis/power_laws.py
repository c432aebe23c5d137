"""Scaling laws of a set of runs: each family's compute-efficient frontier, power laws fitted to it with
bootstrap intervals over runs, the compute-optimal size, and where two families' fitted frontiers cross.

Pure numpy: the study's report (`lmlab report study=scaling`) and the tool (`lmlab scaling`) both fit here, on
`Point`s from wherever the runs came from. The rules (docs/scaling.md says why):

- Configurations. Runs of one family at one size and one training compute (seeds) are one configuration, whose
  loss is the mean of theirs. A point from a run's validation curve (`final=False`) is never merged with a run's
  end: an intermediate loss of a cosine run is not the loss of a run of that length (Chinchilla's caveat).
- Frontier. A configuration is on the frontier when its loss is the lowest at its compute and lower than that
  of every configuration with less compute (the lower envelope: the best loss reached at each compute).
- Fits. `L(C) = a C^-b + c` on the frontier; `L(N) = a N^-b + c` on each size's lowest loss (non-embedding
  parameters N, Kaplan et al.'s Figure 7: at the largest budget a size was trained to); `N_opt(C) = k C^e` by
  least squares in logs on the sizes of the frontier. A law is fitted by profiling its exponent over a grid of
  b in [B_ZERO, B_MAX] (no starting point to get wrong: every b is tried), each b's (a, c) by weighted least
  squares on the relative residuals (the log residuals to first order) with Huber weights (IRLS, threshold
  HUBER): a > 0, 0 <= c <= the lowest loss fitted.
- Intervals. 95% percentile intervals from a bootstrap over runs (seeded), never from the fit's covariance: the
  configurations, frontier and fits are rebuilt from each draw. Where every configuration has several runs
  (seeds), each configuration's runs are drawn with replacement among themselves (the departure of their mean
  rescaled for the few seeds, `Grid.draw`): the grid stays, the noise of a run is what varies. Otherwise the
  runs are drawn with replacement from all of the family's: which configurations were measured varies too, and
  a short frontier gives wide intervals (or an undetermined fit).
- Verdict. A law is a power law unless: fewer than MIN_POINTS points were fitted (the frontier of a family
  whose loss does not keep falling with compute is short); the interval of b reaches B_ZERO (no fall); the fall
  the law gives over the range is within FLAT times the residual RMSE (flat); or, where seeds measure the
  noise of a configuration, the residual RMSE exceeds LACK_OF_FIT times it (the points bend away from the law)
  and DESCRIBES too. Between the two (the points bend away from the law by more than their noise, but it stays
  within DESCRIBES of them) the law is *bent*: its exponent is the range's slope, its intervals come from runs
  drawn across configurations (which ones were measured varies, so the bend widens them), and it is never
  extrapolated.
  A fit that fails (fewer than MIN_FIT points, or no exponent fits) in more than MAX_FAILED of the resamples is
  undetermined: too few runs near the frontier for an interval.
  A family given fewer than MIN_POINTS configurations or MIN_SIZES sizes is refused (LmlabError).
- Crossovers: see `crossover`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from lmlab.analysis.configurations import BY_SEEDS, Cell, Grid, Point, interior
from lmlab.analysis.stats import CONFIDENCE, SEED, Interval
from lmlab.core.errors import LmlabError

RESAMPLES = 1000
MIN_SIZES = 3  # sizes a family needs (and the frontier, for N_opt)
MIN_POINTS = 5  # points a law is fitted to: three parameters and two to test them
MIN_FIT = 4  # a resample with fewer points fits nothing
HUBER = 0.01  # log residuals beyond 1% count linearly (outliers)
HUBER_PASSES = 3
B_ZERO, B_MAX = 1e-3, 3.0
B_GRID = np.geomspace(B_ZERO, B_MAX, 161)  # 5% apart; the best is refined by a parabola
MAX_FAILED = 0.1
FLAT = 2.0
LACK_OF_FIT = 2.0
DESCRIBES = 0.01  # residual RMSE in log loss (1%) within which a law bent away from the seeds' noise still describes
POWER_LAW = "power law"
BENT = "bent"
FRONTIER_SHORT = "the loss stops falling as compute grows, or the grid needs more budgets"


@dataclass(frozen=True)
class PowerLaw:
    a: float
    b: float
    c: float

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        return np.exp(np.log(self.a) - self.b * np.log(x)) + self.c


def laws_at(params: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(R, len(x)) values of R laws (rows of a, b, c; a NaN row, a failed fit, stays NaN) at x."""
    a, b, c = (params[:, k : k + 1] for k in range(3))
    with np.errstate(invalid="ignore"):
        return np.exp(np.log(a) - b * np.log(x)) + c


def local_exponent(params: np.ndarray, x: float) -> np.ndarray:
    """-d ln L / d ln x of R laws (rows of a, b, c; NaN rows stay NaN) at x."""
    a, b, c = params[:, 0], params[:, 1], params[:, 2]
    with np.errstate(invalid="ignore"):
        term = np.exp(np.log(a) - b * np.log(x))
        return b * term / (term + c)


@dataclass(frozen=True)
class LawFit:
    """A fitted law with its intervals (`a`, `b`, `c`; `k`, `e` for N_opt), or only the verdict saying why not."""

    verdict: str
    law: PowerLaw | None = None
    intervals: dict[str, Interval] = field(default_factory=dict)
    rmse: float = float("nan")  # of the residuals in log loss
    span: tuple[float, float] = (float("nan"), float("nan"))  # the range of x it saw
    resampled: np.ndarray | None = None  # (resamples, parameters), NaN where the resample's fit failed
    how: str = ""  # how the resamples were drawn

    @property
    def ok(self) -> bool:
        """Figures to show: a power law, or a bent one (its range's slope)."""
        return self.verdict == POWER_LAW or self.bent

    @property
    def bent(self) -> bool:
        return self.verdict.startswith(BENT)

    @property
    def extrapolates(self) -> bool:
        """Whether the law may be read beyond the range it saw (marked as an extrapolation): not a bent one."""
        return self.verdict == POWER_LAW

    def band(self, x: np.ndarray) -> np.ndarray | None:
        """(2, len(x)): the 95% pointwise interval of the law at x over its resamples' fits (percentiles, as its
        parameters'); None without resamples."""
        if self.resampled is None or not np.isfinite(self.resampled[:, 0]).any():
            return None
        drawn = laws_at(self.resampled[np.isfinite(self.resampled[:, 0])], x)
        return np.quantile(drawn, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2], axis=0)

    def local(self, x: float) -> tuple[np.ndarray, np.ndarray]:
        """The law's value at x and its local exponent there, -d ln L / d ln x, for the fit (element 0) and each
        resample (NaN where its fit failed). The local exponent, b a x^-b / (a x^-b + c), is the alpha of the law
        without an offset (Kaplan et al.'s form, L = (x_c / x)^alpha) tangent to this one at x."""
        assert self.law is not None and self.resampled is not None
        rows = np.r_[[[self.law.a, self.law.b, self.law.c]], self.resampled]
        return laws_at(rows, np.array([x]))[:, 0], local_exponent(rows, x)

    def drawn_across(self, resampled: np.ndarray, how: str) -> LawFit:
        """The (bent) law with intervals from other resamples, drawn across configurations; undetermined, with no
        figures, where too many of those fail."""
        assert self.law is not None
        failed = float(np.isnan(resampled[:, 0]).mean())
        if failed > MAX_FAILED:
            return LawFit(f"{undetermined(failed)} (drawn across configurations: the points bend away from the law)")
        estimates = (self.law.a, self.law.b, self.law.c)
        return replace(self, intervals=law_intervals(resampled, estimates, how), resampled=resampled, how=how)


@dataclass(frozen=True)
class FamilyFit:
    family: str
    sizes: list[str]  # smallest first
    cells: list[Cell]
    frontier: list[Cell]
    compute: LawFit  # L(C) on the frontier
    size: LawFit  # L(N) on each size's lowest loss
    optimal: LawFit  # N_opt(C) = k C^e: intervals k and e, no `law`
    noise: float | None  # a configuration's log-loss noise, from seeds; None with one run per configuration
    curves: bool  # validation-curve points among the fitted


def fit_laws(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(R, 3) a, b, c of `y ~ a x^-b + c` for each row of weights `w` (0: a point left out); NaN where a row has
    fewer than MIN_FIT points or no exponent fits. Profiled over `B_GRID`, Huber-weighted (module docstring)."""
    x0 = np.exp(np.mean(np.log(x)))
    t = np.log(x / x0)
    used = w > 0
    c_max = np.min(np.where(used, y, np.inf), axis=1, keepdims=True)
    robust = np.ones_like(y)
    best = np.full((len(y), 3), np.nan)
    rows = np.arange(len(y))
    for _ in range(HUBER_PASSES):
        costs = _solve(t, y, w * robust, B_GRID, c_max)[2]
        j = np.clip(np.argmin(costs, axis=1), 1, len(B_GRID) - 2)  # the parabola through j and its neighbours
        lo, mid, hi = (costs[rows, j + k] for k in (-1, 0, 1))
        with np.errstate(invalid="ignore"):
            curve = lo - 2 * mid + hi
            step = np.where(np.isfinite(curve) & (curve > 0), 0.5 * (lo - hi) / np.where(curve > 0, curve, 1), 0)
        b = np.clip(B_GRID[j] * (B_GRID[1] / B_GRID[0]) ** np.clip(step, -1, 1), B_ZERO, B_MAX)[:, None]
        big_a, c, cost = _solve(t, y, w * robust, b, c_max)
        ok = np.isfinite(cost[:, 0]) & (used.sum(axis=1) >= MIN_FIT)
        best = np.where(ok[:, None], np.c_[big_a * x0**b, b, c], np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            residual = np.abs(np.log((big_a * np.exp(-b * t) + c) / y))
        robust = np.where(ok[:, None], np.minimum(1, HUBER / np.maximum(residual, 1e-12)), 1)
    return best


def _solve(t: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray, c_max: np.ndarray) -> tuple:
    """Each row's (A, c) minimising sum w ((A e^{-bt} + c) / y - 1)^2 with 0 <= c <= c_max, and that sum (inf
    where A <= 0): at every exponent of a grid `b` ((G,): results (R, G)), or at one per row (`b` (R, 1))."""
    wq, wqq = w / y, w / y**2
    if b.ndim == 1:
        e = np.exp(-np.outer(b, t))
        sp, spq, spp = wq @ e.T, wqq @ e.T, wqq @ (e**2).T
    else:
        e = np.exp(-b * t)
        sp, spq, spp = ((m * f).sum(axis=1, keepdims=True) for m, f in ((wq, e), (wqq, e), (wqq, e**2)))
    sq, sqq, s1 = (m.sum(axis=1, keepdims=True) for m in (wq, wqq, w))
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.clip((spp * sq - spq * sp) / (spp * sqq - spq**2), 0, c_max)
        c = np.where(np.isfinite(c), c, 0)
        big_a = (sp - c * spq) / spp
        cost = big_a**2 * spp + c**2 * sqq + s1 + 2 * big_a * c * spq - 2 * big_a * sp - 2 * c * sq
    return big_a, c, np.where((big_a > 0) & np.isfinite(cost), cost, np.inf)


def fit_slopes(x: np.ndarray, y: np.ndarray, w: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(R, 2) k, e of `y = k x^e` by weighted least squares in logs; NaN where a row's points hold fewer than two
    `groups` (sizes)."""
    lx, ly = np.log(x), np.log(y)
    total = w.sum(axis=1)
    mx, my = (w @ lx) / np.maximum(total, 1), (w @ ly) / np.maximum(total, 1)
    dx = lx - mx[:, None]
    sxx, sxy = (w * dx**2).sum(axis=1), (w * dx * (ly - my[:, None])).sum(axis=1)
    distinct = np.array([len(set(groups[row > 0])) for row in w])
    e = np.where((distinct >= 2) & (sxx > 0), sxy / np.where(sxx > 0, sxx, 1), np.nan)
    return np.c_[np.exp(my - e * mx), e]


def interval(values: np.ndarray, estimate: float, how: str) -> Interval:
    """The percentile interval of the resamples whose fit did not fail."""
    finite = values[np.isfinite(values)]
    low, high = np.quantile(finite, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2]) if len(finite) else (np.nan,) * 2
    return Interval(float(estimate), float(low), float(high), f"{how} ({len(values)} resamples)")


def law_intervals(resampled: np.ndarray, estimates: Sequence[float], how: str) -> dict[str, Interval]:
    """a, b and c's intervals from the resamples' fits (rows of a, b, c; NaN where a fit failed)."""
    return {name: interval(resampled[:, k], estimates[k], how) for k, name in enumerate("abc")}


def undetermined(failed: float) -> str:
    return f"undetermined: the fit failed in {failed:.0%} of the resamples (more than {MAX_FAILED:.0%}): too few runs"


def law_fit(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, fitted: np.ndarray, noise: float | None, of: str, how: str, hint: str
) -> LawFit:
    """The verdict and intervals of a law from its fits (row 0: all runs; the others: resamples) and the points
    row 0 was fitted to (`of`: what they are; `hint`: why there may be too few)."""
    used = w[0] > 0
    if used.sum() < MIN_POINTS:
        return LawFit(f"no fit: {used.sum()} {of}, {MIN_POINTS} needed: {hint}")
    if np.isnan(fitted[0]).any():
        return LawFit(f"no fit: no exponent in [{B_ZERO:g}, {B_MAX:g}] fits the {of}")
    law = PowerLaw(*fitted[0])
    xs, ys, ws = x[used], y[0, used], w[0, used]
    rmse = float(np.sqrt(np.sum(ws * np.log(law(xs) / ys) ** 2) / ws.sum()))
    resampled = fitted[1:]
    intervals = law_intervals(resampled, fitted[0], how)
    failed = float(np.isnan(resampled[:, 0]).mean())
    fall = float(np.log(law(xs.min()) / law(xs.max())))
    if failed > MAX_FAILED:
        verdict = undetermined(failed)
    elif intervals["b"].low <= B_ZERO * 1.05:
        verdict = f"no power law: the 95% interval of b reaches 0 ({intervals['b'].show()}), the loss does not fall"
    elif fall <= FLAT * rmse:
        verdict = f"no power law: its fall over the range ({fall:.3f} in log loss) is within {FLAT:g}x the residuals"
    elif noise is not None and rmse > LACK_OF_FIT * noise and rmse > DESCRIBES:
        verdict = f"no power law: residuals (RMSE {rmse:.4f}) over {LACK_OF_FIT:g}x the seeds' noise ({noise:.4f})"
    elif noise is not None and rmse > LACK_OF_FIT * noise:
        verdict = (
            f"{BENT}: residuals (RMSE {rmse:.4f}) over {LACK_OF_FIT:g}x the seeds' noise ({noise:.4f}) but within "
            f"{DESCRIBES:.0%}: b is the range's slope (intervals drawn across configurations); not extrapolated"
        )
    else:
        verdict = POWER_LAW
    return LawFit(verdict, law, intervals, rmse, (float(xs.min()), float(xs.max())), resampled, how)


def fit_family(points: Sequence[Point], resamples: int = RESAMPLES, seed: int = SEED) -> FamilyFit:
    """Frontier, laws, intervals and verdicts of one family's points (module docstring). Each family's draws are
    seeded by `seed` and its name, so that two families' resamples are independent: draw i of one against draw i
    of another (the crossovers, the exponents compared) is then a fair pairing."""
    families = sorted({p.family for p in points})
    if len(families) != 1:
        raise LmlabError(f"fit one family at a time, not {', '.join(families) or 'no points'}")
    draws = (seed, zlib.crc32(families[0].encode()))
    bad = next((p for p in points if not (np.isfinite(p.loss) and p.loss > 0 < p.flops and (p.params or 1) > 0)), None)
    if bad is not None:
        raise LmlabError(
            f"run {bad.run}: loss {bad.loss} at {bad.flops} FLOPs, {bad.params} non-embedding parameters; a scaling "
            "fit needs positive figures"
        )
    grid = Grid(points)
    if len(grid.flops) < MIN_POINTS or len(grid.sizes) < MIN_SIZES:
        raise LmlabError(
            f"{families[0]}: {len(grid.flops)} configuration{'s' * (len(grid.flops) != 1)} of {len(grid.sizes)} "
            f"size{'s' * (len(grid.sizes) != 1)}; a scaling fit needs at "
            f"least {MIN_POINTS} configurations (size x budget) and {MIN_SIZES} sizes"
        )
    counts, how = grid.counts(resamples, draws)
    loss, weight = grid.draw(counts, how)
    on_frontier, best = grid.frontier(loss), grid.best_per_size(loss)
    noise = grid.noise()
    front_w, y = np.where(on_frontier, weight, 0), np.where(np.isfinite(loss), loss, 1)
    compute = law_fit(
        grid.flops, y, front_w, fit_laws(grid.flops, y, front_w), noise, "points on the frontier", how, FRONTIER_SHORT
    )
    unknown = int(np.isnan(grid.params).sum())
    if unknown:
        why = f"not fitted: {unknown} configurations without model/embedding_params (non-embedding size unknown)"
        size, optimal = LawFit(why), LawFit(why)
    else:
        size_w = np.where(best, weight, 0)
        size = law_fit(grid.params, y, size_w, fit_laws(grid.params, y, size_w), noise, "sizes", how, "add sizes")
        optimal = size_rule(grid, front_w, how)
    if how == BY_SEEDS and (compute.bent or size.bent):  # a bend is no seed noise: draw across configurations
        counts, across = grid.counts(resamples, draws, across=True)
        drawn, drawn_weight = grid.draw(counts, across)
        drawn_y = np.where(np.isfinite(drawn), drawn, 1)
        if compute.bent:
            w = np.where(grid.frontier(drawn), drawn_weight, 0)
            compute = compute.drawn_across(fit_laws(grid.flops, drawn_y, w)[1:], across)
        if size.bent:
            w = np.where(grid.best_per_size(drawn), drawn_weight, 0)
            size = size.drawn_across(fit_laws(grid.params, drawn_y, w)[1:], across)
    cells = grid.cells(loss[0], weight[0])
    frontier = grid.cells(loss[0], weight[0], on_frontier[0])
    curves = not bool(grid.final.all())
    return FamilyFit(families[0], grid.sizes, cells, frontier, compute, size, optimal, noise, curves)


def size_rule(grid: Grid, front_w: np.ndarray, how: str) -> LawFit:
    """N_opt(C) = k C^e from the sizes on the frontier that are inside the grid (`interior`), with intervals of k
    and e; a trend when e's interval excludes 0."""
    on = front_w[0] > 0
    front_w = front_w * interior(grid)
    inside = front_w[0] > 0
    sizes = len(set(grid.size[inside]))
    if sizes < MIN_SIZES:
        edge = int((on & ~inside).sum())
        why = (
            f"; {edge} of its {int(on.sum())} points are at the grid's edge (trained on the most tokens any "
            "configuration saw, or at its smallest or largest size), where a size is only a bound on the "
            "compute-optimal one: add longer budgets, or sizes beyond the grid's"
            if edge
            else ""
        )
        held = f"{sizes} size{'' if sizes == 1 else 's'}"
        return LawFit(f"not measured: the frontier holds {held} inside the grid, {MIN_SIZES} needed{why}")
    on = inside
    fitted = fit_slopes(grid.flops, grid.params, front_w, grid.size)
    k, e = fitted[0]
    intervals = {"k": interval(fitted[1:, 0], k, how), "e": interval(fitted[1:, 1], e, how)}
    residual = np.log(k * grid.flops[on] ** e / grid.params[on])
    rmse = float(np.sqrt(np.mean(residual**2)))
    span = (float(grid.flops[on].min()), float(grid.flops[on].max()))
    failed = float(np.isnan(fitted[1:, 1]).mean())
    if failed > MAX_FAILED:
        verdict = undetermined(failed)
    elif intervals["e"].high - intervals["e"].low <= 1e-9 * abs(e) and rmse > DESCRIBES:
        verdict = (
            "undetermined: every resample puts the same sizes on the frontier (the seeds never change which size "
            f"wins a budget), so the bootstrap gives e no interval, while the sizes scatter about the fit (RMSE "
            f"{rmse:.2f} in log N): not a measurement"
        )
    elif not intervals["e"].excludes_zero():
        verdict = f"no trend: the 95% interval of e holds 0 ({intervals['e'].show()})"
    else:
        verdict = POWER_LAW
    return LawFit(verdict, None, intervals, rmse, span, fitted[1:], how)
