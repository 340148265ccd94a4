"""The reference architectures: the LeNets, the ResNet and Keras' mobile networks, built for the
data's shape, and train-reference fitting 28×28 grey data to what the mobile networks need."""

import json
import time

import numpy as np
import pytest

from mtz_mobile.data import TaskData, load_task_data
from mtz_mobile.errors import MTZError
from mtz_mobile.reference import (APPLICATIONS, ARCHITECTURES, batchnorm_momentum, build_reference, fit_for_arch,
                                  train_reference, train_reference_pair)


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
    # an epoch of 47 steps (6,000 images) left MobileNetV3Small at chance at 0.99; Fashion-MNIST's
    # 422-469 steps keep 0.99, so that the references measured with it train as before
    assert batchnorm_momentum(47) == 0.9 and batchnorm_momentum(422) == batchnorm_momentum(469) == 0.99
    model = build_reference("mobilenet_v3_small", (32, 32, 3), 5, momentum=batchnorm_momentum(47))
    assert {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.9}


TEST_PIXEL = 0.75   # every test image is this constant; no training image has a pixel of that value


def tagged_data(n_train=200, n_test=40):
    """Random 8×8 images, 4 classes; pixel (0, 0) of training image i is i / 1000, so a sample
    names its index, and every test image is the constant TEST_PIXEL (never a training value)."""
    rng = np.random.default_rng(5)
    x = rng.random((n_train, 8, 8), dtype=np.float32) * 0.5
    x[:, 0, 0] = np.arange(n_train) / 1000
    return TaskData("npz:tagged", x, np.arange(n_train) % 4, np.full((n_test, 8, 8), TEST_PIXEL, np.float32),
                    np.arange(n_test) % 4, ["a", "b", "c", "d"])


def early_stopped(tmp_path, name="a", epochs=30, patience=1, seed=4):
    # 20 validation images: 21 possible errors cannot fall 30 epochs running, so patience 1 must stop it
    return train_reference(tagged_data(), tmp_path / f"{name}.keras", seed, epochs=epochs, batch_size=16,
                           hidden=(8,), verbose=0, early_stopping=patience, validation_split=0.1)


def test_early_stopping_stops_and_saves_the_best_epochs_weights(tmp_path):
    import keras

    rec = early_stopped(tmp_path)
    assert rec.epochs == 30 and rec.best_epoch <= rec.epochs_run < 30
    assert rec.epochs_run == rec.best_epoch + 1   # patience 1: one epoch without improvement ends it
    held = tagged_data().holdout(0.1)
    assert rec.validation_images == len(held.x_val) == 20 and rec.validation_source == held.validation_source
    # trained on the 180 images left: 12 batches of 16 per epoch, not the 13 of all 200
    assert rec.iterations == rec.epochs_run * 12
    model = keras.models.load_model(rec.path)
    probs = model.predict(held.x_val, verbose=0)
    assert rec.validation_error == float(np.mean(np.argmax(probs, axis=1) != held.y_val))
    # the saved weights are those after best_epoch epochs, not the last epoch's: the same seed
    # trained to exactly best_epoch (a patience it cannot exhaust) gives the same network
    again = early_stopped(tmp_path, "b", epochs=rec.best_epoch, patience=rec.best_epoch + 1)
    assert again.epochs_run == again.best_epoch == rec.best_epoch
    for w, v in zip(model.get_weights(), keras.models.load_model(again.path).get_weights()):
        np.testing.assert_array_equal(w, v)


def test_validation_images_are_training_images_never_test_or_trained_on():
    data = tagged_data()
    held = data.holdout(0.1)
    assert not np.any(held.x_val == TEST_PIXEL)
    val_ids, train_ids = np.round(held.x_val[:, 0, 0] * 1000), np.round(held.x_train[:, 0, 0] * 1000)
    assert not set(val_ids) & set(train_ids)
    assert sorted(np.concatenate([val_ids, train_ids])) == list(range(200))
    np.testing.assert_array_equal(held.x_test, data.x_test)
    # per class: 5 of each class's 50
    assert np.bincount(held.y_val).tolist() == [5, 5, 5, 5]


def test_early_stopping_is_deterministic_under_the_seed(tmp_path):
    first, second = early_stopped(tmp_path, "a", epochs=6), early_stopped(tmp_path, "b", epochs=6)
    assert asdict_without_path(first) == asdict_without_path(second)


def asdict_without_path(rec):
    from dataclasses import asdict

    return {k: v for k, v in asdict(rec).items() if k not in ("name", "path")}


def test_fixed_epochs_unchanged_and_old_records_load(tmp_path):
    from dataclasses import asdict

    from mtz_mobile.reference import ReferenceRecord

    rec = train_reference(tagged_data(), tmp_path / "a.keras", 4, epochs=2, batch_size=16, hidden=(8,), verbose=0)
    # all 200 training images, every epoch run, no validation set
    assert rec.iterations == 2 * 13 and rec.epochs_run == 2
    assert rec.best_epoch is rec.validation_error is rec.validation_images is rec.validation_source is None
    old = {k: v for k, v in asdict(rec).items() if k not in ("epochs_run", "best_epoch", "validation_error",
                                                            "validation_images", "validation_source")}
    assert ReferenceRecord(**old).best_epoch is None


@pytest.mark.parametrize("patience, split, message", [
    (0, 0.1, r"patience 0 is not a whole number >= 1.*--early-stopping 3"),
    (-2, 0.1, r"patience -2 .*--early-stopping 3"),
    (1.5, 0.1, r"patience 1.5 .*--early-stopping 3"),
    (3, 0.0, r"validation split 0.0 is outside \(0, 1\).*--validation-split 0.1"),
    (3, 1.0, r"validation split 1.0 is outside \(0, 1\).*--validation-split 0.1"),
    (3, -0.5, r"validation split -0.5 .*--validation-split 0.1"),
])
def test_bad_patience_or_split_names_the_fix(tmp_path, patience, split, message):
    with pytest.raises(MTZError, match=message):
        train_reference(tagged_data(), tmp_path / "a.keras", 1, early_stopping=patience, validation_split=split)
    # the pair refuses before it creates anything
    with pytest.raises(MTZError, match=message):
        train_reference_pair([tagged_data()], tmp_path / "refs", seeds=(1,), names=("a",), early_stopping=patience,
                             validation_split=split)
    assert not list(tmp_path.iterdir())


def test_cli_train_reference_reports_early_stopping(tmp_path, capsys):
    from mtz_mobile.cli import main

    spec = f"npz:{small_npz(tmp_path / 'd.npz', n_train=80)}"
    code = main(["train-reference", "--out", str(tmp_path / "refs"), "--data", spec, "--seeds", "3",
                 "--arch", "mlp", "--hidden", "8", "--epochs", "4", "--batch-size", "16", "--early-stopping", "2",
                 "--validation-split", "0.25"])
    assert code == 0
    written = json.loads((tmp_path / "refs" / "reference.json").read_text())
    assert written[0]["validation_images"] == 20 and 1 <= written[0]["best_epoch"] <= written[0]["epochs_run"] <= 4
    assert "early stopping:" in capsys.readouterr().out
    assert main(["train-reference", "--out", str(tmp_path / "r2"), "--data", spec, "--early-stopping", "0"]) == 2
    assert "--early-stopping 3" in capsys.readouterr().err
