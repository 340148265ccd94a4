"""The paired bound on an error increase (zipper/increase_bound.py), against the slow explicit way:
the trinomial distribution enumerated term by term, and coverage computed exactly by summing the
probability of every (worse, better) outcome whose bound covers the true increase."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mtz_mobile.errors import MTZError
from mtz_mobile.zipper.increase_bound import images_to_certify, paired_increase, tails, upper_bound


def _trinomial(n: int, p_worse: float, p_better: float):
    """Every (worse, better) with its probability, term by term."""
    rest = 1.0 - p_worse - p_better
    for w in range(n + 1):
        for b in range(n + 1 - w):
            coef = math.factorial(n) / (math.factorial(w) * math.factorial(b) * math.factorial(n - w - b))
            yield w, b, coef * p_worse ** w * p_better ** b * rest ** (n - w - b)


@pytest.mark.parametrize("p_worse, p_better, d", [(0.10, 0.05, 1), (0.02, 0.0, 0), (0.2, 0.25, -2)])
def test_tail_is_the_trinomial_probability(p_worse, p_better, d):
    n = 25
    explicit = sum(p for w, b, p in _trinomial(n, p_worse, p_better) if w - b <= d)
    got = tails(p_worse - p_better, [p_worse + p_better], d, n)[0]
    assert got == pytest.approx(explicit, rel=1e-9, abs=1e-12)


def _coverage(bound, n: int, p_worse: float, p_better: float) -> float:
    """Exact P(bound ≥ true increase), summed over the outcomes that carry all but 1e-7 of the mass
    (the rest counted as misses)."""
    truth = p_worse - p_better
    hi_w = int(stats.binom.isf(1e-8, n, p_worse)) + 1
    hi_b = int(stats.binom.isf(1e-8, n, p_better)) + 1
    w = np.arange(hi_w + 1)[:, None]
    b = np.arange(hi_b + 1)[None, :]
    # multinomial pmf as binomial(worse) × binomial(better | not worse)
    prob = stats.binom.pmf(w, n, p_worse) * stats.binom.pmf(b, n - w, p_better / (1 - p_worse))
    covered = 0.0
    for i in range(hi_w + 1):
        for j in range(hi_b + 1):
            if prob[i, j] > 1e-12 and i + j <= n and bound(i, j, n) >= truth:
                covered += prob[i, j]
    return covered


def _wald(worse: int, better: int, n: int) -> float:
    point = (worse - better) / n
    return point + 1.645 * math.sqrt(max((worse + better) / n - point ** 2, 0.0) / n)


SCENARIOS = [(300, 0.010, 0.0),     # a zip that only breaks images
             (300, 0.030, 0.015),   # breaks some, repairs half as many
             (200, 0.050, 0.050)]   # no net change, many discordant images


@pytest.mark.parametrize("n, p_worse, p_better", SCENARIOS)
def test_bound_covers_the_true_increase_at_its_confidence(n, p_worse, p_better):
    coverage = _coverage(lambda w, b, m: upper_bound(w, b, m, 0.95), n, p_worse, p_better)
    assert coverage >= 0.95, coverage


def test_the_coverage_check_rejects_a_bound_that_is_too_tight():
    """The normal (Wald) bound misses on a zip that only breaks images: the exact sum sees it."""
    assert _coverage(_wald, *SCENARIOS[0]) < 0.95


def test_bound_lies_above_the_point_estimate_and_grows_with_confidence():
    for w, b, n in [(0, 0, 1000), (12, 3, 1000), (3, 12, 1000), (50, 50, 2000)]:
        lo, hi = upper_bound(w, b, n, 0.8), upper_bound(w, b, n, 0.99)
        assert (w - b) / n < lo < hi <= 1.0


def test_paired_increase_counts_discordant_images():
    original = np.array([1, 1, 1, 0, 0, 1, 1, 0], bool)
    zipped = np.array([1, 0, 0, 1, 0, 1, 0, 0], bool)
    got = paired_increase(original, zipped, 0.95)
    assert (got.images, got.worse, got.better) == (8, 3, 1)
    assert got.point == pytest.approx(2 / 8)
    assert got.upper == upper_bound(3, 1, 8, 0.95)


def test_images_to_certify_is_the_smallest_count_that_certifies_no_change():
    need = images_to_certify(0.005, 0.95)
    assert upper_bound(0, 0, need, 0.95) <= 0.005 < upper_bound(0, 0, need - 1, 0.95)
    assert 600 < need < 1200     # about ln(1/γ)/budget


def test_bad_confidence_and_budget_are_refused():
    with pytest.raises(MTZError, match="confidence"):
        upper_bound(1, 0, 100, 1.0)
    with pytest.raises(MTZError, match="budget"):
        images_to_certify(0.0, 0.95)
