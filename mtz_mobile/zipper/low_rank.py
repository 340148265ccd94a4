"""mtz_math's layer math for a layer that sees fewer instances than it has inputs.

A Hessian over D inputs summed from n < D instances has rank ≤ n: H = UᵀU with U = √(w/n)·X̃
(one row per instance, bias column included). VGG-16's fc6 reads 25,088 inputs from a few
hundred calibration images: its D × D Hessians (2.5–5 GB each) and the Cholesky factor of S
(5 GB and minutes) are replaced here by the rows themselves and one n × n factorisation.

With U = [U_A; U_B] (n = n_A + n_B rows), J = diag(+1 on A's rows, −1 on B's),
K = UUᵀ + λI = CCᵀ and the damping of mtz_math (λ/2 on each Hessian, S = UᵀU + λI), the
push-through identity S⁻¹Uᵀ = UᵀK⁻¹ turns Eq. 10–12 exactly into

    w̃       = ½(w_A + w_B) + ½ UᵀK⁻¹JU (w_A − w_B)                       (Eq. 10–11)
    d(i, j) = λ/8 · (‖Δ‖² + ‖C⁻¹JU Δ‖²),   Δ = w_A,i − w_B,j              (Eq. 12)

i.e. M = H_A S⁻¹ H_B = λ/4 (I + UᵀJK⁻¹JU). Both are sums of squares: nothing large cancels,
where the D-dimensional S-form subtracts H_A S⁻¹ H_A from H_A. The cost is O(n·D·N) for N
units instead of O(D²·N) and O(D³). Compensation's ridge refit uses the same identity:
(X̃ᵀX̃/n + ρI)⁻¹X̃ᵀ = X̃ᵀ(X̃X̃ᵀ/n + ρI)⁻¹.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cholesky, solve_triangular

from mtz_mobile.errors import MTZError

from .mtz_math import PairGeometry, cholesky_in_place

ROWS_PER_INPUT = 0.25   # a task's Hessian is kept as its rows while they are at most a quarter of its inputs:
                        # two tasks' rows then stay under half the width, where the n × n kernel is the cheaper side


def keeps_rows(instances: int, dim: int) -> bool:
    """Whether a Hessian over ``dim`` inputs (bias included) from ``instances`` rows is held factored."""
    return 0 < instances <= ROWS_PER_INPUT * dim


def _sq(a: np.ndarray) -> np.ndarray:
    return np.einsum("ki,ki->i", a, a)


@dataclass
class FactoredHessian:
    """H = UᵀU, held as U (float64, one row per instance)."""

    u: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (self.u.shape[1], self.u.shape[1])

    def dense(self) -> np.ndarray:
        return self.u.T @ self.u

    def select(self, sel: np.ndarray) -> "FactoredHessian":
        """The Hessian over the inputs ``sel`` (rows and columns of H; columns of U)."""
        return FactoredHessian(self.u[:, sel])

    @staticmethod
    def stack(parts: list["FactoredHessian"]) -> "FactoredHessian":
        """Σ H_t as one factor: the rows of every part."""
        return FactoredHessian(np.vstack([p.u for p in parts]))


def as_dense(h) -> np.ndarray:
    return h.dense() if isinstance(h, FactoredHessian) else h


class RowAccumulator:
    """HessianAccumulator's interface for a factored Hessian: keeps the augmented rows x̃ = (x, 1)."""

    def __init__(self, dim: int):
        self.dim = dim
        self.chunks: list[np.ndarray] = []
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x).reshape(len(x), -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} inputs per instance, got {x.shape[1]}")
        self.chunks.append(np.hstack([x.astype(np.float64), np.ones((len(x), 1))]))
        self.count += len(x)

    def rows(self) -> np.ndarray:
        """X̃ (count × dim+1, float64)."""
        if self.count == 0:
            raise MTZError("no calibration data reached this layer: give each task at least one sample")
        return np.vstack(self.chunks)

    def hessian(self, weight: float) -> FactoredHessian:
        """``weight/n · Σ x̃ x̃ᵀ`` as U = √(weight/n)·X̃."""
        u = self.rows()
        u *= np.sqrt(weight / self.count)
        return FactoredHessian(u)


@dataclass
class LowRankGeometry:
    """PairGeometry's interface over factored Hessians (see the module's docstring)."""

    u: np.ndarray            # [U_A; U_B]
    signs: np.ndarray        # J's diagonal: +1 on A's rows, −1 on B's
    k_chol: np.ndarray       # lower Cholesky factor C of K = UUᵀ + λI
    damping: float           # the absolute λ, as PairGeometry's

    @classmethod
    def from_factors(cls, h_a: FactoredHessian, h_b: FactoredHessian, damping: float = 1e-4) -> "LowRankGeometry":
        if h_a.shape != h_b.shape:
            raise ValueError(f"Hessians must be alike, got {h_a.shape} and {h_b.shape}")
        u = np.vstack([h_a.u, h_b.u])
        if not np.isfinite(u.sum()):
            raise MTZError("the layer inputs contain NaN or inf: check the models' weights and the data")
        scale = float(np.sum(u * u)) / u.shape[1]   # mean diag(H_A + H_B), as PairGeometry's damping reads it
        lam = damping * scale if scale > 0 else damping
        k = u @ u.T
        k[np.diag_indices(len(k))] += lam
        try:
            c = cholesky(k, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            raise MTZError("S = H_A + H_B is not positive definite even with damping: raise --damping") from None
        return cls(u, np.r_[np.ones(len(h_a.u)), -np.ones(len(h_b.u))], c, lam)

    def _project(self, w: np.ndarray) -> np.ndarray:
        """C⁻¹ J U W."""
        v = self.u @ w
        v *= self.signs[:, None]
        return solve_triangular(self.k_chol, v, lower=True, check_finite=False, overwrite_b=True)

    def _lift(self, y: np.ndarray) -> np.ndarray:
        """Uᵀ C⁻ᵀ Y: with Y = C⁻¹JUΔ, the correction UᵀK⁻¹JUΔ of Eq. 10–11."""
        return self.u.T @ solve_triangular(self.k_chol, y, lower=True, trans="T", check_finite=False)

    def compare(self, w_a: np.ndarray, w_b: np.ndarray) -> "LowRankComparison":
        y_a, y_b = self._project(w_a), self._project(w_b)
        d = w_a.T @ w_b
        d += y_a.T @ y_b
        d *= -2.0
        d += (_sq(w_a) + _sq(y_a))[:, None]
        d += (_sq(w_b) + _sq(y_b))[None, :]
        d *= self.damping / 8.0
        np.maximum(d, 0.0, out=d)   # the expanded squares of near-identical vectors can round below zero
        return LowRankComparison(d, self, w_a, w_b, y_a, y_b)

    def matched(self, w_a: np.ndarray, w_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """d(i, i) and w̃ for column i of W_A paired with column i of W_B."""
        delta = w_a - w_b
        y = self._project(delta)
        d = self.damping / 8.0 * (_sq(delta) + _sq(y))
        return d, 0.5 * (w_a + w_b) + 0.5 * self._lift(y)

    def dense(self) -> PairGeometry:
        """The same geometry in the D-dimensional S-form (the same λ): D × D arrays."""
        n_a = int(np.sum(self.signs > 0))
        h_a, h_b = self.u[:n_a].T @ self.u[:n_a], self.u[n_a:].T @ self.u[n_a:]
        s = h_a + h_b
        s[np.diag_indices(len(s))] += self.damping
        return PairGeometry(h_a, h_b, cholesky_in_place(s), self.damping)

    def merged_weights_masked(self, w_a: np.ndarray, w_b: np.ndarray, mask: np.ndarray) -> np.ndarray:
        # each pruned column has its own kept rows, hence its own S_mm: solved in the S-form
        return self.dense().merged_weights_masked(w_a, w_b, mask)


@dataclass
class LowRankComparison:
    """Comparison's interface: the metric for all pairs and the merge of any chosen pairs."""

    d: np.ndarray
    geometry: LowRankGeometry
    w_a: np.ndarray
    w_b: np.ndarray
    y_a: np.ndarray          # C⁻¹ J U W_A
    y_b: np.ndarray

    def merged(self, pairs: list[tuple[int, int]]) -> np.ndarray:
        idx_a = [i for i, _ in pairs]
        idx_b = [j for _, j in pairs]
        return 0.5 * (self.w_a[:, idx_a] + self.w_b[:, idx_b]) \
            + 0.5 * self.geometry._lift(self.y_a[:, idx_a] - self.y_b[:, idx_b])


def ridge_refit(x: np.ndarray, t: np.ndarray, current: np.ndarray, ridge: float) -> np.ndarray:
    """argmin_W ‖X̃W − T‖²/n + ρ‖W − W₀‖² with ρ = ridge · mean diag(X̃ᵀX̃/n) — compensation's
    normal equations (X̃ᵀX̃/n + ρI) W = X̃ᵀT/n + ρW₀ — solved in the instances' space:
    W = W₀ + X̃ᵀ (X̃X̃ᵀ/n + ρI)⁻¹ (T − X̃W₀)/n. x: X̃ (n × D, bias column included)."""
    n = len(x)
    rho = ridge * float(np.sum(x * x)) / (n * x.shape[1])
    k = x @ x.T / n
    k[np.diag_indices(n)] += rho
    c = cholesky(k, lower=True, check_finite=False)   # raises LinAlgError if singular, as solve_in_place does
    r = (t - x @ current) / n
    y = solve_triangular(c, r, lower=True, check_finite=False, overwrite_b=True)
    return current + x.T @ solve_triangular(c, y, lower=True, trans="T", check_finite=False, overwrite_b=True)
