"""What the zip, convert and deploy commands ask of the data module besides loading: the shape a
spec will load (read before loading), data fitted to another model's input with the spec that
reloads exactly those arrays, one spec per model, a spec named twice loaded once, and the stored
values behind preprocessed images. Small npz files and image folders written here."""

from __future__ import annotations

import numpy as np
import pytest

from mtz_mobile.data import (TaskData, adapt_task_data, error_rate, load_specs, load_task_data, source_shape,
                             specs_for)
from mtz_mobile.errors import MTZError
from test_data import save_npz, write_images


def test_the_shape_a_spec_loads_is_known_before_loading(tmp_path):
    grey = save_npz(tmp_path / "grey.npz")
    colour = save_npz(tmp_path / "colour.npz", x_train=np.zeros((8, 9, 7, 3), np.uint8),
                      x_test=np.zeros((4, 9, 7, 3), np.uint8))
    write_images(tmp_path / "imgs" / "cat", 2, 10, size=(13, 11), mode="RGB")
    for spec in (f"npz:{grey}", f"npz:{colour}", f"dir:{tmp_path / 'imgs'}", f"npz@12x10x3:resize:{grey}"):
        assert source_shape(spec) == load_task_data(spec).x_train.shape[1:] + (
            (1,) if load_task_data(spec).x_train.ndim == 3 else ()), spec
    assert source_shape(f"npz:{grey}") == (28, 28, 1) and source_shape(f"npz:{colour}") == (9, 7, 3)
    assert source_shape(f"dir:{tmp_path / 'imgs'}") == (11, 13, 3)
    assert source_shape("fashion-mnist") == (28, 28, 1) and source_shape("fashion-mnist@32x32x3") == (32, 32, 3)



def test_a_file_that_is_not_an_npz_archive_is_refused_in_one_line(tmp_path):
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    np.save(tmp_path / "one.npy", np.zeros((2, 28, 28)))
    for name, says in (("broken.npz", "is not an .npz archive (ValueError): save the arrays with numpy.savez("),
                       ("one.npy", "holds one array, not an .npz archive: save x_train")):
        for load in (load_task_data, source_shape):   # the shape is read first: the same line, no traceback
            with pytest.raises(MTZError) as err:
                load(f"npz:{tmp_path / name}")
            assert str(err.value).startswith(f"{tmp_path / name} {says}") and "\n" not in str(err.value)


def test_adapted_data_is_what_its_spec_loads_again(tmp_path):
    spec = f"npz:{save_npz(tmp_path / 'd.npz')}"
    data = load_task_data(spec)
    for shape, rule in (((32, 32, 3), "pad"), ((20, 20, 1), "resize")):
        adapted = adapt_task_data(data, shape, rule)
        again = load_task_data(adapted.spec)
        assert adapted.spec != spec and adapted.x_train.shape == (8, *shape)
        np.testing.assert_array_equal(adapted.x_train, again.x_train)
        np.testing.assert_array_equal(adapted.x_test, again.x_test)
        np.testing.assert_array_equal(adapted.y_train, data.y_train)
    fitted = load_task_data(f"npz@30x30x1:{tmp_path / 'd.npz'}")
    with pytest.raises(MTZError) as err:
        adapt_task_data(fitted, (32, 32, 3), "resize")
    assert str(err.value).startswith(f"data 'npz@30x30x1:{tmp_path / 'd.npz'}' is already fitted to 30x30x1: give ")
    assert str(err.value).endswith(" instead") and "32x32x3" in str(err.value) and "resize" in str(err.value)


def test_one_spec_for_every_model_or_one_per_model():
    assert specs_for("fashion-mnist", 3) == ["fashion-mnist"] * 3
    assert specs_for(["x"], 2) == ["x", "x"]
    assert specs_for(("a", "b"), 2) == ["a", "b"]
    with pytest.raises(MTZError, match="^2 data specs for 3 models: give one, or one per model$"):
        specs_for(["a", "b"], 3)


def test_a_spec_named_twice_is_loaded_once(tmp_path):
    a, b = f"npz:{save_npz(tmp_path / 'a.npz')}", f"npz:{save_npz(tmp_path / 'b.npz', n_train=6)}"
    loaded = load_specs([a, b, a])
    assert [d.spec for d in loaded] == [a, b, a]
    assert loaded[0] is loaded[2] and loaded[0] is not loaded[1]
    assert (len(loaded[0].y_train), len(loaded[1].y_train)) == (8, 6)


def test_stored_values_undo_the_preprocessing():
    raw = np.random.default_rng(0).integers(0, 256, (4, 5, 5)).astype(np.float64)
    for scale, mean in ((1 / 255.0, 0.0), (1 / 127.5, 127.5), (1.0, 0.0)):
        data = TaskData("npz:x", raw, np.zeros(4), raw, np.zeros(4), ["0"], {"scale": scale, "mean": mean})
        loaded = ((raw - mean) * scale).astype(np.float32)   # what the loader gives the model
        np.testing.assert_allclose(data.stored_values(loaded), raw, atol=1e-4)
        assert data.stored_values(loaded).dtype == np.float64
    bare = TaskData("npz:x", raw, np.zeros(4), raw, np.zeros(4), ["0"], {})
    np.testing.assert_array_equal(bare.stored_values(raw), raw)


def test_error_rate_counts_the_samples_whose_top_score_is_not_the_label():
    rng = np.random.default_rng(1)
    scores, labels = rng.normal(size=(50, 4)), rng.integers(0, 4, 50)
    wrong = sum(1 for s, y in zip(scores, labels) if max(range(4), key=lambda c: s[c]) != y)
    assert error_rate(scores, labels) == wrong / 50 and 0 < wrong < 50
    assert isinstance(error_rate(scores, labels), float)


def test_the_old_test_set_hold_out_splits_the_test_images_in_two(tmp_path):
    """mtz-mobile 0.1's adaptive search held test images out: zips it made are evaluated on the rest."""
    data = load_task_data(f"npz:{save_npz(tmp_path / 'd.npz', n_test=10)}")
    rest, (x_val, y_val) = data.split_test_validation(4, seed=3)
    assert (len(x_val), len(y_val), len(rest.x_test), len(rest.y_test)) == (4, 4, 6, 6)
    rows = {x.tobytes(): y for x, y in zip(data.x_test, data.y_test)}
    # every image keeps its own label, and each test image is on exactly one side
    assert all(rows[x.tobytes()] == y for x, y in zip([*x_val, *rest.x_test], [*y_val, *rest.y_test]))
    assert sorted(x.tobytes() for x in [*x_val, *rest.x_test]) == sorted(rows)
    again = data.split_test_validation(4, seed=3)[1][0]
    np.testing.assert_array_equal(again, x_val)
    np.testing.assert_array_equal(rest.x_train, data.x_train)
    for n in (0, 10):
        with pytest.raises(MTZError, match=f"^cannot hold {n} of 10 test images out: choose fewer$"):
            data.split_test_validation(n)


def test_a_class_of_one_image_stays_in_training():
    """A single folder is split per class; a class with one image cannot be in both sets: it trains."""
    from mtz_mobile.image_folder import split_per_class

    y = np.array([0] * 10 + [1] + [2] * 2)
    train, test = split_per_class(y, 0.2, seed=0)
    assert 10 in train and 10 not in test
    assert sorted([*train, *test]) == list(range(13)) and (y[test] == 0).sum() == 2 and (y[test] == 2).sum() == 1
