"""Magnitude pruning of a trained Keras model, then fine-tuning that keeps the pruned weights
at exactly zero: the sparse reference models of the paper's Table 1 (after Han et al., who
prune LeNet-300-100 to 8 %/9 %/26 % and LeNet-5 to 66 %/12 %/8 %/19 % of the weights per layer).

One shot per layer: in every Dense/Conv2D kernel the ``density`` fraction of weights with the
largest magnitude stays, the rest become zero; biases are not pruned. Fine-tuning then trains
the whole model with the masks re-applied after every step (Han et al. prune iteratively; one
shot plus fine-tuning is the simple variant of the same idea).

    masks = prune_model(model, [0.08, 0.09, 0.26])
    fine_tune_pruned(model, masks, x_train, y_train, epochs=2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import MTZError

# density of each weight layer's kernel, in layer order (the output layer last)
HAN_LENET_300_100 = (0.08, 0.09, 0.26)
HAN_LENET_5 = (0.66, 0.12, 0.08, 0.19)


def weight_layers(model) -> list:
    """The model's Dense and Conv2D layers, in order."""
    import keras

    return [layer for layer in model.layers if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))]


def magnitude_mask(kernel: np.ndarray, density: float) -> np.ndarray:
    """Boolean mask keeping the round(density·size) weights of largest magnitude (ties: the first)."""
    if not 0.0 < density <= 1.0:
        raise MTZError(f"density must lie in (0, 1], got {density}")
    flat = np.abs(np.asarray(kernel)).ravel()
    keep = max(1, int(round(density * flat.size)))
    mask = np.zeros(flat.size, dtype=bool)
    mask[np.argsort(-flat, kind="stable")[:keep]] = True
    return mask.reshape(np.shape(kernel))


def prune_model(model, densities) -> dict[str, np.ndarray]:
    """Prune every Dense/Conv2D kernel in place; ``densities`` has one value per such layer
    (or one for all). Returns the masks by layer name."""
    layers = weight_layers(model)
    densities = list(densities)
    if len(densities) == 1:
        densities = densities * len(layers)
    if len(densities) != len(layers):
        raise MTZError(f"give one density per weight layer ({len(layers)}: "
                       f"{', '.join(l.name for l in layers)}), got {len(densities)}")
    masks = {}
    for layer, density in zip(layers, densities):
        kernel = layer.kernel.numpy()
        mask = magnitude_mask(kernel, density)
        layer.kernel.assign(kernel * mask)
        masks[layer.name] = mask
    return masks


def kernel_densities(model) -> dict[str, float]:
    """Fraction of nonzero kernel weights of every Dense/Conv2D layer."""
    return {layer.name: float(np.count_nonzero(layer.kernel.numpy())) / layer.kernel.numpy().size
            for layer in weight_layers(model)}


def _mask_callback(model, masks):
    import keras
    import tensorflow as tf

    targets = [(layer.kernel, tf.constant(masks[layer.name], dtype=layer.kernel.dtype))
               for layer in weight_layers(model) if layer.name in masks]

    class KeepMasks(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for var, mask in targets:
                var.assign(var * mask)

    return KeepMasks()


@dataclass
class FineTuneRecord:
    epochs: int
    batch_size: int
    learning_rate: float
    iterations: int


def fine_tune_pruned(model, masks: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, epochs: int = 2,
                     batch_size: int = 128, learning_rate: float = 1e-4, seed: int = 0,
                     verbose: int = 0, callbacks=()) -> FineTuneRecord:
    """Train the pruned model (Adam, sparse categorical cross-entropy) with its masks applied
    after every step, so a pruned weight stays exactly zero (``callbacks`` run after that)."""
    import keras
    import tensorflow as tf

    if epochs < 0 or batch_size <= 0:
        raise MTZError("epochs must be >= 0 and the batch size > 0")
    if epochs == 0:
        return FineTuneRecord(0, batch_size, learning_rate, 0)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose,
              callbacks=[_mask_callback(model, masks), *callbacks])
    for layer in weight_layers(model):  # exact zeros, whatever the last step did
        if layer.name in masks:
            layer.kernel.assign(layer.kernel.numpy() * masks[layer.name])
    return FineTuneRecord(epochs, batch_size, learning_rate, epochs * math.ceil(len(x) / batch_size))
