"""Where the zipper's heavy linear algebra runs: the GEMMs of the Hessians and of the refits, and
the Cholesky factorisations and solves of S — numpy/scipy on the host, or, when the zip runs on
Keras' JAX backend and JAX sees a GPU, that GPU.

On a CPU the host's BLAS/LAPACK are at least as fast as XLA's and need no copies, so the host keeps
them; on a GPU one 4,609-wide conv layer's Gram over 98,000 instances is a fraction of a second
instead of ~10 s on two cores. The device computes in the same precision as the host: float32
products at full float32 precision (``Precision.HIGHEST``: no TF32), float64 where the host uses
float64 (the S-form's rank-deficient Hessians, every factorisation), with JAX's 64-bit mode on
for those calls only. Results come back as numpy arrays, so nothing downstream changes.
"""

from __future__ import annotations

import os

import numpy as np

_STATE = {"device": False}


def use(backend: str) -> bool:
    """Route the heavy linear algebra to the GPU where ``backend`` is jax and JAX sees one
    (MTZ_DEVICE_LINALG=1 forces the device path on any JAX device, =0 keeps the host's)."""
    forced = os.environ.get("MTZ_DEVICE_LINALG")
    if backend != "jax" or forced == "0":
        _STATE["device"] = False
    else:
        import jax

        _STATE["device"] = forced == "1" or jax.default_backend() == "gpu"
        if _STATE["device"]:
            # the calibration passes' convolutions too: a GPU's default for float32 is TF32 (10-bit
            # mantissas); retraining opts back into it (retrain_jax)
            jax.config.update("jax_default_matmul_precision", "highest")
    return _STATE["device"]


def on_device() -> bool:
    return _STATE["device"]


def product_tn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """aᵀ b in the arrays' own precision (both float32 or both float64)."""
    if not _STATE["device"]:
        return a.T @ b
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(a.dtype == np.float64):
        out = jnp.matmul(jnp.asarray(a).T, jnp.asarray(b), precision=jax.lax.Precision.HIGHEST)
        return np.asarray(out)


def cholesky(s: np.ndarray) -> np.ndarray | None:
    """The lower Cholesky factor of a float64 S on the device (None on the host: the caller's
    blocked LAPACK factorisation then runs). Raises numpy's LinAlgError where S is not positive
    definite, as LAPACK does."""
    if not _STATE["device"]:
        return None
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        factor = np.asarray(jnp.linalg.cholesky(jnp.asarray(s, jnp.float64)))
    if not np.isfinite(factor.sum()):   # XLA's potrf returns NaN where LAPACK would raise
        raise np.linalg.LinAlgError("S is not positive definite")
    return factor


def cho_solve(factor: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """S⁻¹ B from S's lower factor, on the device (None on the host)."""
    if not _STATE["device"]:
        return None
    import jax
    import jax.numpy as jnp
    from jax.scipy.linalg import cho_solve as solve

    with jax.enable_x64(True):
        return np.asarray(solve((jnp.asarray(factor, jnp.float64), True), jnp.asarray(b, jnp.float64)))
