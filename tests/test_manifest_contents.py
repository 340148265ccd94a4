"""The manifest embedded in a converted file says what the file and the zip are: each signature's
tensors as LiteRT itself reports them, each task's labels, preprocessing and source file (its
sha256 computed here), the sharing counts of the zip's plan. Two tiny vector-input MLPs with
random weights, zipped and converted in seconds (test_converter.py does the same on trained models)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from converters import convert_zip
from converters import flatbuffer as fb
from converters import manifest as mf
from mtz_mobile.contract import MANIFEST_METADATA
from mtz_mobile.data import TaskData
from mtz_mobile.errors import MTZError
from mtz_mobile.graph.keras_io import read_model
from mtz_mobile.litert_runtime import make_interpreter
from mtz_mobile.reference import build_mlp
from mtz_mobile.zipper import ZipConfig, zip_networks
from mtz_mobile.zipper.config import RetrainSettings
from mtz_mobile.zipper.plan import load_zip_dir


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("manifest")
    rng = np.random.default_rng(0)
    paths = {}
    for task, seed, classes in (("a", 1, 3), ("b", 2, 4)):
        model = build_mlp((20,), (16,), classes)
        r = np.random.default_rng(seed)
        model.set_weights([r.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
        paths[task] = root / f"{task}.keras"
        model.save(paths[task])
    x = rng.random((120, 20), dtype=np.float32)
    data = {t: TaskData("npz:synthetic", x, rng.integers(0, n, 120), x[:10], rng.integers(0, n, 10),
                        [f"{t}{c}" for c in range(n)], preprocessing={"scale": 1 / s, "mean": m})
            for t, n, s, m in (("a", 3, 255.0, 0.0), ("b", 4, 127.5, 127.5))}
    cfg = ZipConfig(shared=[8], compensation="none", retrain=RetrainSettings(iterations=0), calibration_samples=120)
    zip_networks({t: read_model(p) for t, p in paths.items()}, data, cfg, out_dir=root / "zip", progress=False)
    result = convert_zip(root / "zip", root / "m.tflite", joint=True)
    return result, load_zip_dir(root / "zip").plan, paths


def test_the_manifest_describes_the_file_and_the_zip(converted):
    result, plan, paths = converted
    manifest = mf.read_manifest(fb.load_model(result.path))
    assert manifest == result.manifest
    assert (manifest["format"], manifest["version"], manifest["quantization"], manifest["baselines"]) == (
        "mtz-mobile/manifest", 1, "none", None)
    interp = make_interpreter(result.path, xnnpack=False)
    for task in manifest["tasks"]:
        name = task["name"]
        runner = interp.get_signature_runner(task["signature_key"])
        ((in_name, inp),), ((out_name, out),) = runner.get_input_details().items(), runner.get_output_details().items()
        assert task["input"] == {"name": in_name, "shape": inp["shape"].tolist(), "dtype": np.dtype(inp["dtype"]).name,
                                 "layout": "N"}
        assert task["output"] == {"name": out_name, "shape": out["shape"].tolist(), "dtype": "float32",
                                  "activation": "softmax"}
        assert task["output"]["shape"] == [1, {"a": 3, "b": 4}[name]]
        assert task["labels"] == [f"{name}{c}" for c in range({"a": 3, "b": 4}[name])]
        assert task["preprocessing"] == {"a": {"scale": 1 / 255.0, "mean": 0.0}, "b": {"scale": 1 / 127.5, "mean": 127.5}}[name]
        assert task["source"] == {"file": paths[name].name, "sha256": hashlib.sha256(paths[name].read_bytes()).hexdigest(),
                                  "format": "keras"}
    joint = manifest["joint"]
    runner = interp.get_signature_runner("all")
    assert joint["signature_key"] == "all" and joint["input"]["layout"] == "N"
    assert joint["input"]["shape"] == next(iter(runner.get_input_details().values()))["shape"].tolist()
    assert sorted((o["task"], o["name"], tuple(o["shape"])) for o in joint["outputs"]) == sorted(
        (n, n, tuple(d["shape"].tolist())) for n, d in runner.get_output_details().items())
    sharing, p = manifest["sharing"], plan.params
    assert (sharing["separate_params"], sharing["zipped_params"], sharing["shared_params"]) == (
        p["separate_total"], p["zipped"], p["shared"])
    assert sharing["shared_params"] == 8 * (20 + 1)   # 8 merged units of a 20-input layer, with their biases
    assert sharing["shared_fraction"] == p["shared_fraction"] and sharing["shared_fraction_definition"]
    assert sharing["layers"] == [{"name": l.name, "kind": l.kind, "n_shared": l.n_shared, "units": dict(l.units)}
                                 for l in plan.layers]
    assert sharing["layers"][0]["n_shared"] == 8
    layout = result.layout
    assert sharing["file"] == {"weight_bytes": layout.weight_bytes, "shared_weight_bytes": layout.shared_weight_bytes,
                               "task_weight_bytes": dict(layout.task_weight_bytes),
                               "duplicated_bytes": layout.duplicated_bytes}
    assert sharing["file"]["shared_weight_bytes"] == 4 * sharing["shared_params"]


def test_the_input_layout_follows_the_rank():
    assert [mf._layout(s) for s in ([1, 20], [1, 28, 28], [1, 28, 28, 3], [1], [1, 2, 3, 4, 5])] == [
        "N", "HW", "HWC", "N", "N"]


def test_an_onnx_source_names_the_layout_its_users_feed():
    """The file's signatures take NHWC; an ONNX model's users feed NCHW images (NC vectors), so its
    source entry says so. A Keras source needs no such note."""
    assert mf._source("a.onnx", "ab", 3) == {"file": "a.onnx", "sha256": "ab", "format": "onnx", "input_layout": "NCHW"}
    assert mf._source("a.onnx", "ab", 1)["input_layout"] == "NC"
    assert "input_layout" not in mf._source("a.keras", "ab", 3)


@pytest.mark.parametrize("payload, message", [
    (b"\xff\xfe", "the embedded manifest is not JSON (UnicodeDecodeError): convert the model again"),
    (b"{", "the embedded manifest is not JSON (JSONDecodeError): convert the model again"),
    (b"[1]", "the embedded mtz_manifest has an unknown format: convert the model again"),
    (b'{"format": "other"}', "the embedded mtz_manifest has an unknown format: convert the model again"),
])
def test_a_damaged_manifest_is_refused_in_one_line(converted, payload, message):
    model = fb.load_model(converted[0].path)
    fb.set_metadata(model, MANIFEST_METADATA, payload)
    with pytest.raises(MTZError) as err:
        mf.read_manifest(model)
    assert str(err.value) == message


def test_a_manifest_that_breaks_its_schema_is_refused_before_anything_reads_it(converted):
    model = fb.load_model(converted[0].path)
    manifest = json.loads(fb.get_metadata(model, MANIFEST_METADATA))
    del manifest["tasks"][0]["labels"]
    fb.set_metadata(model, MANIFEST_METADATA, json.dumps(manifest).encode())
    with pytest.raises(MTZError, match=r"^the embedded manifest.*labels.*: convert the model again$"):
        mf.read_manifest(model)
    model.metadata = [m for m in model.metadata if fb.decode(m.name) != MANIFEST_METADATA]
    assert mf.read_manifest(model) is None
