"""Guards that fail when the zipper's claims break, each against an independent expectation:
the paper's Eq. 10–12 evaluated the slow way in numpy on the calibration images, the original
Keras models' weights, and what a failed or mismatched run must leave on disk."""

import numpy as np
import pytest

from mtz_mobile.data import load_task_data
from mtz_mobile.errors import MTZError
from mtz_mobile.graph.keras_io import load_keras_model, read_model
from mtz_mobile.zipper import ZipConfig, zip_networks
from mtz_mobile.zipper.config import RetrainSettings
from mtz_mobile.zipper.merge import sparse_mask
from mtz_mobile.zipper.plan import load_zip_dir

NO_RETRAIN = RetrainSettings(iterations=0)


def chains_of(paths, names=("a", "b")):
    return {n: read_model(p) for n, p in zip(names, paths)}


def calibration_images(data, seed: int, n_task: int, samples: int) -> np.ndarray:
    """The images the zipper calibrates task number ``n_task`` on (zipper/calibration.py: the
    first ``samples`` of a permutation seeded ``seed + n_task``, in data order), flattened."""
    order = np.random.default_rng(seed + n_task).permutation(len(data.x_train))
    return data.x_train[np.sort(order[:samples])].reshape(samples, -1).astype(np.float64)


def augmented_second_moment(x: np.ndarray, weight: float) -> np.ndarray:
    """Eq. 7–8 the slow way: weight/n Σ x̃ x̃ᵀ with x̃ = [x, 1], in float64."""
    x1 = np.hstack([x, np.ones((len(x), 1))])
    return weight * (x1.T @ x1) / len(x1)


def first_dense_rows(path) -> np.ndarray:
    """The first hidden Dense layer of a saved model as (inputs + 1, units): column = kernel column + bias."""
    dense = next(layer for layer in load_keras_model(path).layers if type(layer).__name__ == "Dense")
    kernel, bias = dense.get_weights()
    return np.vstack([kernel, bias[None]]).astype(np.float64)


# ----- the merge, at zip level ---------------------------------------------------------------------

def test_stored_shared_block_is_eq10_11_on_the_calibration_images(small_models, fmnist, tmp_path):
    """One layer shared, no compensation, no retraining: every merged unit's stored weights are
    w̃ = S⁻¹(H_A w_A + H_B w_B) with the Hessians of the calibration images and the damping of
    mtz_math (λ = damping · mean diag(H_A + H_B), λ/2 added to each H, so S = H_A + H_B + λI)."""
    cfg = ZipConfig(shared=[30, 0], compensation="none", retrain=NO_RETRAIN, calibration_samples=1500, seed=3,
                    alpha=0.3)
    zip_networks(chains_of(small_models), {"a": fmnist, "b": fmnist}, cfg, tmp_path / "zip", progress=False)
    zipped = load_zip_dir(tmp_path / "zip")
    h = {t: augmented_second_moment(calibration_images(fmnist, cfg.seed, n, cfg.calibration_samples), weight)
         for n, (t, weight) in enumerate((("a", cfg.alpha), ("b", 1 - cfg.alpha)))}
    lam = cfg.damping * np.mean(np.diag(h["a"] + h["b"]))
    for t in h:
        h[t] = h[t] + 0.5 * lam * np.eye(len(h[t]))
    s = h["a"] + h["b"]
    w = {t: first_dense_rows(p) for t, p in zip(("a", "b"), small_models)}

    node = next(n for n in zipped.network.nodes if n.op == "dense")
    g_shared = next(g for g, grp in enumerate(node.groups) if grp.owners == ("a", "b"))
    units = node.groups[g_shared].units
    stored = np.vstack([node.kernels[(0, g_shared, ("a", "b"))], node.biases[(g_shared, ("a", "b"))][None]])
    record = zipped.plan.layers[0]
    assert record.n_shared == stored.shape[1] == 30
    assert sorted(zip(units["a"], units["b"])) == sorted((i, j) for i, j, _ in record.pairs)

    w_a, w_b = w["a"][:, units["a"]], w["b"][:, units["b"]]
    expected = np.linalg.solve(s, h["a"] @ w_a + h["b"] @ w_b)
    # Eq. 12 for the same pairs: d = ½ Δᵀ H_A S⁻¹ H_B Δ
    delta = w_a - w_b
    d = 0.5 * np.einsum("ki,ki->i", h["a"] @ delta, np.linalg.solve(s, h["b"] @ delta))
    pair_d = {(i, j): dist for i, j, dist in record.pairs}
    np.testing.assert_allclose([pair_d[i, j] for i, j in zip(units["a"], units["b"])], d, rtol=1e-4)
    # the zipper sums its Hessians in float32 batches; with cond(S) ≈ 5e6 that leaves ≤ 2e-4 relative here
    # (measured), while keeping A's vector is off by ~1 and λ added to S alone by ~1e-2
    err = np.linalg.norm(stored - expected, axis=0) / np.linalg.norm(expected, axis=0)
    assert err.max() < 2e-3, err.max()
    for t in ("a", "b"):   # the units left unpaired keep their Keras weights exactly
        (g_own,) = [g for g, grp in enumerate(node.groups) if grp.owners == (t,)]
        own = np.vstack([node.kernels[(0, g_own, (t,))], node.biases[(g_own, (t,))][None]])
        np.testing.assert_array_equal(own, w[t][:, node.groups[g_own].units[t]])


# ----- sparse layers: the mask of the partner with more connections ---------------------------------

def test_sparse_mask_keeps_the_partner_with_more_connections():
    """Paper §3.6 on hand-made columns: the merged unit keeps the connection pattern of whichever
    unit has more connections (the joint one on a tie); the bias row never counts; "union" keeps both."""
    w_joint = np.array([[1.0, 0.0, 2.0, 0.0, 5.0],
                        [0.0, 0.0, 3.0, 1.0, 0.0],
                        [4.0, 0.0, 0.0, 0.0, 6.0],
                        [0.0, 7.0, 0.0, 0.0, 0.0],
                        [9.0, 9.0, 0.0, 0.0, 0.0]])   # bias rows: never counted
    w_new = np.array([[0.0, 1.0, 0.0, 0.0, 1.0],
                      [2.0, 1.0, 0.0, 2.0, 0.0],
                      [0.0, 1.0, 8.0, 0.0, 0.0],
                      [0.0, 0.0, 8.0, 3.0, 1.0],
                      [0.0, 0.0, 9.0, 9.0, 9.0]])
    # column by column: 2 connections vs 1 → joint; 1 vs 3 → new; 2 vs 2 → joint (a tie; counting the
    # biases would give new 3); 1 vs 2 → new; 2 vs 2 → joint (again new if biases counted)
    expected = np.array([[1, 1, 1, 0, 1],
                         [0, 1, 1, 1, 0],
                         [1, 1, 0, 0, 1],
                         [0, 0, 0, 1, 0]], float)
    np.testing.assert_array_equal(sparse_mask(w_joint, w_new, "larger"), expected)
    union = ((w_joint[:-1] != 0) | (w_new[:-1] != 0)).astype(float)
    np.testing.assert_array_equal(sparse_mask(w_joint, w_new, "union"), union)


# ----- what a failed or mismatched zip leaves on disk -------------------------------------------------

def overflowing_copy(path, out):
    """The model at ``path`` with a first-layer bias of 1e30: finite, so every check on the inputs
    passes and its first layer zips, but its activations overflow layer 2's float32 Hessian."""
    model = load_keras_model(path)
    dense = next(layer for layer in model.layers if type(layer).__name__ == "Dense")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel, np.full_like(bias, 1e30)])
    model.save(out)
    return out


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_an_error_mid_zip_leaves_no_output_no_partial_and_no_lock(small_models, fmnist, tmp_path, monkeypatch):
    from mtz_mobile.zipper import run

    monkeypatch.setattr(run, "CHECKPOINT_SECONDS", 0.0)   # a checkpoint after every layer, so one exists
    # both tasks overflow, so that whatever the first layer's merge makes of the two biases, layer 2 fails
    bad = [overflowing_copy(path, tmp_path / f"{t}_overflow.keras") for t, path in zip("ab", small_models)]
    out = tmp_path / "zip"
    partial, lock = tmp_path / "zip.partial", tmp_path / "zip.lock"
    seen = []

    def after_step(step, _net):   # observes the partial directory; changes nothing
        seen.append((step, (partial / "checkpoint.json").exists()))

    cfg = ZipConfig(shared=["all"], compensation="none", retrain=NO_RETRAIN, calibration_samples=500)
    with pytest.raises(MTZError) as caught:
        zip_networks(chains_of(bad), {"a": fmnist, "b": fmnist}, cfg, out, progress=False,
                     on_layer_done=after_step)
    assert seen == [(0, True)]   # the first layer was zipped and checkpointed: the error came mid-zip
    message = str(caught.value)
    assert "\n" not in message and "NaN or inf" in message
    assert not out.exists() and not partial.exists() and not lock.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_overflow.keras", "b_overflow.keras"]


def interrupted_zip(models, data, cfg, out):
    """Stop a zip after its first step, as Ctrl-C would: the partial directory keeps a checkpoint."""
    def stop_after_first(step, _net):
        if step == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zip_networks(models, data, cfg, out, progress=False, on_layer_done=stop_after_first)
    assert (out.parent / (out.name + ".partial") / "checkpoint.json").exists()


def test_resume_with_other_settings_or_models_is_refused(small_models, permuted_pair, fmnist, tmp_path):
    data = {"a": fmnist, "b": fmnist}
    cfg = ZipConfig(shared=["all"], retrain=NO_RETRAIN, calibration_samples=500)
    out = tmp_path / "zip"
    interrupted_zip(chains_of(small_models), data, cfg, out)
    partial = tmp_path / "zip.partial"
    refusals = [
        (chains_of(small_models), data, ZipConfig(shared=["all"], retrain=NO_RETRAIN, calibration_samples=500, seed=1),
         r"other settings \(seed\)"),
        (chains_of(small_models), data, ZipConfig(shared=[0.5], retrain=NO_RETRAIN, calibration_samples=500),
         r"other settings \(shared\)"),
        (chains_of([small_models[0], permuted_pair[0]]), data, cfg, "another model of task b"),
        (chains_of(small_models, names=("x", "y")), {"x": fmnist, "y": fmnist}, cfg, r"other tasks \(a, b\)"),
        (chains_of(small_models), {"a": fmnist, "b": load_task_data("fashion-mnist-coarse").head(4000, 2000)}, cfg,
         "other data for task b"),
    ]
    for models, datas, config, difference in refusals:
        with pytest.raises(MTZError, match=difference) as caught:
            zip_networks(models, datas, config, out, resume=True, progress=False)
        assert "\n" not in str(caught.value) and "resume" in str(caught.value)
        assert not out.exists() and (partial / "checkpoint.json").exists()   # the partial zip stays resumable
    resumed = zip_networks(chains_of(small_models), data, cfg, out, resume=True, progress=False)
    assert out.exists() and not partial.exists() and len(resumed.plan.layers) == 2


def test_stored_sparse_block_is_the_masked_optimum(small_models, fmnist, tmp_path):
    """Pruned first layers: each merged unit keeps the connections of the partner with more of them
    and, on those rows (and the bias), w̃_m = S_mm⁻¹ (H_A w_A + H_B w_B)_m (§3.6) — the normal
    equations restricted to the kept rows, solved here with numpy."""
    pruned = []
    for n, path in enumerate(small_models):
        model = load_keras_model(path)
        dense = next(layer for layer in model.layers if type(layer).__name__ == "Dense")
        kernel, bias = dense.get_weights()
        cut = np.quantile(np.abs(kernel), 0.7 - 0.1 * n)   # a keeps 30 %, b 40 %
        dense.set_weights([np.where(np.abs(kernel) >= cut, kernel, 0.0), bias])
        pruned.append(tmp_path / f"pruned_{n}.keras")
        model.save(pruned[-1])
    cfg = ZipConfig(shared=[20, 0], compensation="none", retrain=NO_RETRAIN, calibration_samples=1500, seed=4,
                    sparse="on")
    zip_networks(chains_of(pruned), {"a": fmnist, "b": fmnist}, cfg, tmp_path / "zip", progress=False)
    node = next(n for n in load_zip_dir(tmp_path / "zip").network.nodes if n.op == "dense")
    g = next(g for g, grp in enumerate(node.groups) if grp.owners == ("a", "b"))
    units = node.groups[g].units
    stored = np.vstack([node.kernels[(0, g, ("a", "b"))], node.biases[(g, ("a", "b"))][None]])
    h = {t: augmented_second_moment(calibration_images(fmnist, cfg.seed, n, cfg.calibration_samples), weight)
         for n, (t, weight) in enumerate((("a", cfg.alpha), ("b", 1 - cfg.alpha)))}
    lam = cfg.damping * np.mean(np.diag(h["a"] + h["b"]))
    h = {t: m + 0.5 * lam * np.eye(len(m)) for t, m in h.items()}
    s = h["a"] + h["b"]
    w_a, w_b = first_dense_rows(pruned[0])[:, units["a"]], first_dense_rows(pruned[1])[:, units["b"]]
    rhs = h["a"] @ w_a + h["b"] @ w_b
    for k in range(stored.shape[1]):
        m_a, m_b = w_a[:-1, k] != 0, w_b[:-1, k] != 0
        keep = np.append(np.flatnonzero(m_a if m_a.sum() >= m_b.sum() else m_b), len(s) - 1)
        expected = np.zeros(len(s))
        expected[keep] = np.linalg.solve(s[np.ix_(keep, keep)], rhs[keep, k])
        assert np.array_equal(stored[:, k] != 0, expected != 0), k
        assert np.linalg.norm(stored[:, k] - expected) <= 2e-3 * np.linalg.norm(expected), k
