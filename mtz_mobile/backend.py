"""Which Keras 3 backend the zipper computes with: the one owner of that choice.

The zipper's forward passes, Hessians' inputs, compensation and light retraining run through
Keras 3's active backend: TensorFlow (the default, and the only one with ``--strategy
mirrored/multi-worker``) or JAX (no TensorFlow in the process: what a GPU machine without
TensorFlow's CUDA wheels can run). Keras fixes its backend when it is first imported, from
``KERAS_BACKEND``; ``activate`` sets that variable before then, and refuses a choice that the
running Keras can no longer honour. Importing this module imports nothing heavy.
"""

from __future__ import annotations

import os
import sys

from mtz_mobile.errors import MTZError

BACKENDS = ("auto", "tensorflow", "jax")   # "auto": KERAS_BACKEND, else tensorflow
SUPPORTED = BACKENDS[1:]


def requested(name: str = "auto") -> str:
    """The backend that ``name`` means here: itself, or for "auto" KERAS_BACKEND (else tensorflow)."""
    if name not in BACKENDS:
        raise MTZError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
    if name != "auto":
        return name
    env = os.environ.get("KERAS_BACKEND", "tensorflow") or "tensorflow"
    if env not in SUPPORTED:
        raise MTZError(f"KERAS_BACKEND={env} is not one the zipper runs on: set it to {' or '.join(SUPPORTED)}")
    return env


def activate(name: str = "auto") -> str:
    """Make ``name`` Keras' backend for this process (before Keras is imported) and return it. A
    Keras already started on another backend cannot switch: that is a one-line error naming the fix."""
    want = requested(name)
    keras = sys.modules.get("keras")
    if keras is not None:
        have = keras.config.backend()
        if have != want:
            raise MTZError(f"Keras already runs on {have} in this process, not {want}: start a new process with "
                           f"KERAS_BACKEND={want} (or --backend {want}) set before anything imports Keras")
        return want
    os.environ["KERAS_BACKEND"] = want
    if want == "jax":
        _check_jax()
    return want


def _check_jax() -> None:
    try:
        import jax  # noqa: F401 — only to say clearly that it is missing
    except ImportError:
        raise MTZError("the jax backend needs JAX: pip install -e .[jax] (or .[jax-cuda] on an NVIDIA GPU)") from None


def active() -> str:
    """The backend Keras runs on (importing Keras on the requested one if it has not started)."""
    import keras

    return keras.config.backend()


def ops_for(name: str):
    """The forward-pass ops of backend ``name`` (see graph/ops.py and graph/keras_ops.py)."""
    if name == "tensorflow":
        from mtz_mobile.graph.ops import TFOps

        return TFOps()
    from mtz_mobile.graph.keras_ops import KerasOps

    return KerasOps()


def host_array(value):
    """``value`` as a numpy array that numpy allocated: a backend tensor is copied out, not viewed.
    OpenBLAS's products over a view of XLA's buffer are slower than over a copy: the Hessians'
    float32 GEMM of a 200,000 × 144 array took 0.080–0.104 s of CPU against 0.073–0.078 s (medians
    of 6, three runs; a TensorFlow buffer 0.087 against 0.078), and the zipper reads each cached
    value in several such products; the copy is one pass. (Not huge pages: neither had any.)"""
    import numpy as np

    return value if isinstance(value, np.ndarray) else np.array(value)


def device_kind(name: str) -> str:
    """"GPU" where the backend sees one, else "CPU"."""
    if name == "tensorflow":
        import tensorflow as tf

        return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    import jax

    return "GPU" if jax.default_backend() == "gpu" else "CPU"
