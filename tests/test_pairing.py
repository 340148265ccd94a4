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


def matchings(n_a, n_b):
    """Every set of disjoint (i, j) pairs, the empty one included."""
    for k in range(min(n_a, n_b) + 1):
        for rows in itertools.combinations(range(n_a), k):
            for cols in itertools.permutations(range(n_b), k):
                yield list(zip(rows, cols))


def threshold_objective(d, pairs, eps):
    """Module docstring: Σ d(paired) + ε/2 · #(unpaired units of A and of B)."""
    n_a, n_b = d.shape
    return total_cost(d, pairs) + 0.5 * eps * (n_a + n_b - 2 * len(pairs))


@pytest.mark.parametrize("shape", [(3, 3), (3, 4), (4, 2), (2, 5)])
@pytest.mark.parametrize("eps", [0.05, 0.3, 0.7, 1.5])
def test_exact_threshold_minimises_the_objective_over_every_matching(shape, eps):
    rng = np.random.default_rng(shape[0] * 7 + shape[1])
    for _ in range(4):
        d = rng.random(shape) ** 2 * 1.2   # some d above ε, some below; d.max() may exceed 1
        pairs = select_pairs(d, threshold=eps, method="exact")
        assert_disjoint(pairs)
        assert pairs == sorted(pairs)
        assert all(d[i, j] <= eps for i, j in pairs)
        best = min(threshold_objective(d, m, eps) for m in matchings(*shape) if all(d[i, j] <= eps for i, j in m))
        assert threshold_objective(d, pairs, eps) == pytest.approx(best, abs=1e-12)


def test_exact_threshold_with_large_differences():
    """d far above 1 and above ε: the forbidden cost must still dominate every real one."""
    d = np.array([[50.0, 0.4, 9.0], [0.4, 80.0, 0.5], [7.0, 0.5, 60.0]])
    assert select_pairs(d, threshold=0.5, method="exact") == [(0, 1), (1, 0)]
    assert select_pairs(d, threshold=0.39, method="exact") == []
    assert select_pairs(d * 1e6, threshold=0.45e6, method="exact") == [(0, 1), (1, 0)]


def slow_greedy(d, k=None, eps=None):
    """Take the smallest remaining d (first in row-major order on ties) whose units are both free."""
    d = d.copy()
    pairs = []
    free_a, free_b = set(range(d.shape[0])), set(range(d.shape[1]))
    limit = min(d.shape) if k is None else k
    while len(pairs) < limit and free_a and free_b:
        i, j = min(((i, j) for i in free_a for j in free_b), key=lambda ij: (d[ij], ij))
        if eps is not None and d[i, j] > eps:
            break
        pairs.append((i, j))
        free_a.discard(i)
        free_b.discard(j)
    return sorted(pairs)


@pytest.mark.parametrize("shape", [(5, 5), (4, 7), (7, 3)])
def test_greedy_is_the_explicit_greedy(shape):
    rng = np.random.default_rng(sum(shape))
    for trial in range(6):
        d = np.round(rng.random(shape), 1)   # rounded: ties, broken the same way
        for k in range(min(shape) + 1):
            assert select_pairs(d, count=k, method="greedy") == slow_greedy(d, k=k)
        for eps in (0.0, 0.15, 0.45, 2.0):
            assert select_pairs(d, threshold=eps, method="greedy") == slow_greedy(d, eps=eps)


def test_exact_threshold_prefers_one_cheap_pair_to_two_dear_ones():
    """Leaving a unit unpaired costs ε/2 on either side: one pair at 0.1 (objective 1.1) beats two
    at 0.9 (1.8), though the second reading pairs more units."""
    d = np.array([[0.1, 0.9], [0.9, 5.0]])
    assert select_pairs(d, threshold=1.0, method="exact") == [(0, 0)]
    assert select_pairs(d.T.copy(), threshold=1.0, method="exact") == [(0, 0)]


def test_exact_threshold_never_takes_a_pair_above_epsilon_to_crowd_out_one_below():
    """Many units, every d above ε but one: a pair above ε must cost more than leaving both units
    unpaired however large the problem, or the solver trades the one good pair away."""
    d = np.full((10, 10), 11.0)
    d[0, 0] = 9.0
    assert select_pairs(d, threshold=10.0, method="exact") == [(0, 0)]


def test_bad_arguments_name_the_problem_and_the_fix():
    d = np.zeros((2, 2))
    with pytest.raises(MTZError, match="^give exactly one of a shared count and a threshold$"):
        select_pairs(d)
    with pytest.raises(MTZError, match="^give exactly one of a shared count and a threshold$"):
        select_pairs(d, count=1, threshold=0.1)
    with pytest.raises(MTZError, match=r"^unknown pairing 'best': use one of exact, greedy$"):
        select_pairs(d, count=1, method="best")
