"""The instances'-space math (few calibration rows, many inputs) against Eq. 10–12 with explicit
inverses in D dimensions, and a zip through it against the same zip done in the S-form."""

import numpy as np
import pytest

from mtz_mobile.errors import MTZError
from mtz_mobile.graph.keras_io import read_model
from mtz_mobile.zipper import ZipConfig, low_rank, zip_networks
from mtz_mobile.zipper.compensation import NormalEquations, RefitRows
from mtz_mobile.zipper.config import RetrainSettings
from mtz_mobile.zipper.low_rank import FactoredHessian, LowRankGeometry, RowAccumulator, ridge_refit
from mtz_mobile.zipper.mtz_math import HessianAccumulator


def rows(rng, n, dim, shift):
    x = rng.standard_normal((n, dim)) + shift
    return np.hstack([x, np.ones((n, 1))])


@pytest.mark.parametrize("damping", [1e-4, 0.3])
def test_low_rank_metric_and_merge_are_eq10_12_with_explicit_inverses(damping):
    rng = np.random.default_rng(0)
    dim, n_a, n_b = 40, 6, 9
    u_a, u_b = 0.4 * rows(rng, n_a, dim - 1, 0.3), 0.6 * rows(rng, n_b, dim - 1, -0.2)
    geom = LowRankGeometry.from_factors(FactoredHessian(u_a), FactoredHessian(u_b), damping)
    h_a, h_b = u_a.T @ u_a, u_b.T @ u_b
    assert geom.damping == pytest.approx(damping * np.trace(h_a + h_b) / dim, rel=1e-12)
    # the damped Hessians are invertible: Eq. 10–12 the slow way
    ha, hb = h_a + 0.5 * geom.damping * np.eye(dim), h_b + 0.5 * geom.damping * np.eye(dim)
    ia, ib = np.linalg.inv(ha), np.linalg.inv(hb)
    m = np.linalg.inv(ia + ib)
    w_a, w_b = rng.standard_normal((dim, 5)), rng.standard_normal((dim, 7))
    comparison = geom.compare(w_a, w_b)
    for i in range(5):
        for j in range(7):
            delta = w_a[:, i] - w_b[:, j]
            assert comparison.d[i, j] == pytest.approx(0.5 * delta @ m @ delta, rel=1e-7)
            want = w_a[:, i] - ia @ m @ delta                       # Eq. 11 from A's side
            np.testing.assert_allclose(want, w_b[:, j] + ib @ m @ delta, rtol=1e-7, atol=1e-9)
            np.testing.assert_allclose(comparison.merged([(i, j)])[:, 0], want, rtol=1e-7, atol=1e-9)
    d, merged = geom.matched(w_a, w_b[:, :5])
    np.testing.assert_allclose(d, np.diag(comparison.d[:, :5]), rtol=1e-8)
    np.testing.assert_allclose(merged, comparison.merged([(i, i) for i in range(5)]), rtol=1e-8, atol=1e-10)
    # the S-form over the same Hessians and λ gives the same (the masked merge falls back to it)
    dense = geom.dense()
    np.testing.assert_allclose(dense.compare(w_a, w_b).d, comparison.d, rtol=1e-6)
    mask = rng.random((dim - 1, 5)) < 0.6   # over the weights; the bias is always kept
    np.testing.assert_array_equal(geom.merged_weights_masked(w_a, w_b[:, :5], mask),
                                  dense.merged_weights_masked(w_a, w_b[:, :5], mask))


def test_identical_units_merge_into_themselves_exactly():
    rng = np.random.default_rng(1)
    geom = LowRankGeometry.from_factors(FactoredHessian(rows(rng, 4, 30, 0.0)), FactoredHessian(rows(rng, 5, 30, 1.0)))
    w = rng.standard_normal((31, 6)) * 20
    d, merged = geom.matched(w, w)
    np.testing.assert_array_equal(merged, w)
    np.testing.assert_array_equal(d, 0.0)
    assert np.all(geom.compare(w, w).d >= 0.0)


def test_row_accumulator_is_the_hessian_accumulators_sum_and_refuses_what_it_cannot_use():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((13, 50)).astype(np.float32)
    acc, ref = RowAccumulator(50), HessianAccumulator(50)
    for part in (x[:5], x[5:]):
        acc.update(part)
        ref.update(part)
    np.testing.assert_allclose(acc.hessian(0.7).dense(), ref.hessian(0.7), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match=r"^expected 50 inputs per instance, got 3$"):
        acc.update(np.zeros((2, 3)))
    with pytest.raises(MTZError, match="^no calibration data reached this layer"):
        RowAccumulator(4).hessian(1.0)
    bad = rows(rng, 3, 9, 0.0)
    bad[1, 2] = np.nan
    with pytest.raises(MTZError, match="^the layer inputs contain NaN or inf"):
        LowRankGeometry.from_factors(FactoredHessian(bad), FactoredHessian(rows(rng, 3, 9, 0.0)))


@pytest.mark.parametrize("ridge", [1e-3, 1.0])
def test_refit_from_rows_solves_the_normal_equations(ridge):
    rng = np.random.default_rng(3)
    x, t = rows(rng, 20, 70, 0.5), rng.standard_normal((20, 8))
    current = rng.standard_normal((71, 8))
    columns = np.array([5, 0, 2])
    normal = NormalEquations(x.T @ x / 20, np.asfortranarray(x.T @ t / 20))
    want = normal.solve(columns, current[:, columns].copy(order="F"), ridge)
    got = RefitRows(x, t).solve(columns, current[:, columns], ridge)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(got, ridge_refit(x, t[:, columns], current[:, columns], ridge))


def test_a_zip_with_few_calibration_images_equals_the_same_zip_in_the_s_form(tmp_path, fmnist, train_mlp,
                                                                            monkeypatch):
    """40 images per task against 784 and 160 inputs: both layers' Hessians and the refit of the
    second layer go through the instances' space; forced into the D-dimensional S-form the same
    zip must choose the same pairs and give the same network."""
    paths = [tmp_path / f"{n}.keras" for n in "ab"]
    for seed, path in enumerate(paths):
        train_mlp(fmnist, path, seed + 7, hidden=(160, 24), epochs=1)
    config = ZipConfig(shared=["all"], compensation="next-layer", retrain=RetrainSettings(iterations=0),
                       calibration_samples=40)

    def zipped():
        return zip_networks({n: read_model(p) for n, p in zip("ab", paths)}, {"a": fmnist, "b": fmnist}, config,
                            progress=False)

    used = []
    metric, refit = LowRankGeometry.from_factors.__func__, RefitRows.solve
    monkeypatch.setattr(LowRankGeometry, "from_factors",
                        classmethod(lambda cls, *a, **k: used.append("metric") or metric(cls, *a, **k)))
    monkeypatch.setattr(RefitRows, "solve", lambda self, *a: used.append("refit") or refit(self, *a))
    fast = zipped()
    assert used.count("metric") == 2 and used.count("refit") >= 1   # both layers, and the refit of the second
    used.clear()
    monkeypatch.setattr(low_rank, "ROWS_PER_INPUT", 0.0)
    # the S-form as a zip runs it: with 40 rows against 785 and 161 inputs it takes float64 products
    # itself (mtz_math.product_dtype); in float32 its d would be off by ~1e-3 and this would fail
    slow = zipped()
    assert used == []
    for a, b in zip(fast.plan.layers, slow.plan.layers):
        assert [p[:2] for p in a.pairs] == [p[:2] for p in b.pairs]
        np.testing.assert_allclose([p[2] for p in a.pairs], [p[2] for p in b.pairs], rtol=1e-4)
    x = fmnist.x_test[:500]
    for task in "ab":
        np.testing.assert_allclose(fast.network.predict(task, x), slow.network.predict(task, x), rtol=1e-4,
                                   atol=1e-4)
