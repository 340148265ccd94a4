"""Choosing which units of A and B to share, given the functional differences d(i, j).

Pairs are disjoint (a unit is shared at most once). "The Ñ pairs with the smallest d" has two
readings: ``greedy`` (repeatedly take the smallest remaining d) and ``exact`` (the Ñ disjoint
pairs with the minimum total d — an assignment problem). A threshold ε instead shares a pair
when that lowers Σ d(paired) + ε/2 · #(unpaired units), i.e. when d < ε.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from mtz_mobile.errors import MTZError

from .config import PAIRINGS


def _exact_count(d: np.ndarray, k: int) -> list[tuple[int, int]]:
    n_a, n_b = d.shape
    if k == min(n_a, n_b):
        rows, cols = linear_sum_assignment(d)
        return sorted(zip(rows.tolist(), cols.tolist()))
    # Exactly k of n_a×n_b pairs: a square problem of size n_a+n_b−k. Dummy rows (n_b−k of them)
    # must take real B columns and dummy columns (n_a−k) real A rows, leaving exactly k real pairs.
    size = n_a + n_b - k
    forbidden = 1.0 + 2.0 * max(float(d.max()), 1.0) * size
    cost = np.zeros((size, size))
    cost[:n_a, :n_b] = d
    cost[n_a:, n_b:] = forbidden
    rows, cols = linear_sum_assignment(cost)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols) if r < n_a and c < n_b)


def _exact_threshold(d: np.ndarray, eps: float) -> list[tuple[int, int]]:
    n_a, n_b = d.shape
    size = n_a + n_b
    forbidden = 1.0 + 2.0 * max(float(d.max()), eps, 1.0) * size
    cost = np.full((size, size), forbidden)
    cost[:n_a, :n_b] = np.where(d <= eps, d, forbidden)
    cost[:n_a, n_b:] = 0.5 * eps   # A unit left unpaired
    cost[n_a:, :n_b] = 0.5 * eps   # B unit left unpaired
    cost[n_a:, n_b:] = 0.0         # dummy with dummy: no cost
    rows, cols = linear_sum_assignment(cost)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols)
                  if r < n_a and c < n_b and d[r, c] <= eps)


def _greedy(d: np.ndarray, k: int | None, eps: float | None) -> list[tuple[int, int]]:
    n_a, n_b = d.shape
    limit = min(n_a, n_b) if k is None else k
    flat = np.argsort(d, axis=None, kind="stable")
    used_a = np.zeros(n_a, bool)
    used_b = np.zeros(n_b, bool)
    pairs = []
    for idx in flat:
        if len(pairs) >= limit:
            break
        i, j = divmod(int(idx), n_b)
        if eps is not None and d[i, j] > eps:
            break
        if not used_a[i] and not used_b[j]:
            used_a[i] = used_b[j] = True
            pairs.append((i, j))
    return sorted(pairs)


def select_pairs(d: np.ndarray, count: int | None = None, threshold: float | None = None,
                 method: str = "exact") -> list[tuple[int, int]]:
    """Disjoint pairs (i, j), sorted by i: ``count`` of them, or those chosen by ``threshold``."""
    n_a, n_b = d.shape
    if (count is None) == (threshold is None):
        raise MTZError("give exactly one of a shared count and a threshold")
    if count is not None and not 0 <= count <= min(n_a, n_b):
        raise MTZError(f"cannot share {count} units between layers of {n_a} and {n_b} units: "
                       f"choose at most {min(n_a, n_b)}")
    if method not in PAIRINGS:
        raise MTZError(f"unknown pairing {method!r}: use one of {', '.join(PAIRINGS)}")
    if count == 0:
        return []
    if method == "greedy":
        return _greedy(d, count, threshold)
    if count is not None:
        return _exact_count(d, count)
    return _exact_threshold(d, threshold)


def random_pairs(n_a: int, n_b: int, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """The paper's baseline: ``count`` disjoint pairs drawn uniformly at random."""
    a = rng.permutation(n_a)[:count]
    b = rng.permutation(n_b)[:count]
    return sorted(zip(a.tolist(), b.tolist()))


def total_cost(d: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    return float(sum(d[i, j] for i, j in pairs))
