"""Validation comes from the training split (or the data's own validation set), never from the test
set: TaskData.holdout, the npz and folder forms of an explicit validation set, and an adaptive zip
that completes on data whose test images cannot be read at all."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mtz_mobile.data import load_task_data
from mtz_mobile.errors import MTZError
from mtz_mobile.graph.keras_io import load_keras_model, read_model
from mtz_mobile.zipper import ZipConfig, zip_networks
from mtz_mobile.zipper.config import RetrainSettings
from mtz_mobile.zipper.increase_bound import images_to_certify
from test_data import save_npz, write_images


class Unreadable(np.ndarray):
    """Test images that fail loudly the moment anything reads, slices or computes with them."""

    def __array_ufunc__(self, *args, **kwargs):
        raise AssertionError("the test set was read")

    def __getitem__(self, key):
        raise AssertionError("the test set was read")

    def __array__(self, *args, **kwargs):
        raise AssertionError("the test set was read")


def test_holdout_is_stratified_seeded_and_disjoint_from_training(fmnist):
    held = fmnist.holdout(0.1, seed=3)
    assert len(held.y_val) == 400 and len(held.y_train) == 3600
    expected = np.round(0.1 * np.bincount(fmnist.y_train)).astype(int)
    assert np.bincount(held.y_val, minlength=10).tolist() == expected.tolist()
    # every held-out image is a training image, none is left in training, none is a test image
    train_rows = {x.tobytes(): i for i, x in enumerate(fmnist.x_train)}
    val_rows = [train_rows[x.tobytes()] for x in held.x_val]
    kept_rows = [train_rows[x.tobytes()] for x in held.x_train]
    assert not set(val_rows) & set(kept_rows) and len(set(val_rows) | set(kept_rows)) == 4000
    test_rows = {x.tobytes() for x in fmnist.x_test}
    assert not any(x.tobytes() in test_rows for x in held.x_val)
    np.testing.assert_array_equal(held.x_test, fmnist.x_test)
    again, other = fmnist.holdout(0.1, seed=3), fmnist.holdout(0.1, seed=4)
    np.testing.assert_array_equal(again.x_val, held.x_val)
    assert not np.array_equal(other.y_val, held.y_val) or not np.array_equal(other.x_val, held.x_val)
    assert held.holdout(0.5, seed=9) is held     # a validation set once chosen stays


def test_tasks_labelling_the_same_images_hold_out_the_same_images():
    """A zip that keeps the fine task's trunk must not validate the coarse task on images the fine
    model trained on: the two hold-outs are one set of images (found when per-task hold-outs made a
    fine-weighted zip look 0.8 pp better on the coarse hold-out than on the test set)."""
    from mtz_mobile.data import COARSE_OF_FINE

    for suffix in ("", "@32x32x3"):
        fine = load_task_data("fashion-mnist" + suffix).head(3000, 10).holdout(0.1)
        coarse = load_task_data("fashion-mnist-coarse" + suffix).head(3000, 10).holdout(0.1)
        assert len(coarse.y_val) == len(fine.y_val) == 300
        np.testing.assert_array_equal(coarse.x_val, fine.x_val)
        np.testing.assert_array_equal(coarse.y_val, COARSE_OF_FINE[fine.y_val])
        np.testing.assert_array_equal(coarse.y_train, COARSE_OF_FINE[fine.y_train])
    # still stratified: every coarse group keeps its share of the hold-out
    whole = load_task_data("fashion-mnist-coarse").head(3000, 10)
    for group in range(5):
        assert abs(np.mean(coarse.y_val == group) - np.mean(whole.y_train == group)) < 0.01


def test_npz_and_folder_may_bring_their_own_validation_set(tmp_path):
    rng = np.random.default_rng(0)
    x_val = rng.integers(0, 256, (5, 28, 28)).astype(np.uint8)
    d = load_task_data(f"npz:{save_npz(tmp_path / 'v.npz', x_val=x_val, y_val=np.array([0, 1, 2, 0, 1]))}")
    held = d.holdout(0.5)
    assert len(held.y_train) == 8 and held.y_val.tolist() == [0, 1, 2, 0, 1]
    np.testing.assert_allclose(held.x_val, x_val / 255.0, atol=1e-7)
    assert "x_val" in held.validation_source
    for split, n in (("train", 3), ("test", 2), ("validation", 2)):
        write_images(tmp_path / "imgs" / split / "cat", n, 10)
        write_images(tmp_path / "imgs" / split / "dog", n, 100)
    folder = load_task_data(f"dir:{tmp_path / 'imgs'}").holdout()
    assert len(folder.y_train) == 6 and folder.y_val.tolist() == [0, 0, 1, 1]
    assert folder.validation_source == "validation/ folder"


@pytest.mark.parametrize("overrides, match", [
    ({"x_val": np.zeros((2, 28, 28), np.uint8)}, "only one of x_val and y_val"),
    ({"x_val": np.zeros((2, 28, 28), np.uint8), "y_val": np.array([0, 7]),
      "labels": np.array(["a", "b", "c"])}, "labels run from 0 to 7"),
    ({"x_val": np.zeros((2, 9, 9), np.uint8), "y_val": np.array([0, 1])}, "same shape"),
])
def test_bad_validation_arrays_are_refused_on_one_line(tmp_path, overrides, match):
    with pytest.raises(MTZError, match=match):
        load_task_data(f"npz:{save_npz(tmp_path / 'bad.npz', **overrides)}")


def test_bad_split_is_refused(fmnist):
    with pytest.raises(MTZError, match="outside"):
        fmnist.holdout(1.0)
    with pytest.raises(MTZError, match="too few"):
        fmnist.head(1).holdout(0.1)


def _unreadable_test_set(data):
    poisoned = np.zeros_like(data.x_test).view(Unreadable)
    return replace(data, x_test=poisoned, y_test=np.zeros_like(data.y_test).view(Unreadable))


def test_adaptive_zip_never_reads_the_test_set(small_models, fmnist):
    """The search, its Hessians and retraining run with test images that raise when touched; the
    plan's validation figures are the originals' on the training split's hold-out (recomputed here
    with Keras)."""
    data = _unreadable_test_set(fmnist)
    models = {t: read_model(p) for t, p in zip("ab", small_models)}
    config = ZipConfig(max_error_increase=3.0, validation_split=0.2, calibration_samples=500,
                       retrain=RetrainSettings(iterations=3))
    result = zip_networks(models, {"a": data, "b": data}, config, progress=False)
    held = fmnist.holdout(0.2, seed=0)
    for t, path in zip("ab", small_models):
        record = result.plan.validation[t]
        keras_error = np.mean(np.argmax(load_keras_model(path).predict(held.x_val, verbose=0), 1) != held.y_val)
        assert record["images"] == len(held.y_val) and "training samples" in record["source"]
        assert record["original_error"] == pytest.approx(keras_error, abs=1 / len(held.y_val) + 1e-9)
        assert record["upper"] >= record["point"]
    assert all(layer.search for layer in result.plan.layers)


def test_a_budget_the_validation_set_cannot_certify_is_refused_with_the_count_needed(small_models, fmnist):
    models = {t: read_model(p) for t, p in zip("ab", small_models)}
    config = ZipConfig(max_error_increase=0.5, validation_split=0.05, calibration_samples=200,
                       retrain=RetrainSettings(iterations=0))
    need = images_to_certify(0.005, 0.95)
    with pytest.raises(MTZError, match=rf"20\d validation images .* at least {need} images per task"):
        zip_networks(models, {"a": fmnist, "b": fmnist}, config, progress=False)
