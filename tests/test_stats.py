"""The intervals and verdicts the report prints: scipy's bootstrap and t, wrapped so that a verdict follows the
interval and the same evaluation always gives the same interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from lmlab.analysis import stats


def test_an_accuracy_interval_matches_the_normal_approximation_and_is_reproducible() -> None:
    correct = (np.random.default_rng(0).random(2000) < 0.7).astype(float)
    interval = stats.accuracy(correct)
    p = correct.mean()
    half = 1.96 * math.sqrt(p * (1 - p) / len(correct))
    assert interval.estimate == pytest.approx(p)
    assert interval.low == pytest.approx(p - half, abs=0.004) and interval.high == pytest.approx(p + half, abs=0.004)
    assert stats.accuracy(correct) == interval, "seeded: the same data gives the same interval"


def test_a_paired_difference_is_narrower_than_unpaired_when_the_classifiers_agree() -> None:
    """Two classifiers wrong on mostly the same documents: pairing removes the documents' shared difficulty."""
    rng = np.random.default_rng(1)
    a = (rng.random(1000) < 0.7).astype(float)
    b = a.copy()
    b[rng.choice(1000, 30, replace=False)] = 1 - b[rng.choice(1000, 30, replace=False)]
    paired = stats.accuracy_difference(a, b)
    unpaired_half = 1.96 * math.sqrt(a.var() / 1000 + b.var() / 1000)
    assert paired.high - paired.low < unpaired_half
    assert paired.estimate == pytest.approx(a.mean() - b.mean())


def test_the_loss_interval_is_of_the_ratio_of_sums_and_maps_to_perplexity() -> None:
    rng = np.random.default_rng(2)
    tokens = rng.integers(100, 300, size=400).astype(float)
    nats = tokens * rng.normal(4.0, 0.3, size=400)
    loss = stats.mean_loss(nats, tokens)
    assert loss.estimate == pytest.approx(nats.sum() / tokens.sum())
    assert loss.low < loss.estimate < loss.high and loss.high - loss.low < 0.1
    ppl = loss.map(math.exp)
    assert (ppl.low, ppl.estimate, ppl.high) == pytest.approx(
        (math.exp(loss.low), math.exp(loss.estimate), math.exp(loss.high))
    )


def test_identical_examples_give_a_point_interval() -> None:
    assert stats.accuracy(np.ones(50)).show() == "1.000 [1.000, 1.000]"
    assert stats.accuracy_difference(np.ones(50), np.ones(50)).excludes_zero() is False


def test_over_seeds_is_the_t_interval() -> None:
    values = [0.70, 0.74, 0.71, 0.69]
    low, high = scipy_stats.t.interval(0.95, 3, loc=np.mean(values), scale=scipy_stats.sem(values))
    interval = stats.over_seeds(values)
    assert (interval.low, interval.high) == pytest.approx((low, high))
    assert stats.over_seeds([0.7]).how == "one seed"


def test_the_verdict_follows_the_interval() -> None:
    assert (
        stats.verdict(stats.Interval(2.0, 0.5, 3.5, ""), "a", "b", " points", 1) == "a beats b by 2.0 [0.5, 3.5] points"
    )
    assert stats.verdict(stats.Interval(-2.0, -3.5, -0.5, ""), "a", "b", "", 1) == "a trails b by 2.0 [0.5, 3.5]"
    held = stats.verdict(stats.Interval(2.0, -0.1, 4.1, ""), "a", "b", "", 1)
    assert held.startswith("no significant difference between a and b (2.0 [-0.1, 4.1]")
    assert stats.verdict(stats.Interval(-0.2, -0.3, -0.1, ""), "a", "b", higher_is_better=False).startswith("a beats b")
