"""Light retraining (Algorithm 1, line 10): a few joint steps, loss α·L_A + (1−α)·L_B.

Each step draws one batch of every task's training data. Shared blocks are single variables,
so both tasks' gradients reach them. Work goes to a GPU when TensorFlow sees one; with
``strategy="mirrored"`` the steps run under ``tf.distribute.MirroredStrategy`` over every
visible device. Pruned weights (masks) stay exactly zero.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from mtz_mobile.errors import MTZError
from mtz_mobile.graph.joint_model import JointModel
from mtz_mobile.graph.network import ZippedNetwork
from mtz_mobile.progress import Progress

from .config import STRATEGIES, RetrainSettings

@functools.lru_cache(maxsize=None)
def make_strategy(name: str) -> tf.distribute.Strategy:
    """One strategy object per process: a second MirroredStrategy would reuse the first one's
    collective instance keys for differently shaped gradients and abort."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise MTZError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}")


def _batches(arrays: dict[str, tuple], batch: int, seed: int):
    """Endless batches, one per task per step, each task's data reshuffled every epoch (numpy,
    seeded). Fed through a generator: a dataset built from the arrays themselves would embed them
    as graph constants that the traced step (and the optimizer it captures) keeps alive after
    retraining returns — about twice the training data per call."""
    rngs = {t: np.random.default_rng([seed, n]) for n, t in enumerate(arrays)}
    orders = {t: rngs[t].permutation(len(a[0])) for t, a in arrays.items()}
    pos = {t: 0 for t in arrays}
    while True:
        out = []
        for t, parts in arrays.items():
            if pos[t] + batch > len(orders[t]):
                orders[t], pos[t] = rngs[t].permutation(len(parts[0])), 0
            idx = np.sort(orders[t][pos[t]:pos[t] + batch])
            pos[t] += batch
            out.append(tuple(p[idx] for p in parts))
        yield tuple(out)


def _dataset(arrays: dict[str, tuple], batch: int, seed: int) -> tf.data.Dataset:
    spec = tuple(tuple(tf.TensorSpec((batch,) + p.shape[1:], tf.float32 if p.dtype.kind == "f" else tf.int64)
                       for p in parts) for parts in arrays.values())
    return tf.data.Dataset.from_generator(lambda: _batches(arrays, batch, seed), output_signature=spec)


def _per_example_loss(logits, batch, settings: RetrainSettings, has_soft_targets: bool):
    """Cross-entropy on the labels, mixed with the originals' soft targets when distilling."""
    per_example = tf.keras.losses.sparse_categorical_crossentropy(batch[1], logits, from_logits=True)
    if has_soft_targets and settings.distill > 0:
        temp = settings.temperature
        soft = tf.nn.softmax(batch[2] / temp)
        kd = tf.keras.losses.categorical_crossentropy(soft, logits / temp, from_logits=True) * temp ** 2
        per_example = (1.0 - settings.distill) * per_example + settings.distill * kd
    return per_example


def retrain(net: ZippedNetwork, data: dict[str, tuple[np.ndarray, np.ndarray]], weights: dict[str, float],
            settings: RetrainSettings, seed: int, masks: dict[str, np.ndarray] | None = None,
            soft_targets: dict[str, np.ndarray] | None = None, progress: bool = True,
            label: str = "retrain") -> dict:
    """Run ``settings.iterations`` joint steps on ``net`` in place; returns step count and losses."""
    if settings.iterations <= 0:
        return {"iterations": 0}
    tf.config.experimental.enable_op_determinism()
    tf.random.set_seed(seed)
    strategy = make_strategy(settings.strategy)
    tasks = list(data)  # the tasks being trained (later tasks of a sequential zip are not yet in play)
    with strategy.scope():
        model = JointModel(net)
        optimizer = tf.keras.optimizers.Adam(settings.learning_rate)
        variables = list(model.blocks.values())
        optimizer.build(variables)
    mask_vars = {k: tf.constant(m.astype(np.float32)) for k, m in (masks or {}).items()}

    arrays = {t: (np.asarray(data[t][0], np.float32), np.asarray(data[t][1], np.int64))
              + (() if soft_targets is None else (np.asarray(soft_targets[t], np.float32),)) for t in tasks}
    for t, (x, _, *rest) in arrays.items():
        if len(x) < settings.batch_size:
            raise MTZError(f"task {t} has {len(x)} training samples, fewer than one batch of "
                           f"{settings.batch_size}: lower --batch-size")
    iterator = iter(strategy.experimental_distribute_dataset(_dataset(arrays, settings.batch_size, seed)))
    global_batch = settings.batch_size

    def replica_step(batches):
        with tf.GradientTape() as tape:
            total = 0.0
            losses = []
            for t, batch in zip(tasks, batches):
                per_example = _per_example_loss(model.logits(t, batch[0]), batch, settings, soft_targets is not None)
                loss_t = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                losses.append(loss_t)
                total += weights[t] * loss_t
        grads = tape.gradient(total, variables)
        optimizer.apply_gradients(zip(grads, variables))
        for key, m in mask_vars.items():
            model.blocks[key].assign(model.blocks[key] * m)
        return tf.stack(losses)

    @tf.function
    def step(batches):  # the batches come in as arguments: a captured iterator would outlive the call
        per_replica = strategy.run(replica_step, args=(batches,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    bar = Progress(settings.iterations, label=label, enabled=progress)
    first = last = None
    for it in range(settings.iterations):
        losses = step(next(iterator)).numpy()
        first = losses if first is None else first
        last = losses
        bar.update(it + 1, " ".join(f"{t}:{v:.3f}" for t, v in zip(tasks, losses)))
    model.write_back()
    return {"iterations": settings.iterations, "replicas": strategy.num_replicas_in_sync,
            "device": _device_kind(),
            "loss_first": {t: float(v) for t, v in zip(tasks, first)},
            "loss_last": {t: float(v) for t, v in zip(tasks, last)}}


def _device_kind() -> str:
    return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
