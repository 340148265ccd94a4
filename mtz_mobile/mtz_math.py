"""Multi-Task Zipping's layer math (He, Zhou & Thiele 2018, §3.2–3.3), in the S-form.

Notation follows the paper. For layer l, the incoming weights of unit i of task A over the
*shared* inputs, with the bias as the last row, are the column ``w_A,i`` of ``W_A``; likewise
``W_B``. The layer-wise Hessians are over the same augmented input ``x̃ = [x, 1]``::

    H_A = α/n_A Σ x̃_A x̃_Aᵀ            H_B = (1−α)/n_B Σ x̃_B x̃_Bᵀ             (Eq. 7–8)

Merging units i of A and j of B into one unit with weights w̃ minimises the quadratic change
of both error functions, ½δ_Aᵀ H_A δ_A + ½δ_Bᵀ H_B δ_B with w_A + δ_A = w_B + δ_B = w̃. The
paper writes its solution (Eq. 10–12) with H⁻¹; Hessians of real layers are singular, so we
use the equivalent forms that need only S = H_A + H_B (one Cholesky factorisation per layer):

    w̃       = S⁻¹ (H_A w_A + H_B w_B)                                          (Eq. 10–11)
    d(i, j) = ½ Δᵀ M Δ,   Δ = w_A,i − w_B,j,   M = H_A S⁻¹ H_B = (H_A⁻¹ + H_B⁻¹)⁻¹  (Eq. 12)

Damping: λ = damping · mean(diag(H_A + H_B)) is split equally, H_A += λ/2·I and H_B += λ/2·I,
so that S = H_A + H_B stays exact. That keeps M symmetric and makes two identical weight
vectors merge into themselves — a permuted copy of a network zips back exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from .errors import MTZError


class HessianAccumulator:
    """Accumulates Σ x̃ x̃ᵀ over batches of inputs (rows are instances) in float64."""

    def __init__(self, dim: int):
        self.dim = dim
        self.gram = np.zeros((dim + 1, dim + 1))
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x).reshape(len(x), -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} inputs per instance, got {x.shape[1]}")
        x = x.astype(np.float32, copy=False)
        # float32 GEMM per batch (twice as fast), float64 running sum: batches are small
        # enough that the per-batch rounding stays at ~1e-7 relative.
        self.gram[:-1, :-1] += (x.T @ x).astype(np.float64)
        self.gram[:-1, -1] += x.sum(axis=0, dtype=np.float64)
        self.count += len(x)

    def hessian(self, weight: float) -> np.ndarray:
        """``weight/n · Σ x̃ x̃ᵀ`` — weight is α for task A and 1−α for task B."""
        if self.count == 0:
            raise MTZError("no calibration data reached this layer: give each task at least one sample")
        h = self.gram.copy()
        h[-1, :-1] = h[:-1, -1]
        h[-1, -1] = self.count
        return h * (weight / self.count)


def layer_hessian(x: np.ndarray, weight: float, batch: int = 4096) -> np.ndarray:
    """Eq. 7–8 for one task: ``weight/n Σ x̃ x̃ᵀ`` over the rows of ``x``."""
    acc = HessianAccumulator(int(np.prod(x.shape[1:])))
    for start in range(0, len(x), batch):
        acc.update(x[start:start + batch])
    return acc.hessian(weight)


@dataclass
class PairGeometry:
    """Everything about one layer's shared input space that the metric and the update need."""

    h_a: np.ndarray  # damped H_A
    h_b: np.ndarray  # damped H_B
    s_factor: tuple  # Cholesky factor of S = h_a + h_b
    m: np.ndarray    # M = H_A S⁻¹ H_B, symmetrised
    damping: float   # the absolute λ that was added (split equally)

    @classmethod
    def from_hessians(cls, h_a: np.ndarray, h_b: np.ndarray, damping: float = 1e-4) -> "PairGeometry":
        if h_a.shape != h_b.shape or h_a.shape[0] != h_a.shape[1]:
            raise ValueError(f"Hessians must be square and alike, got {h_a.shape} and {h_b.shape}")
        if not (np.all(np.isfinite(h_a)) and np.all(np.isfinite(h_b))):
            raise MTZError("the layer inputs contain NaN or inf: check the models' weights and the data")
        scale = float(np.mean(np.diag(h_a) + np.diag(h_b)))
        lam = damping * scale if scale > 0 else damping
        eye = np.eye(len(h_a))
        h_a = h_a + 0.5 * lam * eye
        h_b = h_b + 0.5 * lam * eye
        s = h_a + h_b
        try:
            s_factor = cho_factor(s, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            raise MTZError("S = H_A + H_B is not positive definite even with damping: raise --damping") from None
        m = h_a @ cho_solve(s_factor, h_b, check_finite=False)
        m = 0.5 * (m + m.T)
        return cls(h_a, h_b, s_factor, m, lam)

    def functional_differences(self, w_a: np.ndarray, w_b: np.ndarray) -> np.ndarray:
        """d(i, j) for every pair at once (Eq. 12): ½(q_A,i + q_B,j − 2 w_A,iᵀ M w_B,j), q = diag(WᵀMW)."""
        mw_b = self.m @ w_b
        q_a = np.einsum("ki,ki->i", w_a, self.m @ w_a)
        q_b = np.einsum("kj,kj->j", w_b, mw_b)
        d = 0.5 * (q_a[:, None] + q_b[None, :]) - w_a.T @ mw_b
        # rounding can push d(i, j) of (near-)identical vectors a hair below zero
        return np.maximum(d, 0.0)

    def merged_weights(self, w_a: np.ndarray, w_b: np.ndarray) -> np.ndarray:
        """w̃ = S⁻¹(H_A w_A + H_B w_B) for paired columns (Eq. 10–11)."""
        rhs = self.h_a @ w_a + self.h_b @ w_b
        return cho_solve(self.s_factor, rhs, check_finite=False)


def random_merge(w_a: np.ndarray, w_b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The paper's baseline: each shared unit keeps one of its two weight vectors, at random."""
    take_a = rng.random(w_a.shape[1]) < 0.5
    return np.where(take_a[None, :], w_a, w_b)
