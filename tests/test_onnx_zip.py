"""ONNX models through the whole tool, as Keras models go: a permuted copy zips back exactly and
shares every block; two different ONNX nets (Conv → depthwise → 1×1 Conv → pool to 3×3 →
Flatten → Dense → Dense, widths differing) deploy (zip with retraining, one multi-signature
.tflite whose manifest names the sources, host bench, evaluate against onnxruntime); a Keras model
and an ONNX model of the same input zip together. Outputs are checked against onnxruntime on the
ONNX files (NCHW) and LiteRT on the converted file (NHWC)."""

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install -e .[dev]")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e .[dev]")

from converters.flatbuffer import load_model as read_tflite  # noqa: E402
from converters.manifest import read_manifest  # noqa: E402
from mtz_mobile.fileio import sha256_of  # noqa: E402
from mtz_mobile.graph.model_files import read_model  # noqa: E402
from mtz_mobile.litert_runtime import make_interpreter  # noqa: E402
from mtz_mobile.zipper import ZipConfig, zip_networks  # noqa: E402
from mtz_mobile.zipper.config import RetrainSettings  # noqa: E402
from onnx_builders import conv_chain, fit_head, mlp, save  # noqa: E402

NO_RETRAIN = RetrainSettings(iterations=0)


def onnxruntime_outputs(path, x_nhwc):
    """The ONNX model on NHWC samples (the data specs' layout) fed as NCHW."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": np.asarray(x_nhwc, np.float32).reshape(len(x_nhwc), 28, 28, 1)
                              .transpose(0, 3, 1, 2)})[0]


def rel_err(ours, ref) -> float:
    return float(np.max(np.abs(np.asarray(ours, np.float64) - ref)) / np.max(np.abs(ref)))


def test_permuted_copy_zips_back_exactly_and_shares_every_block(tmp_path, fmnist):
    rng = np.random.default_rng(7)
    perms = (rng.permutation(8), rng.permutation(12), rng.permutation(16))
    orig = save(conv_chain(seed=5), tmp_path / "orig.onnx")
    perm = save(conv_chain(seed=5, perms=perms), tmp_path / "perm.onnx")
    cfg = ZipConfig(compensation="none", retrain=NO_RETRAIN, calibration_samples=200)
    result = zip_networks({"a": read_model(orig), "b": read_model(perm)}, {"a": fmnist, "b": fmnist}, cfg,
                          progress=False)
    x = fmnist.x_test[:200]
    expected = onnxruntime_outputs(orig, x)
    np.testing.assert_allclose(onnxruntime_outputs(perm, x), expected, rtol=1e-4, atol=1e-5)   # the same function
    for task in ("a", "b"):
        assert rel_err(result.network.predict(task, x), expected) <= 1e-4
    layer_perms = (perms[0], perms[0], perms[1], perms[2])   # the depthwise layer follows its input's order
    assert [r.kind for r in result.plan.layers] == ["conv2d", "depthwise", "conv2d", "dense"]
    for record, p in zip(result.plan.layers, layer_perms):   # the pairs undo the permutations
        assert record.n_shared == len(p)
        assert all(p[j] == i for i, j, _ in record.pairs)
    net = result.network
    hidden = [i for i in net.weight_nodes() if i != net.output]
    assert len(hidden) == 4   # conv, depthwise, 1×1 conv, dense
    for i in hidden:
        owners = {o for _, _, o in net.nodes[i].kernels} | {o for _, o in net.nodes[i].biases}
        assert owners == {("a", "b")}, net.nodes[i].name


@pytest.fixture(scope="module")
def onnx_pair_deployed(tmp_path_factory, fmnist):
    """Zipped through the API (with retraining), converted with the joint signature and the
    baselines, benched on the host: deploy's stages, with one memory repeat to keep it short."""
    from converters import convert_zip
    from mtz_mobile.api import zip_models
    from mtz_mobile.bench import HostSettings, bench

    root = tmp_path_factory.mktemp("onnx_pair")
    x = fmnist.x_train[:2000, None]   # NCHW, as the zipper feeds the data (NHWC) to the NHWC network
    # random features, the classifier fitted in closed form: originals well above chance (40 % error)
    paths = [save(fit_head(conv_chain(seed=s, widths=w, grid=3), x, fmnist.y_train[:2000]), root / f"{n}.onnx")
             for n, s, w in (("a", 2, (8, 12, 24)), ("b", 3, (6, 10, 16)))]
    zip_models(paths, root / "zip", data={"a": fmnist, "b": fmnist}, progress=False, retrain_iterations=4,
               retrain_batch_size=32, retrain_schedule="end", calibration_samples=300, shared=[0.5])
    conversion = convert_zip(root / "zip", root / "model.tflite", joint=True, baselines=True)
    baselines = sorted(root.glob("model.baseline_*.tflite"))
    report = bench(conversion.path, baselines, settings=HostSettings(runs=3, memory_repeats=1), out_dir=root / "bench",
                   progress=False)
    return paths, root, report


def test_onnx_pair_deploys_to_one_file_naming_its_sources(onnx_pair_deployed, fmnist):
    paths, root, report = onnx_pair_deployed
    model = root / "model.tflite"
    manifest = read_manifest(read_tflite(model))
    assert [t["source"] for t in manifest["tasks"]] == [
        {"file": f"{n}.onnx", "sha256": sha256_of(p), "format": "onnx", "input_layout": "NCHW"}
        for n, p in zip("ab", paths)]
    assert [t["input"]["shape"] for t in manifest["tasks"]] == [[1, 28, 28, 1]] * 2
    assert manifest["sharing"]["shared_params"] > 0
    zipdir_sources = root / "zip" / "sources"
    assert sorted(p.name for p in zipdir_sources.iterdir()) == ["a.onnx", "b.onnx"]
    # the file computes what the retrained zipped network computes, task by task
    from mtz_mobile.zipper.plan import load_zip_dir

    net = load_zip_dir(root / "zip").network
    interpreter = make_interpreter(str(model))
    x = fmnist.x_test[:20]
    for task in ("a", "b"):
        runner = interpreter.get_signature_runner(task)
        out = np.concatenate([runner(input=x[i].reshape(1, 28, 28, 1))["output"] for i in range(len(x))])
        assert rel_err(out, net.predict(task, x)) <= 1e-4
    assert report["model"]["sha256"] == sha256_of(model)
    assert json.loads((root / "bench" / "report.json").read_text())["model"]["sha256"] == sha256_of(model)
    assert sorted(b["sha256"] for b in report["baselines"]) == sorted(
        sha256_of(p) for p in root.glob("model.baseline_*.tflite"))


def test_evaluate_runs_the_onnx_originals_in_onnxruntime(onnx_pair_deployed, fmnist):
    from mtz_mobile.data import error_rate
    from mtz_mobile.zipper.evaluate import evaluate_zip
    from mtz_mobile.zipper.plan import load_zip_dir

    paths, root, _ = onnx_pair_deployed
    results = evaluate_zip(load_zip_dir(root / "zip"), {"a": fmnist, "b": fmnist}, limit=200)
    for r, path in zip(results, paths):
        assert r.original_error == error_rate(onnxruntime_outputs(path, fmnist.x_test[:200]), fmnist.y_test[:200])


def test_keras_and_onnx_models_of_one_input_zip_together(tmp_path, fmnist, small_models):
    """A Keras MLP on (28, 28) and an ONNX MLP on (1, 28, 28): one joint input, shared units, and
    with nothing shared each task computes its original exactly."""
    from mtz_mobile.graph.keras_io import load_keras_model

    keras_path = small_models[0]
    onnx_path = save(mlp(seed=12), tmp_path / "o.onnx")
    models = {"k": read_model(keras_path), "o": read_model(onnx_path)}
    data = {"k": fmnist, "o": fmnist}
    x = fmnist.x_test[:300]
    none = zip_networks(models, data, ZipConfig(shared=[0], retrain=NO_RETRAIN, calibration_samples=200),
                        progress=False).network
    assert rel_err(none.predict("k", x), load_keras_model(keras_path).predict(x, verbose=0)) <= 1e-4
    assert rel_err(none.predict("o", x), onnxruntime_outputs(onnx_path, x)) <= 1e-4
    result = zip_networks(models, data, ZipConfig(shared=[0.5], retrain=NO_RETRAIN, calibration_samples=200),
                          tmp_path / "zip", progress=False)
    assert [(t.source, t.sha256) for t in result.plan.tasks] == [("k.keras", sha256_of(keras_path)),
                                                                 ("o.onnx", sha256_of(onnx_path))]
    assert sorted(p.name for p in (tmp_path / "zip" / "sources").iterdir()) == ["k.keras", "o.onnx"]
    assert result.plan.params["shared"] > 0 and result.network.input_shape == (28, 28, 1)


def test_onnx_pair_serves_in_the_browser_page(onnx_pair_deployed, tmp_path):
    """The page (LiteRT.js in chromium) on the ONNX pair's file: every signature's outputs equal
    the host's LiteRT on the same pixels."""
    from test_browser import assert_matches_host, require_browser, sample_pixels, served_pages

    require_browser()
    _, root, _ = onnx_pair_deployed
    model = root / "model.tflite"
    manifest = read_manifest(read_tflite(model))
    steps = [{"task": key, "sample": i} for key in ("a", "b", "all") for i in (0, 1)]
    (page,) = served_pages(tmp_path, [(model, steps)])
    assert page["state"] == "ready" and page["pageErrors"] == [], page.get("error")
    assert len(page["steps"]) == len(steps), page.get("driverError")
    for step, want in zip(page["steps"], steps):
        assert_matches_host(model, manifest, step, want["task"], sample_pixels(want["sample"]))
