"""What light retraining does the same on every backend (retrain.py: TensorFlow, retrain_jax.py:
JAX): the seeded batches, Adam's learning rate, the training arrays."""

from __future__ import annotations

import numpy as np

from mtz_mobile.errors import MTZError

from .config import RetrainSettings


def learning_rate(settings: RetrainSettings):
    """Adam's rate for one retraining call: a constant, or a schedule over its steps (Keras' own,
    on whichever backend)."""
    import keras

    if settings.learning_rate_schedule == "constant":
        return settings.learning_rate
    # Warm-up: the first steps on a freshly merged network have large, noisy gradients, and
    # Adam's second-moment estimate is not settled yet.
    warmup = settings.iterations // 20
    return keras.optimizers.schedules.CosineDecay(
        settings.learning_rate / (warmup + 1), decay_steps=settings.iterations - warmup,
        warmup_target=settings.learning_rate if warmup else None, warmup_steps=warmup)


def batches(arrays: dict[str, tuple], batch: int, seed: int):
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


def training_arrays(data: dict, tasks: list[str], settings: RetrainSettings, soft_targets: dict | None) -> dict:
    """Each task's (images, labels[, soft targets]) as the steps read them; too few for a batch is an error."""
    arrays = {t: (np.asarray(data[t][0], np.float32), np.asarray(data[t][1], np.int64))
              + (() if soft_targets is None else (np.asarray(soft_targets[t], np.float32),)) for t in tasks}
    for t, (x, *_) in arrays.items():
        if len(x) < settings.batch_size:
            raise MTZError(f"task {t} has {len(x)} training samples, fewer than one batch of "
                           f"{settings.batch_size}: lower --batch-size")
    return arrays
