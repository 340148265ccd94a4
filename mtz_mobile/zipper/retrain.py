"""Light retraining (Algorithm 1, line 10): a few joint steps, loss α·L_A + (1−α)·L_B.

Each step draws one batch of every task's training data. Shared blocks are single variables,
so both tasks' gradients reach them. On Keras' JAX backend the steps are retrain_jax's (one
jitted step, no TensorFlow); on TensorFlow they are this module's. Work goes to a GPU when the
backend sees one; with
``strategy="mirrored"`` the steps run under ``tf.distribute.MirroredStrategy`` over every
visible device, with ``strategy="multi-worker"`` under ``tf.distribute.MultiWorkerMirroredStrategy``
over the processes that ``TF_CONFIG`` names. Pruned weights (masks) stay exactly zero.
"""

from __future__ import annotations

import functools
import json
import os
import re

import numpy as np

from mtz_mobile.backend import active
from mtz_mobile.errors import MTZError
from mtz_mobile.graph.network import ZippedNetwork
from mtz_mobile.progress import Progress

from .config import STRATEGIES, RetrainSettings
from .retrain_common import batches as _batches, learning_rate, training_arrays  # noqa: F401 (learning_rate: API)

# A collective that waits longer than this for a peer fails instead of hanging: a worker that
# died mid-run ends the job with an error. Generous, since the first step also waits for the
# slowest worker to trace its step function.
COLLECTIVE_TIMEOUT_S = float(os.environ.get("MTZ_COLLECTIVE_TIMEOUT", "60"))


@functools.lru_cache(maxsize=None)
def make_strategy(name: str) -> tf.distribute.Strategy:
    """One strategy object per process: a second MirroredStrategy would reuse the first one's
    collective instance keys for differently shaped gradients and abort. A multi-worker program
    calls this before any other TensorFlow work (see ``_multi_worker``)."""
    import tensorflow as tf  # deferred here and below: the JAX backend's zips never import it

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        return _multi_worker()
    raise MTZError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}")


def cluster_from_tf_config() -> tuple[list[str], int]:
    """The worker addresses and this process's index from ``TF_CONFIG``, or a one-line refusal:
    without it MultiWorkerMirroredStrategy would silently train alone."""
    fix = "see README, 'Multi-worker retraining'"
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise MTZError(f"multi-worker retraining needs TF_CONFIG (the cluster's workers and this task's index): {fix}")
    try:
        conf = json.loads(raw)
        workers, task = list(conf["cluster"]["worker"]), conf["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as exc:
        shape = '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}'
        raise MTZError(f"TF_CONFIG is malformed ({type(exc).__name__}: {exc}): it needs {shape}; {fix}") from None
    if set(conf["cluster"]) != {"worker"} or task.get("type") != "worker" or not 0 <= index < len(workers):
        raise MTZError(f"TF_CONFIG must name only 'worker' tasks and this task as one of them "
                       f"(type 'worker', index 0..{len(workers) - 1}), got task {task}: {fix}")
    return workers, index


def _multi_worker() -> tf.distribute.Strategy:
    import tensorflow as tf

    cluster_from_tf_config()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=COLLECTIVE_TIMEOUT_S)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as exc:
        # TensorFlow configures collectives only before its runtime starts (the first op or
        # variable in the process)
        if "program startup" not in str(exc):
            raise
        raise MTZError("multi-worker retraining must start before any other TensorFlow work in the process: "
                       "call mtz_mobile.zipper.retrain.make_strategy('multi-worker') first") from None


def _dataset(arrays: dict[str, tuple], batch: int, seed: int) -> tf.data.Dataset:
    import tensorflow as tf

    spec = tuple(tuple(tf.TensorSpec((batch,) + p.shape[1:], tf.float32 if p.dtype.kind == "f" else tf.int64)
                       for p in parts) for parts in arrays.values())
    ds = tf.data.Dataset.from_generator(lambda: _batches(arrays, batch, seed), output_signature=spec)
    # Every element is one global batch and every worker's generator yields the same ones (same
    # seed): across workers each takes its slice of every batch (DATA), as the replicas of one
    # process do, so N workers take the steps one process takes. A generator has no files to
    # shard by, and AUTO would only say so in a warning before falling back to DATA.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def _per_example_loss(logits, batch, settings: RetrainSettings, has_soft_targets: bool):
    """Cross-entropy on the labels, mixed with the originals' soft targets when distilling."""
    import tensorflow as tf

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
    if active() != "tensorflow":
        from .retrain_jax import retrain_jax

        return retrain_jax(net, data, weights, settings, seed, masks, soft_targets, progress, label)
    return _retrain_tf(net, data, weights, settings, seed, masks, soft_targets, progress, label)


def _retrain_tf(net, data, weights, settings, seed, masks, soft_targets, progress, label) -> dict:
    import tensorflow as tf

    from mtz_mobile.graph.joint_model import JointModel

    strategy = make_strategy(settings.strategy)  # first: a multi-worker one must precede other TensorFlow work
    tf.config.experimental.enable_op_determinism()
    tf.random.set_seed(seed)
    tasks = list(data)  # the tasks being trained (later tasks of a sequential zip are not yet in play)
    with strategy.scope():
        model = JointModel(net)
        optimizer = tf.keras.optimizers.Adam(learning_rate(settings))
        variables = list(model.blocks.values())
        optimizer.build(variables)
    mask_vars = {k: tf.constant(m.astype(np.float32)) for k, m in (masks or {}).items()}

    arrays = training_arrays(data, tasks, settings, soft_targets)
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

    first, last = _run_steps(step, iterator, settings, tasks, label, progress and _is_chief(strategy))
    model.write_back()
    return {"iterations": settings.iterations, "replicas": strategy.num_replicas_in_sync,
            "device": _device_kind(), "backend": "tensorflow",
            "loss_first": {t: float(v) for t, v in zip(tasks, first)},
            "loss_last": {t: float(v) for t, v in zip(tasks, last)}}


def _run_steps(step, iterator, settings: RetrainSettings, tasks: list[str], label: str, progress: bool):
    """The steps, with the first and last step's per-task losses. Across workers a step whose
    collective fails (a peer died or stopped answering within COLLECTIVE_TIMEOUT_S) ends the job:
    the survivors cannot go on without it, and TensorFlow's own message is one of many lines."""
    import tensorflow as tf

    bar = Progress(settings.iterations, label=label, enabled=progress)
    first = last = None
    for it in range(settings.iterations):
        try:
            losses = step(next(iterator)).numpy()
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
                tf.errors.CancelledError, tf.errors.InternalError) as exc:
            if settings.strategy != "multi-worker":
                raise
            detail = _error_line(exc)
            raise MTZError(f"multi-worker retraining failed at step {it + 1} of {settings.iterations}: a worker died "
                           f"or stopped answering ({type(exc).__name__}: {detail}); restart all workers") from None
        first = losses if first is None else first
        last = losses
        bar.update(it + 1, " ".join(f"{t}:{v:.3f}" for t, v in zip(tasks, losses)))
    return first, last


def _error_line(exc: tf.errors.OpError) -> str:
    """The cause in a TensorFlow error, and the peer it names: its message opens with "Graph
    execution error:" and the node's Python stack, and closes with generic advice."""
    message = exc.message or ""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    noise = ("Graph execution error", "Detected at node", "File ", "Additional GRPC", ":UNKNOWN", "[[",
             "The error could")
    causes = [line for line in lines if not line.startswith(noise)]
    cause = causes[0] if causes else type(exc).__name__
    peer = re.search(r"remote target (/job:\S+) while", message)
    return (cause + (f" (from {peer.group(1)})" if peer else ""))[:300]


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Worker 0 reports progress; the others take the same steps and would only repeat it."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver is None or not resolver.task_type or resolver.task_id == 0


def _device_kind() -> str:
    import tensorflow as tf

    return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
