"""The Fashion-MNIST loader: idx parsing, search order, and the error when nothing is found."""

import gzip
import struct

import numpy as np
import pytest

from mtz_mobile import data as data_mod
from mtz_mobile.data import COARSE_OF_FINE, load_task_data, read_idx
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
