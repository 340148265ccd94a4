"""The S-form metric and update against the paper's Eq. 10–12 evaluated with explicit inverses."""

import numpy as np
import pytest

from mtz_mobile.zipper.mtz_math import PairGeometry, layer_hessian


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
