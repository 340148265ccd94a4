"""Pair selection: exact is optimal (brute force), never worse than greedy; thresholds and counts."""

import itertools

import numpy as np
import pytest

from mtz_mobile.errors import MTZError
from mtz_mobile.zipper.pairing import random_pairs, select_pairs, total_cost


def brute_force(d, k):
    best = np.inf
    n_a, n_b = d.shape
    for rows in itertools.combinations(range(n_a), k):
        for cols in itertools.permutations(range(n_b), k):
            best = min(best, sum(d[r, c] for r, c in zip(rows, cols)))
    return best


def assert_disjoint(pairs):
    assert len({i for i, _ in pairs}) == len(pairs) and len({j for _, j in pairs}) == len(pairs)


@pytest.mark.parametrize("shape,k", [((4, 4), 4), ((4, 5), 2), ((5, 3), 3), ((5, 5), 1), ((6, 4), 3)])
def test_exact_equals_brute_force(shape, k):
    rng = np.random.default_rng(sum(shape) * 10 + k)
    for _ in range(5):
        d = rng.random(shape) ** 3
        pairs = select_pairs(d, count=k, method="exact")
        assert len(pairs) == k
        assert_disjoint(pairs)
        assert total_cost(d, pairs) == pytest.approx(brute_force(d, k), abs=1e-12)


def test_exact_never_worse_than_greedy():
    rng = np.random.default_rng(0)
    strictly_better = 0
    for trial in range(40):
        n_a, n_b = rng.integers(5, 40, size=2)
        k = int(rng.integers(1, min(n_a, n_b) + 1))
        d = rng.random((n_a, n_b)) ** 2
        exact = select_pairs(d, count=k, method="exact")
        greedy = select_pairs(d, count=k, method="greedy")
        assert len(exact) == len(greedy) == k
        assert_disjoint(exact)
        assert_disjoint(greedy)
        assert total_cost(d, exact) <= total_cost(d, greedy) + 1e-12
        strictly_better += total_cost(d, exact) < total_cost(d, greedy) - 1e-12
    assert strictly_better > 0  # the instances are hard enough to tell the two apart


def test_threshold_pairs_only_below_epsilon():
    rng = np.random.default_rng(1)
    d = rng.random((12, 10))
    for method in ("exact", "greedy"):
        pairs = select_pairs(d, threshold=0.2, method=method)
        assert_disjoint(pairs)
        assert all(d[i, j] <= 0.2 for i, j in pairs)
    # with the threshold above every d, exact shares as many units as possible
    assert len(select_pairs(d, threshold=2.0, method="exact")) == 10


def test_counts_are_checked():
    d = np.zeros((3, 4))
    with pytest.raises(MTZError, match="at most 3"):
        select_pairs(d, count=4)
    assert select_pairs(d, count=0) == []


def test_random_pairs_are_disjoint_and_seeded():
    a = random_pairs(10, 8, 6, np.random.default_rng(7))
    b = random_pairs(10, 8, 6, np.random.default_rng(7))
    assert a == b and len(a) == 6
    assert_disjoint(a)
