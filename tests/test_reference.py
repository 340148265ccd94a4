"""The reference architectures: the LeNets, the ResNet and Keras' mobile networks, built for the
data's shape, and train-reference fitting 28×28 grey data to what the mobile networks need."""

import json
import time

import numpy as np
import pytest

from mtz_mobile.data import TaskData, load_task_data
from mtz_mobile.errors import MTZError
from mtz_mobile.reference import (APPLICATIONS, ARCHITECTURES, build_reference, fit_for_arch,
                                  train_reference_pair)


def test_every_architecture_is_named():
    assert set(ARCHITECTURES) == {"lenet300", "mlp", "lenet5", "resnet", "mobilenet_v2", "mobilenet_v3_small",
                                  "efficientnet_b0"}
    with pytest.raises(MTZError, match="unknown architecture 'vgg'.*mobilenet_v2"):
        build_reference("vgg", (32, 32, 3), 10)


def test_mlp_is_lenet300():
    old, new = build_reference("mlp", (28, 28), 10), build_reference("lenet300", (28, 28), 10)
    assert [w.shape for w in old.get_weights()] == [w.shape for w in new.get_weights()]
    assert [w.shape[-1] for w in new.get_weights()[::2]] == [300, 100, 10]


@pytest.mark.parametrize("arch", APPLICATIONS)
def test_application_models_read_32x32x3_and_predict_every_class(arch):
    import keras

    model = build_reference(arch, (32, 32, 3), 7)
    assert tuple(model.input.shape) == (None, 32, 32, 3) and tuple(model.output.shape) == (None, 7)
    # they read [0, 1] pixels as they are: no Rescaling or Normalization of their own
    own_preprocessing = (keras.layers.Rescaling, keras.layers.Normalization)
    assert not [layer for layer in model.layers if isinstance(layer, own_preprocessing)]
    probs = np.asarray(model(np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32), training=False))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("arch", APPLICATIONS)
def test_application_models_refuse_small_or_grey_input_naming_the_spec(arch):
    for shape in ((28, 28, 3), (32, 32, 1), (32, 32)):
        with pytest.raises(MTZError, match="at least 32x32x3.*fashion-mnist@32x32x3"):
            build_reference(arch, shape, 10)


def small_npz(path, n_train=64, n_test=16):
    rng = np.random.default_rng(3)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8), y_train=np.arange(n_train) % 4,
             x_test=rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8), y_test=np.arange(n_test) % 4)
    return path


def test_fit_for_arch_pads_to_32x32x3_and_records_the_spec_that_reloads_it(tmp_path):
    spec = f"npz:{small_npz(tmp_path / 'd.npz')}"
    data = load_task_data(spec)
    assert fit_for_arch(data, "lenet5") is data
    fitted = fit_for_arch(data, "mobilenet_v2")
    assert fitted.spec == f"npz@32x32x3:{tmp_path / 'd.npz'}" and fitted.x_train.shape == (64, 32, 32, 3)
    reloaded = load_task_data(fitted.spec)
    np.testing.assert_array_equal(fitted.x_train, reloaded.x_train)
    np.testing.assert_array_equal(fitted.x_test, reloaded.x_test)
    assert fit_for_arch(fitted, "efficientnet_b0") is fitted


def test_fit_for_arch_will_not_fit_twice(tmp_path):
    spec = f"npz@30x30x1:{small_npz(tmp_path / 'd.npz')}"
    with pytest.raises(MTZError, match=r"use --data npz@32x32x3:"):
        fit_for_arch(load_task_data(spec), "mobilenet_v3_small")
    flat = TaskData("npz:x", np.zeros((2, 784), np.float32), np.zeros(2, np.int64), np.zeros((1, 784), np.float32),
                    np.zeros(1, np.int64), ["a"])
    with pytest.raises(MTZError, match="needs images"):
        fit_for_arch(flat, "mobilenet_v2")


def test_mobilenet_v2_trains_on_28x28_grey_data_fitted_and_recorded(tmp_path, monkeypatch):
    from mtz_mobile import reference

    real_build = reference.build_reference

    def eager_build(*args, **kwargs):
        # tracing MobileNetV2's training step costs about a minute on a shared CPU; two eager steps a few s
        model = real_build(*args, **kwargs)
        compile_graph = model.compile
        model.compile = lambda **options: compile_graph(run_eagerly=True, **options)
        return model

    monkeypatch.setattr(reference, "build_reference", eager_build)
    spec = f"npz:{small_npz(tmp_path / 'd.npz')}"
    data = load_task_data(spec)
    start = time.perf_counter()
    records = train_reference_pair([data, data], tmp_path / "refs", seeds=(1,), names=("a",), epochs=1,
                                   batch_size=32, verbose=0, arch="mobilenet_v2")
    assert time.perf_counter() - start < 40
    written = json.loads((tmp_path / "refs" / "reference.json").read_text())
    assert written == [{**written[0], "data": f"npz@32x32x3:{tmp_path / 'd.npz'}", "arch": "mobilenet_v2",
                        "iterations": 2, "permuted": False, "hidden": []}]
    assert records[0].path == str(tmp_path / "refs" / "a.keras") and 0.0 <= records[0].test_error <= 1.0
    assert (tmp_path / "refs" / "a.keras").exists()


def test_application_batchnorm_statistics_follow_a_short_training():
    """With the applications' momentum 0.999 a few thousand steps leave the moving statistics near
    their initial values and the trained model at chance at inference (measured on MobileNetV2)."""
    import keras

    model = build_reference("mobilenet_v2", (32, 32, 3), 10)
    momenta = {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.99}
