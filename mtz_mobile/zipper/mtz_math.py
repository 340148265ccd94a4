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

Wide layers: a layer's memory is H_A, H_B and L, each (d+1)². Over more than FLOAT32_ABOVE
inputs the Hessians are summed and held in float32 (their entries are float32 products of
float32 activations anyway); S and L stay float64, built and factorised in one buffer, and the
damping is applied in the products rather than to copies — VGG-16's fc6 (d = 25,088) holds
2.5 + 2.5 + 5 GB instead of 5 + 5 + 5 plus copies. A layer that sees fewer instances than a
quarter of its inputs (fc6 from a few hundred calibration images) forms none of these: its
Hessians are held as their rows and the same math runs in the instances' space (low_rank.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular

from mtz_mobile.errors import MTZError

from . import device_math


FLOAT32_ABOVE = 8192   # inputs: a Hessian over more is summed and held in float32 (VGG-16's fc6: 2.5 GB, not 5)
COLUMNS = 8192          # Gram columns per GEMM: one GEMM up to 8192 inputs (split at 4096, d = 4609 took
                        # 1.7× as long); wider, the product's temporary stays dim × 8192
ROWS = 32768            # instances per float32 GEMM: its rounding stays ~1e-7 relative (the sums are float64),
                        # and one GEMM over a million rows is what threaded OpenBLAS is slowest at


RANK_MARGIN = 2         # instances per input below which a Hessian's smallest eigenvalues are mostly rounding


def hessian_dtype(dim: int):
    return np.float32 if dim > FLOAT32_ABOVE else np.float64


def product_dtype(instances: int, dim: int):
    """The GEMM precision of a Hessian over ``dim`` inputs (bias included) summed from ``instances``
    rows. Below RANK_MARGIN·dim rows it is (nearly) rank-deficient: its smallest eigenvalues are
    float32 rounding, which S⁻¹ amplifies ~1e4-fold (λ is 1e-4 of the Hessians' scale) — d off by
    ~1e-3 relative and outputs by ~1e-2 against float64 (tests/test_low_rank.py). So such a Hessian,
    where it is held in float64, gets float64 products: at most 2·dim³ flops, as its rows are few."""
    return np.float64 if instances < RANK_MARGIN * dim and hessian_dtype(dim) == np.float64 else np.float32


class HessianAccumulator:
    """Accumulates Σ x̃ x̃ᵀ over batches of inputs (rows are instances), in place: float32 GEMMs
    per chunk of rows (twice as fast as float64; OpenBLAS's SYRK was slower still; ``products``
    float64 where the rows are few), summed in float64 — or, over more than FLOAT32_ABOVE inputs
    unless ``dtype`` says otherwise, in float32, where a float64 sum would not fit beside the other
    task's Hessian and the factor of S."""

    def __init__(self, dim: int, dtype=None, products=np.float32):
        self.dim = dim
        self.gram = np.zeros((dim + 1, dim + 1), dtype or hessian_dtype(dim))
        self.products = products
        self.sums = np.zeros(dim)
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x).reshape(len(x), -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} inputs per instance, got {x.shape[1]}")
        for r in range(0, len(x), ROWS):
            chunk = x[r:r + ROWS].astype(self.products, copy=False)
            for c in range(0, self.dim, COLUMNS):
                end = min(c + COLUMNS, self.dim)
                self.gram[:-1, c:end] += device_math.product_tn(chunk, chunk[:, c:end])
        self.sums += x.sum(axis=0, dtype=np.float64)
        self.count += len(x)

    def hessian(self, weight: float) -> np.ndarray:
        """``weight/n · Σ x̃ x̃ᵀ`` — weight is α for task A and 1−α for task B. Finishes the sum in
        place: the accumulator is spent."""
        if self.count == 0:
            raise MTZError("no calibration data reached this layer: give each task at least one sample")
        h, self.gram = self.gram, None
        h[:-1, -1] = self.sums
        h[-1, :-1] = self.sums
        h[-1, -1] = self.count
        h *= weight / self.count
        return h


def layer_hessian(x: np.ndarray, weight: float, batch: int = 16384) -> np.ndarray:
    """Eq. 7–8 for one task: ``weight/n Σ x̃ x̃ᵀ`` over the rows of ``x``."""
    acc = HessianAccumulator(int(np.prod(x.shape[1:])))
    for start in range(0, len(x), batch):
        acc.update(x[start:start + batch])
    return acc.hessian(weight)


def cholesky_in_place(s: np.ndarray, block: int = 2048) -> np.ndarray:
    """The lower Cholesky factor L of a symmetric positive definite float64 S, written over S
    (C order), blocked: LAPACK factorises each diagonal block of at most ``block`` rows, the panel
    below it is one triangular solve, and the trailing matrix is updated one block column at a
    time, so no temporary exceeds dim × block. The blocking is not only for memory: LAPACK's own
    potrf crashed (SIGSEGV, scipy 1.17's OpenBLAS) on VGG-16's 25,089-wide S. Raises numpy's
    LinAlgError if S is not positive definite. On the GPU (device_math) one factorisation there."""
    factor = device_math.cholesky(s)
    if factor is not None:
        s[...] = factor
        return s
    n = len(s)
    for k in range(0, n, block):
        e = min(k + block, n)
        # a diagonal block's transpose (Fortran order) is the block: factorised in place as Uᵀ = L
        s[k:e, k:e] = cholesky(s[k:e, k:e].T, lower=False, check_finite=False).T
        if e == n:
            break
        s[k:e, e:] = 0.0
        panel = solve_triangular(s[k:e, k:e], s[e:, k:e].T, lower=True, check_finite=False).T
        s[e:, k:e] = panel
        for c in range(e, n, block):   # the lower part of the trailing matrix, less panel panelᵀ
            ce = min(c + block, n)
            s[c:, c:ce] -= panel[c - e:] @ panel[c - e:ce - e].T
    return s


def solve_in_place(s: np.ndarray, b: np.ndarray) -> np.ndarray:
    """S⁻¹ B for a symmetric positive definite float64 S, which is overwritten by its factor;
    a column-major float64 B is overwritten by the solution."""
    factor = cholesky_in_place(s)
    if device_math.on_device():
        b[...] = device_math.cho_solve(factor, b)
        return b
    y = solve_triangular(factor, b, lower=True, check_finite=False, overwrite_b=True)
    return solve_triangular(factor, y, lower=True, trans="T", check_finite=False, overwrite_b=True)


def _all_finite(h: np.ndarray) -> bool:
    # the float64 sum of a Hessian's entries (float32, or float64 of any sane size) is NaN or inf
    # only if an entry is, and it needs no full-size boolean temporary as isfinite would
    return bool(np.isfinite(h.sum(dtype=np.float64)))


@dataclass
class PairGeometry:
    """One layer's shared input space: the Hessians as given, the damping and the Cholesky factor
    of S. The damping is applied in every product (H W + λ/2 W) rather than added to copies of
    the Hessians, so a wide layer holds H_A, H_B and L once each."""

    raw_a: np.ndarray        # H_A as given (float32 for a wide layer)
    raw_b: np.ndarray        # H_B as given
    s_chol: np.ndarray       # lower Cholesky factor L of S = H_A + H_B + λI = L Lᵀ (float64)
    damping: float           # the absolute λ that was added (split equally)

    @classmethod
    def from_hessians(cls, h_a: np.ndarray, h_b: np.ndarray, damping: float = 1e-4) -> "PairGeometry":
        if h_a.shape != h_b.shape or h_a.ndim != 2 or h_a.shape[0] != h_a.shape[1]:
            raise ValueError(f"Hessians must be square and alike, got {h_a.shape} and {h_b.shape}")
        if not (_all_finite(h_a) and _all_finite(h_b)):
            raise MTZError("the layer inputs contain NaN or inf: check the models' weights and the data")
        scale = float(np.mean(np.diagonal(h_a).astype(np.float64) + np.diagonal(h_b)))
        lam = damping * scale if scale > 0 else damping
        s = np.add(h_a, h_b, dtype=np.float64)   # the one full-size float64 buffer: it becomes L
        s[np.diag_indices(len(s))] += lam
        try:
            s_chol = cholesky_in_place(s)
        except np.linalg.LinAlgError:
            raise MTZError("S = H_A + H_B is not positive definite even with damping: raise --damping") from None
        return cls(h_a, h_b, s_chol, lam)

    def _times(self, h: np.ndarray, w: np.ndarray) -> np.ndarray:
        """(H + λ/2·I) W for a Hessian as given, a new float64 array. H is symmetric, so H W = (Wᵀ H)ᵀ:
        computed that way the product comes out column-major, the layout the triangular solves take
        without a copy (measured 1.5× faster at d = 4609); a float32 H multiplies float32 W (no
        float64 copy of H)."""
        p = (w.T.astype(h.dtype, copy=False) @ h).T
        p = p.astype(np.float64, order="F") if p.dtype != np.float64 else p
        p += (0.5 * self.damping) * w
        return p

    @property
    def h_a(self) -> np.ndarray:
        """The damped H_A (a new float64 array)."""
        return self._damped(self.raw_a)

    @property
    def h_b(self) -> np.ndarray:
        return self._damped(self.raw_b)

    def _damped(self, h: np.ndarray) -> np.ndarray:
        out = h.astype(np.float64)
        out[np.diag_indices(len(out))] += 0.5 * self.damping
        return out

    @property
    def m(self) -> np.ndarray:
        """M = H_A S⁻¹ H_B (= (H_A⁻¹ + H_B⁻¹)⁻¹ when both are invertible), symmetrised."""
        g = solve_triangular(self.s_chol, self.h_b, lower=True, check_finite=False)
        m = solve_triangular(self.s_chol, self.h_a, lower=True, check_finite=False).T @ g
        return 0.5 * (m + m.T)

    def _project(self, w: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Y = L⁻¹P with P = H W, and q = diag(WᵀMW) = diag(WᵀP) − ‖Y‖² per column, since
        M = H_A − H_A S⁻¹ H_A = H_B − H_B S⁻¹ H_B."""
        p = self._times(h, w)
        wp = np.einsum("ki,ki->i", w, p)
        y = solve_triangular(self.s_chol, p, lower=True, check_finite=False, overwrite_b=True)   # P's memory
        return y, wp - np.einsum("ki,ki->i", y, y)

    def compare(self, w_a: np.ndarray, w_b: np.ndarray) -> "Comparison":
        """Every pair's functional difference at once (Eq. 12), without forming M:
        w_A,iᵀ M w_B,j = (Y_Aᵀ Y_B)_ij with Y = L⁻¹ H W."""
        y_a, q_a = self._project(w_a, self.raw_a)
        y_b, q_b = self._project(w_b, self.raw_b)
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
        y_a, q_a = self._project(w_a, self.raw_a)
        y_b, q_b = self._project(w_b, self.raw_b)
        d = np.maximum(0.5 * (q_a + q_b) - np.einsum("ki,ki->i", y_a, y_b), 0.0)
        merged = solve_triangular(self.s_chol, y_a + y_b, lower=True, trans="T", check_finite=False)
        return d, merged

    def functional_differences(self, w_a: np.ndarray, w_b: np.ndarray) -> np.ndarray:
        return self.compare(w_a, w_b).d

    def merged_weights_masked(self, w_a: np.ndarray, w_b: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The minimiser of the same quadratic with the pruned weights held at zero (§3.6):
        per column, w̃_m = S_mm⁻¹ (H_A w_A + H_B w_B)_m over the kept rows m (the bias always kept)."""
        rhs = self._times(self.raw_a, w_a) + self._times(self.raw_b, w_b)
        s = self.h_a + self.h_b
        out = np.zeros_like(rhs)
        for k in range(w_a.shape[1]):
            keep = np.append(np.flatnonzero(mask[:, k]), len(s) - 1)
            out[keep, k] = np.linalg.solve(s[np.ix_(keep, keep)], rhs[keep, k])
        return out

    def merged_weights(self, w_a: np.ndarray, w_b: np.ndarray) -> np.ndarray:
        """w̃ = S⁻¹(H_A w_A + H_B w_B) for paired columns (Eq. 10–11)."""
        rhs = self._times(self.raw_a, w_a) + self._times(self.raw_b, w_b)
        return cho_solve((self.s_chol.T, False), rhs, check_finite=False)


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
