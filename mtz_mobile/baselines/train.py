"""Joint retraining of chosen blocks only: the zipper's loss, optimizer and schedule
(``zipper.retrain``), with the other blocks held fixed (a frozen trunk, a frozen task)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from mtz_mobile.errors import MTZError
from mtz_mobile.graph.network import ZippedNetwork
from mtz_mobile.progress import Progress
from mtz_mobile.zipper.config import RetrainSettings
from mtz_mobile.zipper.retrain_common import batches, learning_rate, training_arrays


def train_blocks(net: ZippedNetwork, data: dict[str, tuple[np.ndarray, np.ndarray]], weights: dict[str, float],
                 settings: RetrainSettings, seed: int, trainable: Callable[[str], bool],
                 soft_targets: dict[str, np.ndarray] | None = None, progress: bool = False) -> dict:
    """``settings.iterations`` Adam steps on the tasks in ``data`` (loss weights ``weights``),
    updating only the blocks whose saved name ``trainable`` accepts; ``net`` is updated in place."""
    from mtz_mobile.backend import active

    if settings.iterations <= 0:
        return {"iterations": 0}
    if active() != "tensorflow":
        raise MTZError("the baselines train with TensorFlow: run them with --backend tensorflow")
    import tensorflow as tf

    from mtz_mobile.graph.joint_model import JointModel
    from mtz_mobile.zipper.retrain import _per_example_loss   # the zipper's loss, not a second copy

    tf.config.experimental.enable_op_determinism()
    tf.random.set_seed(seed)
    tasks = list(data)
    model = JointModel(net)
    variables = [v for key, v in model.blocks.items() if trainable(key)]
    if not variables:
        raise MTZError("internal: no block to train")
    optimizer = tf.keras.optimizers.Adam(learning_rate(settings))
    optimizer.build(variables)
    has_soft = soft_targets is not None

    @tf.function
    def step(*batch):
        with tf.GradientTape() as tape:
            losses = [tf.reduce_mean(_per_example_loss(model.logits(t, b[0]), b, settings, has_soft))
                      for t, b in zip(tasks, batch)]
            total = sum(weights[t] * loss for t, loss in zip(tasks, losses))
        optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        return tf.stack(losses)

    stream = batches(training_arrays(data, tasks, settings, soft_targets), settings.batch_size, seed)
    bar = Progress(settings.iterations, label="baseline training", enabled=progress)
    first = last = None
    for it in range(settings.iterations):
        last = step(*[tuple(tf.constant(a) for a in b) for b in next(stream)]).numpy()
        first = last if first is None else first
        bar.update(it + 1, " ".join(f"{t}:{v:.3f}" for t, v in zip(tasks, last)))
    model.write_back()
    return {"iterations": settings.iterations, "trained_blocks": len(variables),
            "loss_first": {t: float(v) for t, v in zip(tasks, first)},
            "loss_last": {t: float(v) for t, v in zip(tasks, last)}}
