"""Light retraining on Keras' JAX backend: the same joint steps as retrain.py's TensorFlow ones
(the same batches from the same seeded generator, Keras' Adam and learning-rate schedule, the
same loss), as one jitted function of the blocks and the optimizer's state. No TensorFlow.

A step is pure: blocks in, blocks out (``optimizer.stateless_apply``), so XLA compiles the whole
step — forward passes of every task, gradients, Adam, the pruning masks — into one program on
the device JAX sees. Results equal the TensorFlow path's up to float32 rounding (other kernels,
other summation orders), not bit for bit.
"""

from __future__ import annotations

import numpy as np

from mtz_mobile.backend import device_kind
from mtz_mobile.graph.keras_ops import KerasOps
from mtz_mobile.graph.network import BLOCK_DTYPE, ZippedNetwork, bias_key, kernel_key
from mtz_mobile.progress import Progress

from .config import RetrainSettings
from .retrain_common import batches, learning_rate, training_arrays


def _per_example_loss(logits, batch, settings: RetrainSettings, has_soft_targets: bool):
    """retrain._per_example_loss in Keras' ops: labels' cross-entropy, mixed with the soft targets'."""
    import keras

    per_example = keras.losses.sparse_categorical_crossentropy(batch[1], logits, from_logits=True)
    if has_soft_targets and settings.distill > 0:
        temp = settings.temperature
        soft = keras.ops.softmax(batch[2] / temp)
        kd = keras.losses.categorical_crossentropy(soft, logits / temp, from_logits=True) * temp ** 2
        per_example = (1.0 - settings.distill) * per_example + settings.distill * kd
    return per_example


def _step_function(net: ZippedNetwork, keys: list[str], tasks: list[str], weights: dict[str, float],
                   settings: RetrainSettings, has_soft: bool, optimizer, masks: dict):
    """The jitted step: (blocks, optimizer state, batches) → (blocks, optimizer state, per-task losses)."""
    import jax
    import keras

    ops = KerasOps()
    names = {}
    for i, node in enumerate(net.nodes):
        names.update({("kernel", i, key): kernel_key(node.name, *key) for key in node.kernels})
        names.update({("bias", i, key): bias_key(node.name, *key) for key in node.biases})

    def loss(values, batches):
        blocks = dict(zip(keys, values))
        lookup = lambda kind, i, key: blocks[names[(kind, i, key)]]  # noqa: E731
        losses = []
        for t, batch in zip(tasks, batches):
            out = net.forward(t, batch[0], ops=ops, params=lookup, preactivation=True)
            logits = net.task_view(net.output, out[-1], t, ops=ops)
            losses.append(keras.ops.mean(_per_example_loss(logits, batch, settings, has_soft)))
        return sum(weights[t] * v for t, v in zip(tasks, losses)), keras.ops.stack(losses)

    def step(values, state, batches):
        (_, losses), grads = jax.value_and_grad(loss, has_aux=True)(values, batches)
        values, state = optimizer.stateless_apply(state, grads, values)
        values = [v * masks[k] if k in masks else v for k, v in zip(keys, values)]
        return values, state, losses

    return jax.jit(step, donate_argnums=(0, 1))


def retrain_jax(net: ZippedNetwork, data: dict, weights: dict[str, float], settings: RetrainSettings, seed: int,
                masks: dict | None = None, soft_targets: dict | None = None, progress: bool = True,
                label: str = "retrain") -> dict:
    """retrain.retrain on JAX: ``settings.iterations`` joint steps on ``net`` in place."""
    import jax
    import jax.numpy as jnp
    import keras

    tasks = list(data)
    arrays = training_arrays(data, tasks, settings, soft_targets)
    blocks = net.arrays(np.float32)
    keys = list(blocks)
    optimizer = keras.optimizers.Adam(learning_rate(settings))
    optimizer.build([keras.Variable(blocks[k], name=f"b{n}") for n, k in enumerate(keys)])
    state = [jnp.array(v.value) for v in optimizer.variables]
    values = [jnp.array(blocks[k]) for k in keys]
    mask_arrays = {k: jnp.asarray(m, jnp.float32) for k, m in (masks or {}).items()}
    step = _step_function(net, keys, tasks, weights, settings, soft_targets is not None, optimizer, mask_arrays)
    stream = batches(arrays, settings.batch_size, seed)
    bar = Progress(settings.iterations, label=label, enabled=progress)
    first = last = None
    for it in range(settings.iterations):
        with jax.default_matmul_precision("default"):   # TF32 on a recent GPU, as TensorFlow's retraining
            values, state, losses = step(values, state, next(stream))
        last = np.asarray(losses)
        first = last if first is None else first
        bar.update(it + 1, " ".join(f"{t}:{v:.3f}" for t, v in zip(tasks, last)))
    _write_back(net, dict(zip(keys, values)))
    return {"iterations": settings.iterations, "replicas": 1, "device": device_kind("jax"), "backend": "jax",
            "loss_first": {t: float(v) for t, v in zip(tasks, first)},
            "loss_last": {t: float(v) for t, v in zip(tasks, last)}}


def _write_back(net: ZippedNetwork, blocks: dict) -> None:
    """New arrays for the trained blocks (replaced, never written in place: the activation cache's rule)."""
    for node in net.nodes:
        for key in node.kernels:
            node.kernels[key] = np.asarray(blocks[kernel_key(node.name, *key)]).astype(BLOCK_DTYPE)
        for key in node.biases:
            node.biases[key] = np.asarray(blocks[bias_key(node.name, *key)]).astype(BLOCK_DTYPE)
