"""Zips on Keras' JAX backend in a process where TensorFlow cannot be imported, as on a GPU machine
without it (tests/test_backends.py compares the zips with TensorFlow's).

    python tests/backend_job.py A.keras B.keras ORIG.keras PERM.keras OUT

writes OUT/unzipped, OUT/permuted, OUT/retrained (zip directories) and OUT/result.json: the
imports of tensorflow that our code attempted (Keras 3 itself probes for it, an optional import),
Keras' backend, and the largest relative difference of KerasOps from the numpy reference ops and
of device_math's linear algebra from numpy/scipy's. Run with MTZ_DEVICE_LINALG=1, the zips take the
GPU's linear-algebra path on JAX's CPU device.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import sys
import traceback

ATTEMPTS: list[str] = []


class NoTensorFlow(importlib.abc.MetaPathFinder):
    """``import tensorflow`` fails, as where it is not installed; records who asked."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            frames = [f for f in traceback.extract_stack() if "importlib" not in f.filename and f.filename != __file__]
            ATTEMPTS.append(f"{frames[-1].filename}:{frames[-1].lineno}")
            raise ImportError("TensorFlow is not installed here")
        return None


def ops_differences() -> dict[str, float]:
    """KerasOps against NumpyOps (plain loops over kernel positions) on a map with odd sizes."""
    import numpy as np

    from mtz_mobile.graph.keras_ops import KerasOps
    from mtz_mobile.graph.ops import NumpyOps

    import keras

    fast, slow, rng = KerasOps(), NumpyOps(), np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 11, 4)).astype(np.float32)
    on_device = keras.ops.convert_to_tensor(x)   # the jitted patches (a numpy map's are numpy's on a CPU)
    w, wd = rng.standard_normal((3, 3, 4, 5)).astype(np.float32), rng.standard_normal((3, 3, 4)).astype(np.float32)
    out = {}
    for padding in ("same", "valid"):
        for strides, dilation in (([1, 1], [1, 1]), ([2, 2], [1, 1]), ([2, 1], [1, 1]), ([1, 1], [2, 2])):
            conv = dict(kernel_size=[3, 3], strides=strides, padding=padding, dilation=dilation)
            pool = dict(pool_size=[3, 3], strides=strides, padding=padding)
            for name, a, b in (("conv", fast.conv(x, w, conv), slow.conv(x, w, conv)),
                               ("depthwise", fast.depthwise(x, wd, conv), slow.depthwise(x, wd, conv)),
                               ("patches", fast.patches(x, conv), slow.patches(x, conv)),
                               ("patches of a tensor", fast.patches(on_device, conv), slow.patches(x, conv)),
                               ("maxpool", fast.pool("maxpool", x, pool), slow.pool("maxpool", x, pool)),
                               ("avgpool", fast.pool("avgpool", x, pool), slow.pool("avgpool", x, pool))):
                a, b = np.asarray(a), np.asarray(b)
                assert a.shape == b.shape, (name, padding, strides, a.shape, b.shape)
                key = f"{name} {padding} s{strides} d{dilation}"
                out[key] = float(np.abs(a - b).max() / np.abs(b).max())
    for act in ("relu", "relu6", "tanh", "sigmoid", "hard_sigmoid", "hard_silu", "silu", "gelu", "softmax"):
        a, b = np.asarray(fast.activation(act, 3 * x)), slow.activation(act, 3 * x)
        out[act] = float(np.abs(a - b).max() / np.abs(b).max())
    return out


def linalg_differences() -> dict:
    """device_math's GEMMs, factorisation and solve (forced onto JAX's device) against numpy/scipy's,
    and whether a matrix that is not positive definite is refused as LAPACK refuses it."""
    import numpy as np
    from scipy.linalg import cho_solve, cholesky

    from mtz_mobile.zipper import device_math

    assert device_math.on_device()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 40))
    s = x.T @ x + np.eye(40)
    b = rng.standard_normal((40, 3))
    out = {}
    for dtype in (np.float32, np.float64):
        got, want = device_math.product_tn(x.astype(dtype), x.astype(dtype)), x.astype(dtype).T @ x.astype(dtype)
        out[f"product {np.dtype(dtype).name}"] = float(np.abs(got - want).max() / np.abs(want).max())
        assert got.dtype == dtype
    factor = device_math.cholesky(s)
    out["cholesky"] = float(np.abs(factor - cholesky(s, lower=True)).max())
    out["cho_solve"] = float(np.abs(device_math.cho_solve(factor, b) - cho_solve((factor, True), b)).max())
    try:
        device_math.cholesky(s - 2 * np.eye(40) * np.abs(s).max())
        out["refuses_indefinite"] = False
    except np.linalg.LinAlgError:
        out["refuses_indefinite"] = True
    return out


def main(a: str, b: str, orig: str, perm: str, out: str) -> int:
    sys.meta_path.insert(0, NoTensorFlow())
    from mtz_mobile.api import zip_models
    from mtz_mobile.data import load_task_data

    d = load_task_data("fashion-mnist").head(4000, 2000)
    data = {"a": d, "b": d}
    common = dict(data=data, names=["a", "b"], progress=False, backend="jax")
    zip_models([a, b], os.path.join(out, "unzipped"), shared=[0], retrain_iterations=0, calibration_samples=1000,
               **common)
    zip_models([orig, perm], os.path.join(out, "permuted"), compensation="none", retrain_iterations=0,
               calibration_samples=2000, **common)
    zip_models([a, b], os.path.join(out, "retrained"), **RETRAINED, **common)
    import keras

    result = {"attempts_by_us": [s for s in ATTEMPTS if "mtz_mobile" in s], "attempts": ATTEMPTS,
              "tensorflow_loaded": "tensorflow" in sys.modules, "backend": keras.config.backend(),
              "ops": ops_differences(), "linalg": linalg_differences()}
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f)
    return 0


# the retrained zip's settings, shared with the test that zips the same under TensorFlow
RETRAINED = dict(shared=["all"], calibration_samples=1000, retrain_iterations=30, retrain_learning_rate=1e-3,
                 retrain_schedule="layer", retrain_learning_rate_schedule="constant", retrain_distill=0.5, seed=0)

if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
