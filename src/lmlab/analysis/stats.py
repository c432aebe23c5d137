"""The intervals every compared figure carries, and the verdicts that follow them (scipy's bootstrap and t).

One seed: a 95% bootstrap interval over test examples (documents for accuracy, blocks of text for loss),
paired when two classifiers are compared on the same documents. Several seeds: a 95% t-interval over
them. A verdict says "beats" or "trails" only when the interval of the difference excludes zero.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 9999
SEED = 1337  # resampling is seeded: the same evaluation gives the same interval


@dataclass(frozen=True)
class Interval:
    """An estimate and its 95% interval; `how` says what was resampled (for the report's notes)."""

    estimate: float
    low: float
    high: float
    how: str

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def map(self, fn: Callable[[float], float]) -> Interval:
        """The interval of a monotone function of the figure (loss -> ppl, loss -> bpb); `flipped` after a
        decreasing one."""
        return Interval(fn(self.estimate), fn(self.low), fn(self.high), self.how)

    def flipped(self) -> Interval:
        """The same interval with its ends in order again, after a decreasing map."""
        return Interval(self.estimate, min(self.low, self.high), max(self.low, self.high), self.how)

    def show(self, digits: int = 3) -> str:
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap(samples: tuple[np.ndarray, ...], statistic: Callable[..., np.ndarray], how: str) -> Interval:
    """`statistic` of paired `samples` (arrays of one length, resampled together) with its 95% BCa interval;
    the percentile interval where BCa is undefined (e.g. every example alike)."""
    samples = tuple(np.asarray(s, dtype=np.float64) for s in samples)
    estimate = float(statistic(*samples, axis=-1))
    if len(samples[0]) < 2 or all(np.all(s == s[0]) for s in samples):
        return Interval(estimate, estimate, estimate, how)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns where BCa degenerates; the fallback handles it
            result = stats.bootstrap(
                samples,
                statistic,
                paired=True,
                vectorized=True,
                n_resamples=RESAMPLES,
                confidence_level=CONFIDENCE,
                method=method,
                rng=np.random.default_rng(SEED),
            )
        low, high = result.confidence_interval
        if math.isfinite(low) and math.isfinite(high):
            return Interval(estimate, float(low), float(high), how)
    return Interval(estimate, estimate, estimate, how)


def mean_of(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def ratio_of_sums(numerator: np.ndarray, denominator: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sum(numerator, axis=axis) / np.sum(denominator, axis=axis)


def difference_of_means(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def accuracy(correct: np.ndarray) -> Interval:
    """Accuracy over test documents (`correct`: one 0/1 per document)."""
    return bootstrap((correct,), mean_of, "bootstrap over test documents")


def accuracy_difference(correct_a: np.ndarray, correct_b: np.ndarray) -> Interval:
    """Accuracy of A minus B on the same documents: a paired bootstrap (each resample draws documents)."""
    return bootstrap((correct_a, correct_b), difference_of_means, "paired bootstrap over test documents")


def answer_accuracy(correct: np.ndarray, answers: np.ndarray) -> Interval:
    """Accuracy over the answers of many examples (each example's correct answers and its answer count): a
    bootstrap over examples, since one example's answers share its context."""
    return bootstrap((correct, answers), ratio_of_sums, "bootstrap over validation examples")


def mean_loss(nats: np.ndarray, tokens: np.ndarray) -> Interval:
    """Nats per token over blocks of test text (each block's summed nats and its token count): a block
    bootstrap, since neighbouring tokens' losses are not independent."""
    return bootstrap((nats, tokens), ratio_of_sums, "bootstrap over blocks of test text")


def over_seeds(values: list[float]) -> Interval:
    """Mean and 95% t-interval over seeds (one value per seed)."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, mean, mean, "one seed")
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return Interval(mean, mean - half, mean + half, f"t-interval over {len(x)} seeds")


def verdict(
    difference: Interval, what: str, than: str, unit: str = "", digits: int = 3, higher_is_better: bool = True
) -> str:
    """`what` beats or trails `than` by the difference and its interval, or "no significant difference" when
    the interval holds zero: a difference the resampling cannot tell from noise is never called a finding."""
    if not difference.excludes_zero():
        held = f"{difference.show(digits)}{unit}, 95% interval holds 0"
        return f"no significant difference between {what} and {than} ({held})"
    size = difference if difference.estimate > 0 else difference.map(lambda x: -x).flipped()
    better = (difference.estimate > 0) == higher_is_better
    return f"{what} {'beats' if better else 'trails'} {than} by {size.show(digits)}{unit}"
