"""The zipper on Keras' JAX backend, without TensorFlow, against the TensorFlow path: the same
zips (the unzipped pair, a permuted copy at full sharing, a retrained zip), read back here — in a
TensorFlow process, as a machine that converts them would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtz_mobile.errors import MTZError
from mtz_mobile.api import zip_models
from mtz_mobile.graph.keras_io import load_keras_model
from mtz_mobile.zipper.plan import load_zip_dir

pytest.importorskip("jax", reason="the JAX backend's tests need JAX: pip install -e .[dev] (it includes .[jax])")

sys.path.insert(0, str(Path(__file__).parent))
from backend_job import RETRAINED  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", **extra)
    env.pop("KERAS_BACKEND", None)
    return {**env, **extra}


@pytest.fixture(scope="module")
def jax_zips(small_models, permuted_pair, tmp_path_factory):
    out = tmp_path_factory.mktemp("jax")
    job = [sys.executable, str(ROOT / "tests" / "backend_job.py"), *map(str, small_models), *map(str, permuted_pair),
           str(out)]
    run = subprocess.run(job, env=_env(MTZ_DEVICE_LINALG="1"), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return out, json.loads((out / "result.json").read_text())


def relative(a, b) -> float:
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


def test_a_jax_zip_never_imports_tensorflow(jax_zips):
    """It ran where importing TensorFlow fails; none of our code tried (Keras' own optional probe may)."""
    _, result = jax_zips
    assert result["backend"] == "jax"
    assert result["attempts_by_us"] == [] and not result["tensorflow_loaded"]


def test_keras_ops_equal_the_numpy_reference(jax_zips):
    _, result = jax_zips
    worst = max(result["ops"], key=result["ops"].get)
    assert result["ops"][worst] <= 1e-5, worst


def test_device_linear_algebra_equals_the_hosts(jax_zips):
    """The GPU's path (device_math, here on JAX's CPU device; the zips above took it too)."""
    _, result = jax_zips
    linalg = result["linalg"]
    assert linalg.pop("refuses_indefinite") is True
    assert linalg["product float32"] <= 1e-6 and linalg["product float64"] <= 1e-12
    assert linalg["cholesky"] <= 1e-10 and linalg["cho_solve"] <= 1e-10


def test_unzipped_network_reproduces_both_originals_on_jax(jax_zips, small_models, fmnist):
    out, _ = jax_zips
    zipped = load_zip_dir(out / "unzipped")     # read back in this TensorFlow process
    assert zipped.plan.params["shared"] == 0
    for task, path in zip(("a", "b"), small_models):
        expected = load_keras_model(path).predict(fmnist.x_test, verbose=0)
        assert relative(zipped.network.predict(task, fmnist.x_test), expected) <= 1e-5


def test_permuted_copy_zips_back_exactly_on_jax(jax_zips, permuted_pair, fmnist):
    out, _ = jax_zips
    zipped = load_zip_dir(out / "permuted")
    expected = load_keras_model(permuted_pair[0]).predict(fmnist.x_test, verbose=0)
    for task in ("a", "b"):
        assert relative(zipped.network.predict(task, fmnist.x_test), expected) <= 1e-5
    rng = np.random.default_rng(5)   # the permutation the fixture made the copy with
    for record, p in zip(zipped.plan.layers, [rng.permutation(48), rng.permutation(24)]):
        assert record.n_shared == len(p) and all(p[j] == i for i, j, _ in record.pairs)


def test_retrained_zip_agrees_with_tensorflows(jax_zips, small_models, fmnist):
    """Same pairs, same seeded batches, Keras' Adam on both: the zips differ by float32 rounding
    (other kernels and summation orders) grown over 30 steps per layer, not by what they learn.
    Measured: blocks within 1.6e-4 relative, probabilities within 9.2e-4, test errors 0.00 / 0.05 pp
    apart, last losses within 4e-6 relative."""
    out, _ = jax_zips
    on_jax = load_zip_dir(out / "retrained")
    on_tf = zip_models([str(p) for p in small_models], None, data={"a": fmnist, "b": fmnist}, names=["a", "b"],
                       progress=False, backend="tensorflow", **RETRAINED)
    for mine, theirs in zip(on_jax.plan.layers, on_tf.plan.layers):
        assert [p[:2] for p in mine.pairs] == [p[:2] for p in theirs.pairs]
        assert mine.retrain["backend"] == "jax" and theirs.retrain["backend"] == "tensorflow"
        for t in ("a", "b"):
            assert mine.retrain["loss_last"][t] == pytest.approx(theirs.retrain["loss_last"][t], rel=1e-3)
    for task in ("a", "b"):
        p_jax, p_tf = on_jax.network.predict(task, fmnist.x_test), on_tf.network.predict(task, fmnist.x_test)
        assert np.abs(p_jax - p_tf).max() <= 0.01
        errors = [np.mean(np.argmax(p, -1) != fmnist.y_test) for p in (p_jax, p_tf)]
        assert abs(errors[0] - errors[1]) <= 0.003   # 6 of the 2,000 test images


def test_keras_on_another_backend_is_refused_in_one_line():
    """This process's Keras runs on TensorFlow: a zip asking for JAX cannot switch it."""
    import keras  # noqa: F401 — started on TensorFlow, as everywhere in this suite

    from mtz_mobile.backend import activate

    with pytest.raises(MTZError, match="already runs on tensorflow.*KERAS_BACKEND=jax") as info:
        activate("jax")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("args, env, expected", [
    (["--backend", "jax", "--strategy", "mirrored"], {}, "TensorFlow only"),
    ([], {"KERAS_BACKEND": "torch"}, "KERAS_BACKEND=torch is not one the zipper runs on"),
])
def test_bad_backend_input_ends_in_one_line(small_models, tmp_path, args, env, expected):
    out = tmp_path / "zip"
    run = subprocess.run([sys.executable, "-m", "mtz_mobile.cli", "zip", *map(str, small_models), "--out", str(out),
                          *args], env=_env(**env), capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], run.stderr
    assert not out.exists() and not out.with_name("zip.partial").exists()
