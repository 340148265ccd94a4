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

All pairs at once, d = ½(q_A[:, None] + q_B[None, :]) − W_Aᵀ M W_B with q = diag(WᵀMW), is
computed from the Cholesky factor L of S without forming M (see ``PairGeometry.compare``); the
merge of the chosen pairs reuses the same products.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular

from mtz_mobile.errors import MTZError


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
        # float32 GEMM per batch (twice as fast as float64; OpenBLAS's SYRK was no faster here),
        # float64 running sum: per-batch rounding stays ~1e-7 relative.
        self.gram[:-1, :-1] += x.T @ x
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


def layer_hessian(x: np.ndarray, weight: float, batch: int = 16384) -> np.ndarray:
    """Eq. 7–8 for one task: ``weight/n Σ x̃ x̃ᵀ`` over the rows of ``x``."""
    acc = HessianAccumulator(int(np.prod(x.shape[1:])))
    for start in range(0, len(x), batch):
        acc.update(x[start:start + batch])
    return acc.hessian(weight)


@dataclass
class PairGeometry:
    """One layer's shared input space: the damped Hessians and the Cholesky factor of S."""

    h_a: np.ndarray          # damped H_A
    h_b: np.ndarray          # damped H_B
    s_chol: np.ndarray       # lower Cholesky factor L of S = h_a + h_b = L Lᵀ
    damping: float           # the absolute λ that was added (split equally)

    @classmethod
    def from_hessians(cls, h_a: np.ndarray, h_b: np.ndarray, damping: float = 1e-4) -> "PairGeometry":
        if h_a.shape != h_b.shape or h_a.shape[0] != h_a.shape[1]:
            raise ValueError(f"Hessians must be square and alike, got {h_a.shape} and {h_b.shape}")
        if not (np.all(np.isfinite(h_a)) and np.all(np.isfinite(h_b))):
            raise MTZError("the layer inputs contain NaN or inf: check the models' weights and the data")
        scale = float(np.mean(np.diag(h_a) + np.diag(h_b)))
        lam = damping * scale if scale > 0 else damping
        diag = np.diag_indices(len(h_a))
        h_a, h_b = h_a.copy(), h_b.copy()
        h_a[diag] += 0.5 * lam
        h_b[diag] += 0.5 * lam
        try:
            s_chol = cholesky(h_a + h_b, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            raise MTZError("S = H_A + H_B is not positive definite even with damping: raise --damping") from None
        return cls(h_a, h_b, s_chol, lam)

    @property
    def m(self) -> np.ndarray:
        """M = H_A S⁻¹ H_B (= (H_A⁻¹ + H_B⁻¹)⁻¹ when both are invertible), symmetrised."""
        g = solve_triangular(self.s_chol, self.h_b, lower=True, check_finite=False)
        m = solve_triangular(self.s_chol, self.h_a, lower=True, check_finite=False).T @ g
        return 0.5 * (m + m.T)

    def _project(self, w: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P = H W, Y = L⁻¹P and q = diag(WᵀMW) = diag(WᵀP) − ‖Y‖² per column, since
        M = H_A − H_A S⁻¹ H_A = H_B − H_B S⁻¹ H_B."""
        # H is symmetric, so H W = (Wᵀ H)ᵀ: computed that way P comes out column-major, the
        # layout the triangular solves take without a copy (measured 1.5× faster at d = 4609)
        p = (w.T @ h).T
        y = solve_triangular(self.s_chol, p, lower=True, check_finite=False)
        q = np.einsum("ki,ki->i", w, p) - np.einsum("ki,ki->i", y, y)
        return p, y, q

    def compare(self, w_a: np.ndarray, w_b: np.ndarray) -> "Comparison":
        """Every pair's functional difference at once (Eq. 12), without forming M:
        w_A,iᵀ M w_B,j = (Y_Aᵀ Y_B)_ij with Y = L⁻¹ H W."""
        _, y_a, q_a = self._project(w_a, self.h_a)
        _, y_b, q_b = self._project(w_b, self.h_b)
        d = y_a.T @ y_b
        d *= -1.0   # in place: at N = 4096 each temporary N×N array costs a tenth of a second
        d += 0.5 * q_a[:, None]
        d += 0.5 * q_b[None, :]
        # rounding can push d(i, j) of (near-)identical vectors a hair below zero
        np.maximum(d, 0.0, out=d)
        return Comparison(d, y_a, y_b, self.s_chol)

    def matched(self, w_a: np.ndarray, w_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """d(i, i) and w̃ for column i of W_A paired with column i of W_B (pairs fixed beforehand,
        e.g. by a residual stream's first layer), at the cost of one column per pair."""
        _, y_a, q_a = self._project(w_a, self.h_a)
        _, y_b, q_b = self._project(w_b, self.h_b)
        d = np.maximum(0.5 * (q_a + q_b) - np.einsum("ki,ki->i", y_a, y_b), 0.0)
        merged = solve_triangular(self.s_chol, y_a + y_b, lower=True, trans="T", check_finite=False)
        return d, merged

    def functional_differences(self, w_a: np.ndarray, w_b: np.ndarray) -> np.ndarray:
        return self.compare(w_a, w_b).d

    def merged_weights_masked(self, w_a: np.ndarray, w_b: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The minimiser of the same quadratic with the pruned weights held at zero (§3.6):
        per column, w̃_m = S_mm⁻¹ (H_A w_A + H_B w_B)_m over the kept rows m (the bias always kept)."""
        rhs = self.h_a @ w_a + self.h_b @ w_b
        s = self.h_a + self.h_b
        out = np.zeros_like(rhs)
        for k in range(w_a.shape[1]):
            keep = np.append(np.flatnonzero(mask[:, k]), len(s) - 1)
            out[keep, k] = np.linalg.solve(s[np.ix_(keep, keep)], rhs[keep, k])
        return out

    def merged_weights(self, w_a: np.ndarray, w_b: np.ndarray) -> np.ndarray:
        """w̃ = S⁻¹(H_A w_A + H_B w_B) for paired columns (Eq. 10–11)."""
        rhs = self.h_a @ w_a + self.h_b @ w_b
        return cho_solve((self.s_chol, True), rhs, check_finite=False)


@dataclass
class Comparison:
    """The metric for all pairs plus what the merge of any chosen pairs reuses."""

    d: np.ndarray
    y_a: np.ndarray          # L⁻¹ H_A W_A
    y_b: np.ndarray          # L⁻¹ H_B W_B
    s_chol: np.ndarray

    def merged(self, pairs: list[tuple[int, int]]) -> np.ndarray:
        """w̃ = S⁻¹(H_A w_A,i + H_B w_B,j) = L⁻ᵀ(y_A,i + y_B,j) for each pair (Eq. 10–11)."""
        idx_a = [i for i, _ in pairs]
        idx_b = [j for _, j in pairs]
        rhs = self.y_a[:, idx_a] + self.y_b[:, idx_b]
        return solve_triangular(self.s_chol, rhs, lower=True, trans="T", check_finite=False)


def random_merge(w_a: np.ndarray, w_b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The paper's baseline: each shared unit keeps one of its two weight vectors, at random."""
    take_a = rng.random(w_a.shape[1]) < 0.5
    return np.where(take_a[None, :], w_a, w_b)


def channelwise_merge(h_a: np.ndarray, h_b: np.ndarray, w_a: np.ndarray, w_b: np.ndarray,
                      damping: float = 1e-4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eq. 10–12 for C independent channels at once (a depthwise layer: channel c's output reads
    only its own k×k patch, so each channel has its own (k²+1)² Hessians and one merge).

    h_a, h_b: (C, D, D) weighted Hessians; w_a, w_b: (C, D), bias last. The damping follows
    ``PairGeometry.from_hessians`` channel by channel: λ_c = damping · mean diag(H_A + H_B) of
    channel c, split equally. Returns d (C,), merged w̃ (C, D) and λ (C,).
    """
    if not (np.all(np.isfinite(h_a)) and np.all(np.isfinite(h_b))):
        raise MTZError("the layer inputs contain NaN or inf: check the models' weights and the data")
    dim = h_a.shape[-1]
    scale = np.mean(np.diagonal(h_a, axis1=1, axis2=2) + np.diagonal(h_b, axis1=1, axis2=2), axis=1)
    lam = np.where(scale > 0, damping * scale, damping)
    eye = np.eye(dim)[None]
    h_a = h_a + 0.5 * lam[:, None, None] * eye
    h_b = h_b + 0.5 * lam[:, None, None] * eye
    p_a, p_b = np.einsum("cij,cj->ci", h_a, w_a), np.einsum("cij,cj->ci", h_b, w_b)
    try:
        merged = np.linalg.solve(h_a + h_b, (p_a + p_b)[..., None])[..., 0]
    except np.linalg.LinAlgError:
        raise MTZError("S = H_A + H_B of a depthwise channel is singular even with damping: raise --damping") \
            from None
    # M = H_A S⁻¹ H_B, so ΔᵀMΔ = (H_A Δ)ᵀ S⁻¹ (H_B Δ)
    delta = w_a - w_b
    m_delta = np.einsum("cij,cj->ci", h_b, delta)
    s_inv_m_delta = np.linalg.solve(h_a + h_b, m_delta[..., None])[..., 0]
    d = np.maximum(0.5 * np.einsum("ci,ci->c", np.einsum("cij,cj->ci", h_a, delta), s_inv_m_delta), 0.0)
    return d, merged, lam
