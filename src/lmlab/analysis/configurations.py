"""A family's runs as configurations (the runs of one size at one compute: seeds), the unit the scaling fits
(`lmlab.analysis.power_laws`) work on: their mean losses under bootstrap draws of the runs, the compute-efficient
frontier, each size's best, and which configurations lie inside the grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BY_RUNS, BY_SEEDS = "bootstrap over runs", "bootstrap over each configuration's seeds"


@dataclass(frozen=True)
class Point:
    """One measured loss of a run: its end (trained to its own budget) or, `final=False`, a validation on the
    way. `params`: non-embedding parameters, None where the run did not record its embedding's."""

    family: str
    size: str
    params: int | None
    flops: float
    tokens: float
    loss: float
    run: str  # the unit the bootstrap draws
    final: bool = True


@dataclass(frozen=True)
class Cell:
    """A configuration: the runs of one size at one compute, their mean loss."""

    size: str
    params: int | None
    flops: float
    tokens: float
    loss: float
    runs: int
    final: bool


class Grid:
    """A family's configurations and which runs make each, so that a draw of runs rebuilds them as arrays."""

    def __init__(self, points: Sequence[Point]) -> None:
        self.runs = sorted({p.run for p in points})
        budget = {run: max((p.flops, p.size) for p in points if p.run == run) for run in self.runs}
        groups: dict[tuple[float, str], list[int]] = {}
        for j, run in enumerate(self.runs):
            groups.setdefault(budget[run], []).append(j)
        self.strata = list(groups.values())  # the runs of one size and budget: seeds
        keys = sorted({(p.flops, p.size, p.final) for p in points})
        index = {key: i for i, key in enumerate(keys)}
        self.flops = np.array([k[0] for k in keys])
        self.sizes = sorted({p.size for p in points}, key=lambda s: size_order(s, points))
        self.size = np.array([self.sizes.index(k[1]) for k in keys])
        self.final = np.array([k[2] for k in keys])
        self.member = np.zeros((len(keys), len(self.runs)))
        self.loss = np.zeros((len(keys), len(self.runs)))
        run_index = {run: j for j, run in enumerate(self.runs)}
        by_cell: dict[int, Point] = {}
        for p in points:
            i, j = index[p.flops, p.size, p.final], run_index[p.run]
            self.member[i, j], self.loss[i, j] = 1, p.loss
            by_cell[i] = p
        self.params = np.array([np.nan if by_cell[i].params is None else by_cell[i].params for i in range(len(keys))])
        self.tokens = np.array([by_cell[i].tokens for i in range(len(keys))])

    def counts(self, resamples: int, seed: int | Sequence[int], across: bool = False) -> tuple[np.ndarray, str]:
        """(1 + resamples, runs) times each run is drawn: row 0 every run once, then the resamples; and how they
        were drawn (module docstring: within configurations where all have seeds, unless `across`)."""
        rng = np.random.default_rng(seed)
        n = len(self.runs)
        if not across and all(len(runs) > 1 for runs in self.strata):
            drawn = np.concatenate([rng.choice(runs, (resamples, len(runs))) for runs in self.strata], axis=1)
            how = BY_SEEDS
        else:
            drawn, how = rng.integers(0, n, (resamples, n)), BY_RUNS
        return np.r_[np.ones((1, n)), np.stack([np.bincount(row, minlength=n) for row in drawn])], how

    def draw(self, counts: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
        """Each configuration's mean loss and its number of runs under draws of runs (`counts`: (R, runs); row 0
        every run once). Drawn among a configuration's n seeds, a mean's departure from theirs is scaled by
        sqrt(n / (n - 1)): a mean of n draws varies (n - 1) / n times as much as one of n new runs (Davison and
        Hinkley 1997, 3.7)."""
        weight = counts @ self.member.T
        loss = (counts @ self.loss.T) / np.where(weight > 0, weight, 1)
        if how == BY_SEEDS:
            runs = self.member.sum(axis=1)
            loss = loss[0] + np.sqrt(runs / np.maximum(runs - 1, 1)) * (loss - loss[0])
        return np.where(weight > 0, loss, np.inf), weight

    def frontier(self, loss: np.ndarray) -> np.ndarray:
        """(R, cells) mask of the frontier: the lowest loss at a compute, below all at less compute."""
        order = np.argsort(self.flops, kind="stable")
        flops, ordered = self.flops[order], loss[:, order]
        starts = np.flatnonzero(np.r_[True, flops[1:] != flops[:-1]])
        lowest = np.repeat(np.minimum.reduceat(ordered, starts, axis=1), np.diff(np.r_[starts, len(flops)]), axis=1)
        eligible = np.where(ordered <= lowest, ordered, np.inf)
        before = np.minimum.accumulate(np.c_[np.full(len(loss), np.inf), eligible[:, :-1]], axis=1)
        mask = np.zeros_like(loss, dtype=bool)
        mask[:, order] = np.isfinite(eligible) & (eligible < before)
        return mask

    def best_per_size(self, loss: np.ndarray) -> np.ndarray:
        """(R, cells) mask of each size's lowest-loss configuration."""
        mask = np.zeros_like(loss, dtype=bool)
        for s in range(len(self.sizes)):
            cells = np.flatnonzero(self.size == s)
            best = cells[np.argmin(loss[:, cells], axis=1)]
            mask[np.arange(len(loss)), best] = np.isfinite(loss[np.arange(len(loss)), best])
        return mask

    def cells(self, loss: np.ndarray, weight: np.ndarray, mask: np.ndarray | None = None) -> list[Cell]:
        chosen = np.flatnonzero(np.isfinite(loss) if mask is None else mask)
        return [
            Cell(
                size=self.sizes[self.size[i]],
                params=None if np.isnan(self.params[i]) else int(self.params[i]),
                flops=float(self.flops[i]),
                tokens=float(self.tokens[i]),
                loss=float(loss[i]),
                runs=int(weight[i]),
                final=bool(self.final[i]),
            )
            for i in sorted(chosen, key=lambda i: self.flops[i])
        ]

    def noise(self) -> float | None:
        """The standard error of a configuration's mean log loss, pooled over those with several runs."""
        runs = self.member.sum(axis=1)
        several = runs > 1
        if not several.any():
            return None
        logs = np.where(self.member > 0, np.log(np.where(self.member > 0, self.loss, 1)), 0)
        means = logs.sum(axis=1) / np.maximum(runs, 1)
        squares = ((logs - means[:, None]) ** 2 * self.member)[several].sum()
        variance = squares / (runs[several] - 1).sum()
        return float(np.sqrt(variance / runs.mean()))


def size_order(size: str, points: Sequence[Point]) -> tuple[float, float, str]:
    """Sizes in order of parameters, then of a numeric label (widths), then by name."""
    params = [p.params for p in points if p.size == size and p.params is not None]
    return (min(params) if params else np.inf, float(size) if size.isdigit() else np.inf, size)


def interior(grid: Grid) -> np.ndarray:
    """The configurations whose size, where one wins the frontier, is a compute-optimal size rather than a bound
    on it: not trained on the most tokens any configuration saw (a smaller size trained longer, which the grid
    lacks, might beat it), and not the grid's smallest or largest size (a size beyond it might)."""
    longest = grid.tokens >= grid.tokens.max() * (1 - 1e-9)
    edge = (grid.size == 0) | (grid.size == len(grid.sizes) - 1)
    return ~longest & ~edge
