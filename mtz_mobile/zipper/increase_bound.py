"""An upper confidence bound on a task's error increase, paired over the same validation images.

On each validation image the original model and the zipped network are right or wrong. Only the
discordant images carry information: ``worse`` (original right, zipped wrong, probability p_w)
and ``better`` (the reverse, p_b). The error increase is Δ = p_w − p_b, estimated by
(worse − better) / n. Its upper bound at confidence 1 − α is exact and conservative:

- D = worse − better. Given q = p_w + p_b, the number of discordant images M is Binomial(n, q) and,
  given M = m, worse is Binomial(m, (q + Δ)/(2q)); so P_{Δ,q}(D ≤ d) is a sum over m, falling in Δ.
- q is unknown (a nuisance parameter). Following Berger & Boos (1994, JASA 89:1012) it ranges
  over its own exact (Clopper–Pearson) upper bound q_U at level 1 − γ, γ = α/10, and the tail is
  taken at its largest over that range; the bound is the largest Δ whose tail still exceeds α − γ.
  Coverage is at least 1 − α for every (p_w, p_b) (tested exactly by enumeration).

With no discordant image at all (nothing shared) the bound is still positive, about ln(1/γ)/n:
``images_to_certify`` says how many images a budget needs before anything can be accepted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from mtz_mobile.errors import MTZError

_Q_GRID = 24        # nuisance values tried between |Δ| and q_U (the tail's maximum is at q_U in practice)
_RESOLUTION = 1e-6  # of the bound (1e-4 pp)


@dataclass
class IncreaseBound:
    """One task's measured change: counts, point estimate and upper bound (fractions, not pp)."""

    images: int
    worse: int                 # original right, zipped wrong
    better: int                # original wrong, zipped right
    point: float               # (worse − better) / images
    upper: float               # the bound at ``confidence``
    confidence: float

    def within(self, budget: float) -> bool:
        return self.upper <= budget

    def to_json(self) -> dict:
        return dict(asdict(self), point_pp=100 * self.point, upper_pp=100 * self.upper)

    def describe(self) -> str:
        return (f"{100 * self.point:+.2f} pp (≤ {100 * self.upper:+.2f} pp at {100 * self.confidence:g} %, "
                f"{self.images} images)")


def paired_increase(original_right: np.ndarray, zipped_right: np.ndarray, confidence: float) -> IncreaseBound:
    """The bound from per-image correctness of the original and the zipped network (same images)."""
    original_right, zipped_right = np.asarray(original_right, bool), np.asarray(zipped_right, bool)
    if original_right.shape != zipped_right.shape or original_right.ndim != 1:
        raise MTZError(f"internal: paired correctness of different shapes {original_right.shape}, "
                       f"{zipped_right.shape}")
    worse = int(np.count_nonzero(original_right & ~zipped_right))
    better = int(np.count_nonzero(~original_right & zipped_right))
    n = len(original_right)
    return IncreaseBound(n, worse, better, (worse - better) / n, upper_bound(worse, better, n, confidence), confidence)


def tails(delta: float, q: np.ndarray, d: int, n: int) -> np.ndarray:
    """P(worse − better ≤ d) when p_w − p_b = delta, for each p_w + p_b in ``q`` (|delta| ≤ q ≤ 1)."""
    q = np.clip(np.atleast_1d(np.asarray(q, np.float64)), 1e-300, 1.0)[:, None]
    m = np.arange(_m_limit(n, float(q.max())) + 1)[None, :]
    p_worse = np.clip((q + delta) / (2 * q), 0.0, 1.0)
    # worse − better ≤ d  ⇔  worse ≤ (d + m) / 2, given m discordant images
    return np.sum(stats.binom.pmf(m, n, q) * stats.binom.cdf(np.floor((d + m) / 2), m, p_worse), axis=1)


def _m_limit(n: int, q: float) -> int:
    """Discordant counts beyond this have negligible probability (< 1e-12 in total)."""
    return int(min(n, math.ceil(stats.binom.isf(1e-13, n, q)) + 1))


def upper_bound(worse: int, better: int, n: int, confidence: float) -> float:
    """The largest increase Δ that the counts cannot reject at level 1 − ``confidence`` (see module)."""
    _check(worse, better, n, confidence)
    alpha = 1.0 - confidence
    gamma = alpha / 10
    m, d = worse + better, worse - better
    q_upper = 1.0 if m == n else float(stats.beta.ppf(1 - gamma, m + 1, n - m))

    def plausible(delta: float) -> bool:
        grid = np.linspace(max(abs(delta), 1e-15), q_upper, _Q_GRID)
        return float(tails(delta, grid, d, n).max()) > alpha - gamma

    lo, hi = d / n, q_upper      # the point estimate is always plausible; Δ ≤ q ≤ q_U
    if plausible(hi):
        return hi
    while hi - lo > _RESOLUTION:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if plausible(mid) else (lo, mid)
    return hi


def images_to_certify(budget: float, confidence: float) -> int:
    """The fewest validation images on which an unchanged network (no discordant image) is
    certified within ``budget`` (a fraction)."""
    if budget <= 0:
        raise MTZError("a budget of 0 pp can never be certified on a finite validation set: give a positive "
                       "--max-error-increase")
    hi = 16
    while upper_bound(0, 0, hi, confidence) > budget:
        hi *= 2
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if upper_bound(0, 0, mid, confidence) <= budget else (mid, hi)
    return hi


def _check(worse: int, better: int, n: int, confidence: float) -> None:
    if not 0.5 <= confidence < 1.0:
        raise MTZError(f"confidence {confidence} is outside [0.5, 1): give e.g. 0.95")
    if n <= 0 or worse < 0 or better < 0 or worse + better > n:
        raise MTZError(f"internal: {worse} worse and {better} better of {n} validation images")
