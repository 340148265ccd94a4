"""Magnitude pruning and masked fine-tuning (mtz_mobile.prune), on tiny Keras models."""

import keras
import numpy as np
import pytest

from mtz_mobile.errors import MTZError
from mtz_mobile.prune import fine_tune_pruned, kernel_densities, magnitude_mask, prune_model, weight_layers


def tiny_models():
    keras.utils.set_random_seed(3)
    mlp = keras.Sequential([keras.Input((6, 6)), keras.layers.Flatten(), keras.layers.Dense(20, activation="relu"),
                            keras.layers.Dense(4, activation="softmax")])
    cnn = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(5, 3, activation="relu"),
                            keras.layers.Flatten(), keras.layers.Dense(4, activation="softmax")])
    return mlp, cnn


def test_magnitude_mask_keeps_the_largest():
    k = np.array([[0.1, -3.0, 0.2], [2.0, -0.05, 1.0]])
    m = magnitude_mask(k, 0.5)
    assert m.sum() == 3
    assert set(np.abs(k[m])) == {3.0, 2.0, 1.0}
    assert magnitude_mask(k, 1.0).all()
    assert magnitude_mask(k, 1e-6).sum() == 1  # at least one weight stays
    with pytest.raises(MTZError):
        magnitude_mask(k, 0.0)


def test_prune_model_hits_the_densities_and_keeps_biases():
    mlp, cnn = tiny_models()
    for model, dens in ((mlp, [0.1, 0.5]), (cnn, [0.66, 0.2])):
        biases = [layer.bias.numpy().copy() for layer in weight_layers(model)]
        before = [layer.kernel.numpy().copy() for layer in weight_layers(model)]
        masks = prune_model(model, dens)
        got = list(kernel_densities(model).values())
        for layer, d, g, w0, b0 in zip(weight_layers(model), dens, got, before, biases):
            assert g == pytest.approx(round(d * w0.size) / w0.size)
            kept = layer.kernel.numpy()
            np.testing.assert_array_equal(kept[masks[layer.name]], w0[masks[layer.name]])
            assert np.abs(w0[~masks[layer.name]]).max() <= np.abs(w0[masks[layer.name]]).min()
            np.testing.assert_array_equal(layer.bias.numpy(), b0)
    with pytest.raises(MTZError):
        prune_model(mlp, [0.5, 0.5, 0.5])


def test_fine_tuning_keeps_pruned_weights_at_zero():
    mlp, _ = tiny_models()
    masks = prune_model(mlp, [0.2, 0.5])
    rng = np.random.default_rng(0)
    x = rng.random((256, 6, 6), dtype=np.float32)
    y = rng.integers(0, 4, 256)
    before = [layer.kernel.numpy().copy() for layer in weight_layers(mlp)]
    seen = []

    class Probe(keras.callbacks.Callback):  # runs after every step, once the masks are applied
        def on_train_batch_end(self, batch, logs=None):
            seen.append(max(float(np.abs(layer.kernel.numpy()[~masks[layer.name]]).max())
                            for layer in weight_layers(mlp)))

    record = fine_tune_pruned(mlp, masks, x, y, epochs=2, batch_size=32, learning_rate=1e-2, callbacks=[Probe()])
    assert record.iterations == 2 * 8
    assert len(seen) == 16 and max(seen) == 0.0
    for layer, w0 in zip(weight_layers(mlp), before):
        w = layer.kernel.numpy()
        assert np.all(w[~masks[layer.name]] == 0.0)
        assert not np.allclose(w[masks[layer.name]], w0[masks[layer.name]])  # the kept weights did train
