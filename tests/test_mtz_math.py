"""The S-form metric and update against the paper's Eq. 10–12 evaluated with explicit inverses."""

import numpy as np
import pytest

from mtz_mobile.errors import MTZError
from mtz_mobile.zipper.merge import METHODS, MergeOperands
from mtz_mobile.zipper.mtz_math import PairGeometry, channelwise_merge, layer_hessian, random_merge


def random_spd(rng, n):
    a = rng.standard_normal((n, 2 * n))
    return a @ a.T / (2 * n) + 0.1 * np.eye(n)


def explicit_eq10_12(h_a, h_b, w_a, w_b):
    """Eq. 10–12 the slow way: per pair, with H_A⁻¹, H_B⁻¹ and (H_A⁻¹ + H_B⁻¹)⁻¹."""
    ia, ib = np.linalg.inv(h_a), np.linalg.inv(h_b)
    m = np.linalg.inv(ia + ib)
    d = np.empty((w_a.shape[1], w_b.shape[1]))
    merged = {}
    for i in range(w_a.shape[1]):
        for j in range(w_b.shape[1]):
            delta = w_a[:, i] - w_b[:, j]
            d[i, j] = 0.5 * delta @ m @ delta                         # Eq. 12
            step_a = -ia @ m @ delta                                   # Eq. 11: δw_A
            step_b = ib @ m @ delta                                    #          δw_B
            merged[i, j] = (w_a[:, i] + step_a, w_b[:, j] + step_b)    # Eq. 10: both equal w̃
    return d, merged


def test_s_form_equals_explicit_inverse_form():
    rng = np.random.default_rng(0)
    n, n_a, n_b = 7, 5, 6
    h_a, h_b = 0.5 * random_spd(rng, n), 0.5 * random_spd(rng, n)
    w_a, w_b = rng.standard_normal((n, n_a)), rng.standard_normal((n, n_b))
    geom = PairGeometry.from_hessians(h_a, h_b, damping=0.0)
    d_ref, merged_ref = explicit_eq10_12(h_a, h_b, w_a, w_b)
    d = geom.functional_differences(w_a, w_b)
    assert np.max(np.abs(d - d_ref) / np.abs(d_ref)) <= 1e-6
    m_ref = np.linalg.inv(np.linalg.inv(h_a) + np.linalg.inv(h_b))
    assert np.linalg.norm(geom.m - m_ref) <= 1e-6 * np.linalg.norm(m_ref)
    comparison = geom.compare(w_a, w_b)
    for (i, j), (from_a, from_b) in merged_ref.items():
        for w in (geom.merged_weights(w_a[:, [i]], w_b[:, [j]])[:, 0], comparison.merged([(i, j)])[:, 0]):
            assert np.linalg.norm(w - from_a) <= 1e-6 * np.linalg.norm(from_a)
            assert np.linalg.norm(w - from_b) <= 1e-6 * np.linalg.norm(from_b)
    # pairs fixed beforehand (column i with column i), as a residual stream's later layers merge
    d_matched, merged_matched = geom.matched(w_a, w_b[:, :n_a])
    np.testing.assert_allclose(d_matched, np.diag(d_ref[:, :n_a]), rtol=1e-6)
    for i in range(n_a):
        from_a = merged_ref[i, i][0]
        assert np.linalg.norm(merged_matched[:, i] - from_a) <= 1e-6 * np.linalg.norm(from_a)


def test_hessian_is_the_augmented_second_moment():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 4)).astype(np.float32)
    h = layer_hessian(x, weight=0.3, batch=64)
    x1 = np.hstack([x, np.ones((300, 1))]).astype(np.float64)
    np.testing.assert_allclose(h, 0.3 * x1.T @ x1 / 300, rtol=1e-5, atol=1e-6)


def test_singular_hessians_give_finite_metric_and_update():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    x[:, 2] = 0.0   # a zero-padded input
    x[:, 4] = 1.0   # a constant input, collinear with the bias unit
    x_b = np.maximum(x, 0)   # a task whose inputs are dead ReLUs half the time
    x_b[:, 0] = 0.0
    h_a, h_b = layer_hessian(x, 0.5), layer_hessian(x_b, 0.5)
    assert np.linalg.matrix_rank(h_a) < 7 and np.linalg.matrix_rank(h_b) < 7
    w_a, w_b = rng.standard_normal((7, 4)), rng.standard_normal((7, 3))
    geom = PairGeometry.from_hessians(h_a, h_b)
    d = geom.functional_differences(w_a, w_b)
    merged = geom.merged_weights(w_a[:, :3], w_b)
    assert np.all(np.isfinite(d)) and np.all(d >= 0)
    assert np.all(np.isfinite(merged))


def test_identical_weights_merge_into_themselves_with_damping():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((100, 5)).astype(np.float32)
    x[:, 1] = 0.0
    geom = PairGeometry.from_hessians(layer_hessian(x, 0.5), layer_hessian(x, 0.5), damping=1e-2)
    w = rng.standard_normal((6, 3))
    np.testing.assert_allclose(geom.merged_weights(w, w), w, rtol=1e-10, atol=1e-12)
    assert np.allclose(np.diag(geom.functional_differences(w, w)), 0.0, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_metric_is_the_quadratic_change_of_both_errors(alpha):
    """d(i, j) equals ½δ_AᵀH_Aδ_A + ½δ_BᵀH_Bδ_B at the merged weights, the quantity it minimises."""
    rng = np.random.default_rng(4)
    h_a, h_b = alpha * random_spd(rng, 5), (1 - alpha) * random_spd(rng, 5)
    w_a, w_b = rng.standard_normal((5, 1)), rng.standard_normal((5, 1))
    geom = PairGeometry.from_hessians(h_a, h_b, damping=0.0)
    w = geom.merged_weights(w_a, w_b)
    da, db = w - w_a, w - w_b
    change = 0.5 * (da.T @ h_a @ da + db.T @ h_b @ db).item()
    assert geom.functional_differences(w_a, w_b)[0, 0] == pytest.approx(change, rel=1e-9)
    # and no other common weight vector does better
    for _ in range(20):
        v = w + 1e-2 * rng.standard_normal(w.shape)
        ea, eb = v - w_a, v - w_b
        assert 0.5 * (ea.T @ h_a @ ea + eb.T @ h_b @ eb).item() >= change


def test_masked_merge_is_the_constrained_optimum():
    """With pruned rows held at zero, no other vector on the kept rows lowers the quadratic change."""
    rng = np.random.default_rng(5)
    h_a, h_b = 0.5 * random_spd(rng, 6), 0.5 * random_spd(rng, 6)
    w_a, w_b = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    mask = rng.random((5, 3)) < 0.6
    geom = PairGeometry.from_hessians(h_a, h_b, damping=0.0)
    merged = geom.merged_weights_masked(w_a, w_b, mask)
    assert np.all(merged[:-1][~mask] == 0)

    def change(w, k):
        da, db = w - w_a[:, k], w - w_b[:, k]
        return 0.5 * (da @ h_a @ da + db @ h_b @ db)

    for k in range(3):
        keep = np.append(np.flatnonzero(mask[:, k]), 5)
        for _ in range(30):
            probe = merged[:, k].copy()
            probe[keep] += 1e-3 * rng.standard_normal(len(keep))
            assert change(probe, k) >= change(merged[:, k], k)
    # with every row kept it is the unconstrained merge
    np.testing.assert_allclose(geom.merged_weights_masked(w_a, w_b, np.ones((5, 3), bool)),
                               geom.merged_weights(w_a, w_b), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("damping", [1e-4, 0.3])
def test_channelwise_merge_is_eq10_12_per_channel_with_explicit_inverses(damping):
    """A depthwise layer: every channel its own pair. Each channel against the explicit inverse form,
    with the damping as DESIGN states it (λ_c = damping · mean diag(H_A + H_B), half on each H);
    a channel whose Hessians are zero falls back to λ = damping."""
    rng = np.random.default_rng(5)
    c, dim = 4, 6
    h_a = np.stack([random_spd(rng, dim) * (k + 1) for k in range(c)])
    h_b = np.stack([random_spd(rng, dim) * (3 - k) for k in range(c)])
    h_a[2] = h_b[2] = 0.0
    w_a, w_b = rng.standard_normal((c, dim)), rng.standard_normal((c, dim))
    d, merged, lam = channelwise_merge(h_a, h_b, w_a, w_b, damping)
    assert d.shape == (c,) and merged.shape == (c, dim) and lam.shape == (c,)
    for k in range(c):
        scale = np.trace(h_a[k] + h_b[k]) / dim
        assert lam[k] == pytest.approx(damping * scale if scale > 0 else damping, rel=1e-12)
        ha, hb = h_a[k] + lam[k] / 2 * np.eye(dim), h_b[k] + lam[k] / 2 * np.eye(dim)
        dk, mk = explicit_eq10_12(ha, hb, w_a[k][:, None], w_b[k][:, None])
        assert d[k] == pytest.approx(dk[0, 0], rel=1e-8)
        np.testing.assert_allclose(merged[k], mk[0, 0][0], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(merged[k], mk[0, 0][1], rtol=1e-8, atol=1e-10)
        # d is half the change of both tasks' quadratic errors at w̃
        change = sum((merged[k] - w) @ h @ (merged[k] - w) for w, h in ((w_a[k], ha), (w_b[k], hb)))
        assert d[k] == pytest.approx(0.5 * change, rel=1e-8)
    small = 0.01 * h_a   # 0 < mean diag < 1: still damping × scale
    _, _, lam_small = channelwise_merge(small, small, w_a, w_b, damping)
    scale_small = np.trace(small[0] * 2) / dim
    assert 0 < scale_small < 1 and lam_small[0] == pytest.approx(damping * scale_small, rel=1e-12)
    same, merged_same, _ = channelwise_merge(h_a, h_b, w_a, w_a, damping)
    np.testing.assert_allclose(same, 0.0, atol=1e-12)
    np.testing.assert_allclose(merged_same, w_a, rtol=1e-10)


def test_channelwise_merge_refuses_nan_and_a_singular_channel():
    rng = np.random.default_rng(6)
    h = np.stack([random_spd(rng, 3) for _ in range(2)])
    w = rng.standard_normal((2, 3))
    bad = h.copy()
    bad[1, 0, 0] = np.nan
    nan = "^the layer inputs contain NaN or inf: check the models' weights and the data$"
    with pytest.raises(MTZError, match=nan):
        channelwise_merge(bad, h, w, w)
    with pytest.raises(MTZError, match=nan):
        channelwise_merge(h, bad, w, w)
    singular = np.zeros_like(h)
    with pytest.raises(MTZError, match=r"^S = H_A \+ H_B of a depthwise channel is singular even with damping: "
                                         r"raise --damping$"):
        channelwise_merge(singular, singular, w, w, damping=0.0)
    # the default damping is the zipper's default, 1e-4 × mean diag
    _, _, lam = channelwise_merge(h, h, w, w)
    np.testing.assert_allclose(lam, 1e-4 * np.trace(2 * h, axis1=1, axis2=2) / 3, rtol=1e-12)


def test_matched_pairs_give_eq10_12_column_by_column():
    """Pairs fixed beforehand (a residual stream's later layers): column i of A with column i of B."""
    rng = np.random.default_rng(8)
    h_a, h_b = random_spd(rng, 5), random_spd(rng, 5)
    w_a = rng.standard_normal((5, 4))
    w_b = w_a + 0.01 * rng.standard_normal((5, 4))   # close pairs: d well below 1
    w_b[:, 3] = w_a[:, 3]
    geom = PairGeometry.from_hessians(h_a, h_b, damping=0.0)
    d, merged = geom.matched(w_a, w_b)
    d_all, explicit = explicit_eq10_12(h_a, h_b, w_a, w_b)
    for i in range(4):
        assert d[i] == pytest.approx(d_all[i, i], rel=1e-8, abs=1e-14)
        np.testing.assert_allclose(merged[:, i], explicit[i, i][0], rtol=1e-8, atol=1e-12)
    assert d[3] == pytest.approx(0.0, abs=1e-12) and 0 < d[:3].max() < 1e-2


def test_random_merge_keeps_each_units_own_vector_about_half_from_each_task():
    rng = np.random.default_rng(9)
    w_a, w_b = rng.standard_normal((3, 2000)), rng.standard_normal((3, 2000))
    merged = random_merge(w_a, w_b, np.random.default_rng(1))
    from_a = np.all(merged == w_a, axis=0)
    assert np.all(from_a | np.all(merged == w_b, axis=0))
    assert 900 < from_a.sum() < 1100
    np.testing.assert_array_equal(merged, random_merge(w_a, w_b, np.random.default_rng(1)))


def test_merge_table_sparse_mtz_is_the_masked_optimum_and_random_ignores_the_mask():
    rng = np.random.default_rng(10)
    h_a, h_b = random_spd(rng, 6), random_spd(rng, 6)
    w_a, w_b = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    mask = rng.random((5, 3)) < 0.5
    geom = PairGeometry.from_hessians(h_a, h_b, damping=0.0)
    merged = METHODS["mtz"].merge(MergeOperands(w_a, w_b, geom, mask, rng), sparse=True)
    s_mat, rhs = h_a + h_b, h_a @ w_a + h_b @ w_b
    for k in range(3):   # the normal equations restricted to the kept rows, solved with an explicit inverse
        keep = np.append(np.flatnonzero(mask[:, k]), 5)
        expected = np.zeros(6)
        expected[keep] = np.linalg.inv(s_mat[np.ix_(keep, keep)]) @ rhs[keep, k]
        np.testing.assert_allclose(merged[:, k], expected, rtol=1e-8, atol=1e-12)
    dense = METHODS["mtz"].merge(MergeOperands(w_a, w_b, geom, None, rng), sparse=False)
    np.testing.assert_allclose(dense, geom.matched(w_a, w_b)[1], rtol=1e-12)
    chosen = METHODS["random"].merge(MergeOperands(w_a, w_b, None, mask, np.random.default_rng(3)), sparse=True)
    np.testing.assert_array_equal(chosen, random_merge(w_a, w_b, np.random.default_rng(3)))


def test_accumulator_sums_in_float64_and_says_what_it_got():
    """The column of input sums is accumulated in float64 (a float32 sum of many 0.1s drifts), a
    wrong input width is named, and an accumulator that saw nothing refuses to give a Hessian."""
    from mtz_mobile.zipper.mtz_math import HessianAccumulator

    acc = HessianAccumulator(2)
    x = np.full((300_001, 2), 0.1, np.float32)
    x[:, 1] = np.float32(1 / 3)
    acc.update(x)
    exact = x.astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(acc.sums, exact, rtol=1e-13)
    assert acc.hessian(1.0)[-1, -1] == 1.0 and acc.count == 300_001
    with pytest.raises(ValueError, match=r"^expected 2 inputs per instance, got 3$"):
        acc.update(np.zeros((4, 3)))
    with pytest.raises(MTZError, match="^no calibration data reached this layer: give each task at least one sample$"):
        HessianAccumulator(3).hessian(0.5)
    one = HessianAccumulator(1)
    one.update(np.array([[2.0]]))
    np.testing.assert_allclose(one.hessian(1.0), [[4.0, 2.0], [2.0, 1.0]])


def test_differences_of_identical_units_are_never_negative():
    """Round-off puts d of identical columns a hair either side of zero: compare clamps it at 0."""
    rng = np.random.default_rng(11)
    h_a, h_b = random_spd(rng, 30), random_spd(rng, 30)
    w = rng.standard_normal((30, 200)) * 50
    d = PairGeometry.from_hessians(h_a, h_b, damping=0.0).compare(w, w).d
    assert np.all(np.diag(d) >= 0.0) and np.all(d >= 0.0)


def test_pair_geometry_checks_its_hessians_and_damps_as_documented():
    rng = np.random.default_rng(12)
    h_a, h_b = random_spd(rng, 4), random_spd(rng, 4)
    geom = PairGeometry.from_hessians(h_a, h_b)   # the default: 1e-4 × mean diag(H_A + H_B)
    assert geom.damping == pytest.approx(1e-4 * np.trace(h_a + h_b) / 4, rel=1e-12)
    np.testing.assert_allclose(geom.h_a - h_a, 0.5 * geom.damping * np.eye(4), atol=1e-15)
    zero = PairGeometry.from_hessians(np.zeros((3, 3)), np.zeros((3, 3)), damping=0.2)   # no data: λ = damping
    assert zero.damping == 0.2
    for bad in ((h_a, random_spd(rng, 3)), (h_a[:, :3], h_b[:, :3])):
        with pytest.raises(ValueError, match=r"^Hessians must be square and alike, got \(\d, \d\) and \(\d, \d\)$"):
            PairGeometry.from_hessians(*bad)
    nan = h_b.copy()
    nan[0, 1] = np.inf
    for pair in ((h_a, nan), (nan, h_a)):
        with pytest.raises(MTZError, match="^the layer inputs contain NaN or inf: check the models' weights and the data$"):
            PairGeometry.from_hessians(*pair)
    with pytest.raises(MTZError, match=r"^S = H_A \+ H_B is not positive definite even with damping: raise --damping$"):
        PairGeometry.from_hessians(-h_a, -h_b, damping=0.0)


def test_a_wide_layer_is_held_once_in_float32_and_still_matches_the_explicit_form(monkeypatch):
    """Over more than FLOAT32_ABOVE inputs (VGG-16's fc6 reads 25,088) the Hessians are summed and
    held in float32, the geometry keeps the arrays it is given (no damped copies) and factorises S
    over one float64 buffer; d and w̃ still follow Eq. 10–12 evaluated explicitly in float64."""
    from mtz_mobile.zipper import mtz_math

    monkeypatch.setattr(mtz_math, "FLOAT32_ABOVE", 8)
    monkeypatch.setattr(mtz_math, "COLUMNS", 5)   # the Gram in column chunks, as beyond 8192 inputs
    monkeypatch.setattr(mtz_math, "ROWS", 50)     # and in row chunks
    rng = np.random.default_rng(21)
    x_a, x_b = rng.standard_normal((400, 12)) + 0.3, rng.standard_normal((500, 12)) - 0.2
    h_a, h_b = layer_hessian(x_a, 0.4, batch=128), layer_hessian(x_b, 0.6, batch=128)
    assert h_a.dtype == h_b.dtype == np.float32
    explicit = [w * np.hstack([x, np.ones((len(x), 1))]).T @ np.hstack([x, np.ones((len(x), 1))]) / len(x)
                for w, x in ((0.4, x_a), (0.6, x_b))]
    for got, want in zip((h_a, h_b), explicit):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    before = h_a.copy(), h_b.copy()
    geom = PairGeometry.from_hessians(h_a, h_b, damping=1e-3)
    assert geom.raw_a is h_a and geom.raw_b is h_b and geom.s_chol.dtype == np.float64
    np.testing.assert_array_equal(h_a, before[0])   # damping is applied in the products, not written
    np.testing.assert_array_equal(h_b, before[1])
    damped = [h + 0.5 * geom.damping * np.eye(13) for h in explicit]
    w_a, w_b = rng.standard_normal((13, 4)), rng.standard_normal((13, 5))
    d_ref, merged_ref = explicit_eq10_12(*damped, w_a, w_b)
    comparison = geom.compare(w_a, w_b)
    np.testing.assert_allclose(comparison.d, d_ref, rtol=1e-4)
    merged = comparison.merged([(1, 3), (2, 0)])
    np.testing.assert_allclose(merged[:, 0], merged_ref[1, 3][0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(merged[:, 1], merged_ref[2, 0][1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(geom.merged_weights(w_a[:, [1]], w_b[:, [3]])[:, 0], merged_ref[1, 3][0], rtol=1e-4,
                               atol=1e-6)


@pytest.mark.parametrize("block", [1, 3, 7, 64])
def test_blocked_cholesky_in_place_equals_lapack(block):
    """The blocked in-place factorisation (wide layers) gives LAPACK's L over the same buffer, and
    refuses a matrix that is not positive definite as LAPACK does."""
    from scipy.linalg import cholesky

    from mtz_mobile.zipper.mtz_math import cholesky_in_place, solve_in_place

    s = random_spd(np.random.default_rng(31), 20)
    buf = s.copy()
    factor = cholesky_in_place(buf, block=block)
    assert np.shares_memory(factor, buf)
    np.testing.assert_allclose(factor, cholesky(s, lower=True), rtol=1e-12, atol=1e-14)
    b = np.random.default_rng(32).standard_normal((20, 3))
    np.testing.assert_allclose(solve_in_place(s.copy(), b), np.linalg.solve(s, b), rtol=1e-10)
    with pytest.raises(np.linalg.LinAlgError):
        cholesky_in_place(-s.copy(), block=block)
