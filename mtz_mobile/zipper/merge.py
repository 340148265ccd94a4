"""How a pair's incoming weights become one: the merge table (method × sparsity → function).

A merge method is one entry in ``METHODS``: whether it pairs units by the Hessian metric d
(else at random) and its merge for dense and for sparse (pruned) layers. Every merge function
takes one ``MergeOperands`` and returns the merged incoming weights over the shared inputs,
bias last — the layout ``surgery.merge`` writes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .low_rank import LowRankGeometry
from .mtz_math import PairGeometry, random_merge


@dataclass
class MergeOperands:
    """The paired units' incoming weights (columns in pair order, bias last)."""

    w_joint: np.ndarray
    w_new: np.ndarray
    geometry: PairGeometry | LowRankGeometry | None   # None for methods that do not use the metric
    mask: np.ndarray | None                  # sparse layers: the connections the merged units keep
    rng: np.random.Generator
    dense_optimum: Callable[[], np.ndarray] | None = None   # Eq. 10–11, when the caller has it already


def _mtz_dense(ops: MergeOperands) -> np.ndarray:
    if ops.dense_optimum is not None:
        return ops.dense_optimum()
    return ops.geometry.matched(ops.w_joint, ops.w_new)[1]


def _mtz_sparse(ops: MergeOperands) -> np.ndarray:
    return ops.geometry.merged_weights_masked(ops.w_joint, ops.w_new, ops.mask)


def _random(ops: MergeOperands) -> np.ndarray:
    return random_merge(ops.w_joint, ops.w_new, ops.rng)


@dataclass(frozen=True)
class MergeMethod:
    name: str
    uses_metric: bool                        # pairs by d (else at random) and needs the Hessians
    dense: Callable[[MergeOperands], np.ndarray]
    sparse: Callable[[MergeOperands], np.ndarray]

    def merge(self, ops: MergeOperands, sparse: bool) -> np.ndarray:
        return (self.sparse if sparse else self.dense)(ops)


METHODS = {
    "mtz": MergeMethod("mtz", True, _mtz_dense, _mtz_sparse),
    "random": MergeMethod("random", False, _random, _random),   # the paper's baseline
}


def sparse_mask(w_joint: np.ndarray, w_new: np.ndarray, policy: str = "larger") -> np.ndarray:
    """Per merged unit, the connections it keeps: the mask of the two with more connections (the
    paper's §3.6, "larger") or both masks ("union"; still at most nnz(A) + nnz(B))."""
    m_j, m_c = w_joint[:-1] != 0, w_new[:-1] != 0
    if policy == "union":
        return (m_j | m_c).astype(np.float64)
    take_joint = m_j.sum(axis=0) >= m_c.sum(axis=0)
    return np.where(take_joint[None, :], m_j, m_c).astype(np.float64)
