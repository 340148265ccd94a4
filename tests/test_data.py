"""The data specs: the Fashion-MNIST loader (idx parsing, search order, the error when nothing is
found), the @HxWxC modifier and its pad/resize rules, npz and image-folder data, and the one-line
errors for data that cannot be used."""

import gzip
import struct

import numpy as np
import pytest

from mtz_mobile import data as data_mod
from mtz_mobile.data import COARSE_OF_FINE, DataSpec, fit_images, load_task_data, parse_spec, read_idx
from mtz_mobile.errors import MTZError


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_round_trip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x-idx3-ubyte.gz", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "x-idx3-ubyte.gz"), arr)


def test_truncated_idx_is_refused(tmp_path):
    path = tmp_path / "t.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">BBBBi", 0, 0, 8, 1, 100) + b"\0" * 10)
    with pytest.raises(MTZError, match="truncated"):
        read_idx(path)


def test_debian_fashion_mnist_is_the_real_thing():
    d = load_task_data("fashion-mnist")
    assert d.x_train.shape == (60000, 28, 28) and d.x_test.shape == (10000, 28, 28)
    assert d.x_train.dtype == np.float32 and 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert np.bincount(d.y_test).tolist() == [1000] * 10
    coarse = load_task_data("fashion-mnist-coarse")
    np.testing.assert_array_equal(coarse.y_test, COARSE_OF_FINE[d.y_test])


def test_data_dir_takes_precedence(tmp_path):
    for name, arr in (("train-images-idx3-ubyte.gz", np.full((3, 28, 28), 255)),
                      ("train-labels-idx1-ubyte.gz", np.array([1, 2, 3])),
                      ("t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28))),
                      ("t10k-labels-idx1-ubyte.gz", np.array([4, 5]))):
        write_idx(tmp_path / name, arr)
    d = load_task_data("fashion-mnist", data_dir=tmp_path)
    assert d.x_train.shape == (3, 28, 28) and d.x_train.max() == 1.0
    assert d.y_test.tolist() == [4, 5]


def test_nothing_found_names_all_three_places(tmp_path, monkeypatch):
    # no Debian package here, an empty Keras cache, and a proxy that refuses: the download really fails
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(MTZError) as info:
        load_task_data("fashion-mnist", data_dir=tmp_path / "empty")
    message = str(info.value)
    assert "--data-dir" in message and "no-debian" in message and "download" in message
    assert "\n" not in message


def test_unknown_spec():
    with pytest.raises(MTZError, match="unknown data spec"):
        load_task_data("cifar-1000")


# --- the @HxWxC modifier ------------------------------------------------------------------------

def test_pad_centres_the_unchanged_image_and_repeats_grey():
    x = np.random.default_rng(0).random((2, 28, 28), dtype=np.float32) + 0.5  # no zeros of its own
    out = fit_images(x, (32, 32, 3), "pad")
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.float32
    for c in range(3):
        np.testing.assert_array_equal(out[:, 2:30, 2:30, c], x)
    inside = np.zeros((32, 32), bool)
    inside[2:30, 2:30] = True
    assert np.all(out[:, ~inside, :] == 0)


def test_pad_puts_the_odd_pixel_bottom_right_and_keeps_grey_grey():
    x = np.ones((1, 3, 3, 1), np.float32)
    out = fit_images(x, (4, 6, 1))
    assert out.shape == (1, 4, 6, 1)
    assert out[0, :, :, 0].tolist() == [[0, 1, 1, 1, 0, 0]] * 3 + [[0] * 6]


def test_resize_gives_the_target_shape_and_keeps_a_flat_image_flat():
    x = np.full((3, 28, 28), 0.25, np.float32)
    out = fit_images(x, (40, 36, 3), "resize")
    assert out.shape == (3, 40, 36, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.25, atol=1e-6)
    assert fit_images(np.ones((1, 64, 64, 3), np.float32), (16, 16, 3), "resize").shape == (1, 16, 16, 3)


@pytest.mark.parametrize("x, target, rule, match", [
    (np.zeros((1, 28, 28)), (24, 32, 3), "pad", "cannot pad 28x28 images to 24x32.*resize"),
    (np.zeros((1, 28, 28)), (32, 32, 2), "pad", "channels"),
    (np.zeros((1, 28, 28, 2)), (32, 32, 3), "pad", "2-channel"),
    (np.zeros((1, 28, 28, 3)), (32, 32, 1), "pad", "colour images to 1 channel"),
    (np.zeros((1, 784)), (32, 32, 3), "pad", "only images"),
    (np.zeros((1, 28, 28)), (32, 32, 3), "stretch", "unknown fit rule"),
])
def test_shapes_that_cannot_be_fitted_are_refused_on_one_line(x, target, rule, match):
    with pytest.raises(MTZError, match=match) as info:
        fit_images(x, target, rule)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("spec, parsed", [
    ("fashion-mnist", DataSpec("fashion-mnist")),
    ("fashion-mnist-coarse@32x32x3", DataSpec("fashion-mnist-coarse", None, (32, 32, 3))),
    ("fashion-mnist@64x48x1:resize", DataSpec("fashion-mnist", None, (64, 48, 1), "resize")),
    ("npz:a@32x32x3.npz", DataSpec("npz", "a@32x32x3.npz")),          # after the kind's colon: all path
    ("npz:resize:b.npz", DataSpec("npz", "resize:b.npz")),
    ("npz@32x32x3:padding/b.npz", DataSpec("npz", "padding/b.npz", (32, 32, 3))),
    ("npz@32x32x3:pad:resize:b.npz", DataSpec("npz", "resize:b.npz", (32, 32, 3))),
    ("dir@96x96x3:resize:/data/my images", DataSpec("dir", "/data/my images", (96, 96, 3), "resize")),
])
def test_spec_grammar_and_its_round_trip(spec, parsed):
    assert parse_spec(spec) == parsed
    assert parse_spec(str(parsed)) == parsed


@pytest.mark.parametrize("spec, match", [
    ("fashion-mnist@32x32", "unknown data spec"),
    ("fashion-mnist@32x32x2", "channels 1 .grey. or 3"),
    ("fashion-mnist:extra", "takes no path"),
    ("npz@32x32x3:resize", "names no file"),
    ("dir:", "names no file"),
])
def test_malformed_specs(spec, match):
    with pytest.raises(MTZError, match=match):
        parse_spec(spec)


@pytest.fixture
def tiny_fashion(tmp_path):
    rng = np.random.default_rng(1)
    for name, arr in (("train-images-idx3-ubyte.gz", rng.integers(0, 256, (6, 28, 28))),
                      ("train-labels-idx1-ubyte.gz", np.arange(6)),
                      ("t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (4, 28, 28))),
                      ("t10k-labels-idx1-ubyte.gz", np.array([9, 8, 7, 6]))):
        write_idx(tmp_path / name, arr)
    return tmp_path


@pytest.mark.parametrize("spec", ["fashion-mnist@32x32x3", "fashion-mnist-coarse@32x32x3:resize"])
def test_fitted_fashion_specs_reload_the_same_arrays(tiny_fashion, spec):
    first, again = load_task_data(spec, tiny_fashion), load_task_data(spec, tiny_fashion)
    plain = load_task_data(spec.split("@")[0], tiny_fashion)
    assert first.spec == spec and first.x_train.shape == (6, 32, 32, 3) and first.x_test.shape == (4, 32, 32, 3)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    np.testing.assert_array_equal(first.y_train, plain.y_train)
    if spec.endswith("x3"):
        np.testing.assert_array_equal(first.x_train[:, 2:30, 2:30, 1], plain.x_train)


# --- npz ----------------------------------------------------------------------------------------

def save_npz(path, n_train=8, n_test=4, **overrides):
    rng = np.random.default_rng(2)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8), "y_train": np.arange(n_train) % 3,
              "x_test": rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8), "y_test": np.arange(n_test) % 3}
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_npz_spec_with_a_modifier_round_trips(tmp_path):
    spec = f"npz@30x30x3:resize:{save_npz(tmp_path / 'd@1x1x1.npz')}"
    first, again = load_task_data(spec), load_task_data(spec)
    assert first.x_train.shape == (8, 30, 30, 3) and first.labels == ["0", "1", "2"]
    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.x_test, again.x_test)
    assert 0.0 <= first.x_train.min() and first.x_train.max() <= 1.0


@pytest.mark.parametrize("overrides, match", [
    ({"y_train": np.array([0, 1, 2, 0, 1, 2, 0])}, "x_train has 8 samples but y_train has shape"),
    ({"y_test": np.array([0, 1, 2, 5]), "labels": np.array(["a", "b", "c"])}, "labels run from 0 to 5 but there are 3"),
    ({"y_train": np.array([0, 1, 2, 0, 1, 2, 0, -1])}, "labels run from -1"),
    ({"y_train": np.full(8, 0.5)}, "non-integer labels"),
    ({"x_test": np.zeros((4, 32, 32), np.uint8)}, "give all splits the same shape"),
    ({"x_train": np.zeros((0, 28, 28), np.uint8), "y_train": np.zeros(0, np.int64)}, "no samples in x_train"),
])
def test_bad_npz_data_is_refused_on_one_line(tmp_path, overrides, match):
    path = save_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(MTZError, match=match) as info:
        load_task_data(f"npz:{path}")
    assert "\n" not in str(info.value) and str(path) in str(info.value)


# --- dir: ---------------------------------------------------------------------------------------

def write_images(folder, n, value, size=(20, 24), mode="L"):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new(mode, size, value + i).save(folder / f"img{i}.png")


def test_dir_with_train_and_test_folders(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        write_images(tmp_path / split / "cat", n, 10)
        write_images(tmp_path / split / "dog", n, 100)
    d = load_task_data(f"dir:{tmp_path}")
    assert d.labels == ["cat", "dog"] and d.num_classes == 2
    assert d.x_train.shape == (6, 24, 20, 1) and d.x_test.shape == (4, 24, 20, 1) and d.x_train.dtype == np.float32
    assert d.y_train.tolist() == [0, 0, 0, 1, 1, 1] and d.y_test.tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(d.x_train[:, 0, 0, 0], np.array([10, 11, 12, 100, 101, 102]) / 255.0, atol=1e-6)
    assert d.preprocessing["scale"] == pytest.approx(1 / 255)


def test_dir_single_folder_is_split_per_class_by_a_fixed_seed(tmp_path):
    write_images(tmp_path / "a", 10, 0, mode="RGB")
    write_images(tmp_path / "b", 5, 50, mode="RGB")
    spec = f"dir@32x32x3:resize:{tmp_path}"
    d, again = load_task_data(spec), load_task_data(spec)
    assert d.labels == ["a", "b"] and d.x_train.shape[1:] == (32, 32, 3)
    assert np.bincount(d.y_test).tolist() == [2, 1] and np.bincount(d.y_train).tolist() == [8, 4]
    np.testing.assert_array_equal(d.x_test, again.x_test)
    np.testing.assert_array_equal(d.y_train, again.y_train)


def test_dir_pads_grey_images_to_colour(tmp_path):
    write_images(tmp_path / "train" / "x", 2, 200)
    write_images(tmp_path / "test" / "x", 1, 200)
    d = load_task_data(f"dir@32x32x3:{tmp_path}")
    assert d.x_train.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(d.x_train[0, 4:28, 6:26, :], 200 / 255.0, atol=1e-6)
    assert d.x_train[0, 0, 0, 0] == 0.0


@pytest.mark.parametrize("layout, match", [
    ({}, "has no class folders"),
    ({"a": 2, "b": 0}, "class folder .*b has no images"),
    ({"train/a": 1, "train/b": 1, "test/a": 1}, "different class folders"),
])
def test_bad_image_folders_are_refused_on_one_line(tmp_path, layout, match):
    root = tmp_path / "images"
    root.mkdir()
    for folder, n in layout.items():
        (root / folder).mkdir(parents=True)
        write_images(root / folder, n, 0)
    with pytest.raises(MTZError, match=match) as info:
        load_task_data(f"dir:{root}")
    assert "\n" not in str(info.value)


def test_missing_image_folder(tmp_path):
    with pytest.raises(MTZError, match="does not exist"):
        load_task_data(f"dir:{tmp_path / 'nowhere'}")
