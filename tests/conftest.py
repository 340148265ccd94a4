"""Shared fixtures: real Fashion-MNIST slices, small real Keras models trained on them, and one small deployed model."""

from __future__ import annotations

import hashlib
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from mtz_mobile.data import TaskData, load_task_data


@pytest.fixture(scope="session")
def fmnist() -> TaskData:
    """4,000 training and 2,000 test images: enough to train and zip small models in seconds."""
    return load_task_data("fashion-mnist").head(4000, 2000)


def train_small_mlp(data: TaskData, path, seed: int, hidden=(48, 24), epochs: int = 2, permute: bool = True):
    import keras

    # tools/checks/mutation.py runs the tests once per mutant and mutates no training code: it sets a cache
    cache = os.environ.get("MTZ_TEST_MODEL_CACHE")
    digest = hashlib.sha256(data.y_train.tobytes() + data.x_train[:50].tobytes()).hexdigest()[:12]
    key = f"mlp-{digest}-{data.x_train.shape}-{seed}-{hidden}-{epochs}-{permute}.keras".replace(" ", "")
    if cache and os.path.exists(os.path.join(cache, key)):
        shutil.copyfile(os.path.join(cache, key), path)
        return keras.saving.load_model(path, safe_mode=True)

    from mtz_mobile.reference import build_mlp, permute_hidden_units

    keras.utils.set_random_seed(seed)
    model = build_mlp(data.x_train.shape[1:], hidden, data.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(data.x_train, data.y_train, batch_size=64, epochs=epochs, verbose=0)
    if permute:
        permute_hidden_units(model, np.random.default_rng(seed + 100))
    model.save(path)
    if cache:
        os.makedirs(cache, exist_ok=True)
        shutil.copyfile(path, os.path.join(cache, key))
    return model


@pytest.fixture(scope="session")
def train_mlp():
    return train_small_mlp


@pytest.fixture(scope="session")
def small_models(tmp_path_factory, fmnist):
    """Two LeNet-like MLPs (784-48-24-10) trained with different seeds, hidden units permuted."""
    root = tmp_path_factory.mktemp("models")
    paths = []
    for name, seed in (("a", 1), ("b", 2)):
        path = root / f"{name}.keras"
        train_small_mlp(fmnist, path, seed)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def permuted_pair(tmp_path_factory, fmnist):
    """A trained model and a copy with every hidden layer's units permuted: the same function."""
    import keras

    from mtz_mobile.reference import permute_hidden_units

    root = tmp_path_factory.mktemp("perm")
    model = train_small_mlp(fmnist, root / "orig.keras", seed=3, permute=False)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    permute_hidden_units(copy, np.random.default_rng(5))
    copy.save(root / "perm.keras")
    return root / "orig.keras", root / "perm.keras"


ELF_AARCH64_HEADER = (b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + (2).to_bytes(2, "little")
                      + (183).to_bytes(2, "little") + bytes(44))


@pytest.fixture(scope="session")
def deployed(tmp_path_factory, small_models, fmnist):
    """One small deployed model (zip → convert with baselines → host bench), shared by the bench
    and device tests."""
    from mtz_mobile.bench import HostSettings
    from mtz_mobile.pipeline import deploy

    out = tmp_path_factory.mktemp("deploy") / "out"
    result = deploy(small_models, out, data={"a": fmnist, "b": fmnist}, progress=False,
                    bench=HostSettings(runtime="compiled", runs=3), retrain_iterations=0, calibration_samples=500)
    return result


@pytest.fixture
def arm64_binary(tmp_path):
    """A file with an aarch64 ELF header: what the bench checks before pushing benchmark_model."""
    path = tmp_path / "benchmark_model"
    path.write_bytes(ELF_AARCH64_HEADER + b"\0" * 64)
    return path
