"""ONNX models (what torch.onnx.export writes) read into the network representation: each task's
path, unzipped, computes what onnxruntime computes on the ONNX file — with numpy ops and through
LiteRT on the converted file (NHWC in, the ONNX model NCHW) — and bad files end in one line.

The models are built in the test with onnx.helper in torchvision's shapes (tests/onnx_builders.py):
random weights and BatchNorm statistics far from the identity, so folding is really exercised.
"""

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install -e .[dev]")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e .[dev]")

from onnx import helper  # noqa: E402

from mtz_mobile.errors import MTZError  # noqa: E402
from mtz_mobile.graph.model_files import read_model  # noqa: E402
from mtz_mobile.graph.network import ZippedNetwork  # noqa: E402
from mtz_mobile.litert_runtime import make_interpreter  # noqa: E402
from onnx_builders import OnnxNet, mlp, mobilenet_like, resnet_like, save  # noqa: E402
from test_mobile_graphs import rel_err, to_tflite  # noqa: E402

TOL = 1e-4
DATA = Path(__file__).parent / "data" / "onnx"


def onnxruntime_outputs(path, x_nchw):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x_nchw})[0]


@pytest.mark.parametrize("build", [mobilenet_like, resnet_like])
def test_unzipped_network_through_litert_equals_onnxruntime(build, tmp_path):
    """MobileNetV2/V3/EfficientNet blocks (stride-2 depthwise with PyTorch's padding, SE, ReLU6,
    SiLU, HardSwish) and ResNet's (max pool with padding, stride-2 shortcut, Flatten of a 2×2 map)."""
    path = save(build(seed=3), tmp_path / "m.onnx")
    x = np.random.default_rng(0).normal(0, 1, (6, 3, 20, 20)).astype(np.float32)
    ref = np.asarray(onnxruntime_outputs(path, x), np.float64)
    net = ZippedNetwork.from_models({"a": read_model(path)})
    x_nhwc = x.transpose(0, 2, 3, 1)
    assert rel_err(net.predict("a", x_nhwc), ref) <= TOL
    data, _ = to_tflite(net)
    runner = make_interpreter(model_content=data).get_signature_runner("a")
    out = np.concatenate([runner(input=x_nhwc[i:i + 1])["output"] for i in range(len(x))])
    assert rel_err(out, ref) <= TOL


@pytest.mark.parametrize("name", ["mobilenet_torch", "resnet_torch"])
def test_real_torch_exports_read_as_onnxruntime_runs_them(name):
    """Files torch.onnx.export wrote (tests/data/onnx/make_fixtures.py: torch.nn stacks in
    torchvision's shapes, opset 17): numpy and LiteRT on the unzipped network against onnxruntime."""
    path = DATA / f"{name}.onnx"
    x = np.random.default_rng(2).normal(0, 1, (4, 1, 28, 28)).astype(np.float32)
    ref = np.asarray(onnxruntime_outputs(path, x), np.float64)
    net = ZippedNetwork.from_models({"a": read_model(path)})
    x_nhwc = x.transpose(0, 2, 3, 1)
    assert rel_err(net.predict("a", x_nhwc), ref) <= TOL
    runner = make_interpreter(model_content=to_tflite(net)[0]).get_signature_runner("a")
    out = np.concatenate([runner(input=x_nhwc[i:i + 1])["output"] for i in range(len(x))])
    assert rel_err(out, ref) <= TOL


def test_normalisation_inside_the_export_becomes_the_tasks_preprocessing(tmp_path):
    """torchvision's Normalize wrapped into the exported model: (x - mean) / std per channel, then
    the net; read as one rescale node, the network computes what onnxruntime computes."""
    n = OnnxNet((3, 12, 12), seed=6)
    mean = n.weight(np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1), "mean")
    std = n.weight(np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1), "std")
    x = n.node("Div", [n.node("Sub", ["input", mean]), std])
    x = n.conv(x, 3, 8, k=3, s=2, act="Relu")
    path = save(n.model(n.head(x, 8, 5)), tmp_path / "normalised.onnx")
    parsed = read_model(path)
    assert [node.op for node in parsed.nodes[:3]] == ["input", "rescale", "zeropad"]
    x = np.random.default_rng(1).random((5, 3, 12, 12), np.float32)
    net = ZippedNetwork.from_models({"a": parsed})
    assert rel_err(net.predict("a", x.transpose(0, 2, 3, 1)), onnxruntime_outputs(path, x)) <= TOL


def test_flatten_of_a_wide_map_reorders_the_dense_rows(tmp_path):
    """NCHW flattening is channel-major, NHWC position-major: the Dense rows follow (resnet_like's
    head flattens a 2×2×16 map): the row for (position p, channel c) is ONNX's row c·4 + p."""
    path = save(resnet_like(seed=4), tmp_path / "m.onnx")
    parsed = read_model(path)
    dense = parsed.nodes[-1]
    flat_src = parsed.nodes[parsed.nodes[dense.inputs[0]].inputs[0]]
    assert dense.op == "dense" and flat_src.out_shape == (2, 2, 16)
    graph = onnx.load(path).graph
    w = onnx.numpy_helper.to_array(next(t for t in graph.initializer if t.name == graph.node[-1].input[1])).T
    for p, c in ((1, 5), (3, 0), (2, 15)):
        np.testing.assert_array_equal(dense.kernel[p * 16 + c], w[c * 4 + p])


def _bad_models(tmp_path) -> dict:
    good = mlp(seed=1)
    paths = {}
    n = OnnxNet((1, 28, 28))
    x = n.node("Flatten", ["input"], axis=1)
    x = n.node("LeakyRelu", [n.dense(x, 784, 16)], alpha=0.1)
    paths["op"] = save(n.model(n.dense(x, 16, 10)), tmp_path / "leaky.onnx")
    n = OnnxNet((1, 28, 28))
    x = n.node("Relu", [n.dense(n.node("Flatten", ["input"], axis=1), 784, 16)])
    x = n.node("Sub", [x, n.weight(np.full(16, 0.5), "shift")])
    paths["sub"] = save(n.model(n.dense(x, 16, 10)), tmp_path / "sub.onnx")
    dynamic = mlp(seed=1)
    dynamic.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    paths["dynamic"] = save(dynamic, tmp_path / "dynamic.onnx")
    data = good.SerializeToString()
    (tmp_path / "truncated.onnx").write_bytes(data[:len(data) // 2])
    paths["truncated"] = str(tmp_path / "truncated.onnx")
    old = mlp(seed=1)
    old.opset_import[0].version = 11
    paths["opset"] = save(old, tmp_path / "old.onnx")
    paths["good"] = save(good, tmp_path / "good.onnx")
    return paths


BAD = [("op", r"unsupported ONNX op LeakyRelu \(node '/block\d+/LeakyRelu'\)"),
       ("sub", r"Sub node '/block\d+/Sub' is supported only as input preprocessing"),
       ("dynamic", r"dynamic size on axis 2 \(height\)"),
       ("truncated", r"truncated or damaged"),
       ("opset", r"opset 11: .* opset 13 or newer")]


@pytest.mark.parametrize("case,pattern", BAD)
def test_bad_onnx_is_refused_in_one_line(case, pattern, tmp_path):
    import re

    with pytest.raises(MTZError) as info:
        read_model(_bad_models(tmp_path)[case])
    message = str(info.value)
    assert "\n" not in message and re.search(pattern, message), message


def test_dynamic_shape_inside_the_graph_is_refused(tmp_path):
    """A Reshape whose target size is computed from the data: no export setting fixes it."""
    n = OnnxNet((1, 8, 8))
    x = n.node("Flatten", [n.conv("input", 1, 4, act="Relu")], axis=1)
    total = n.node("Reshape", [n.node("ReduceSum", ["input"]), n.ints([1])])
    size = n.node("Cast", [total], to=onnx.TensorProto.INT64)
    batch = n.ints([1])
    y = n.node("Reshape", [x, n.node("Concat", [batch, size], axis=0)])
    model = n.model(n.dense(y, 256, 10))
    with pytest.raises(MTZError, match=r"Reshape node '/block\d+/Reshape' has a dynamic shape on .* cannot be fixed"):
        read_model(save(model, tmp_path / "reshape.onnx"))


def test_cli_refuses_bad_onnx_and_leaves_nothing(tmp_path, capsys):
    from mtz_mobile.cli import main

    paths = _bad_models(tmp_path)
    out = tmp_path / "out"
    code = main(["zip", paths["good"], paths["truncated"], "--out", str(out), "--quiet"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("mtz-mobile")]
    assert code == 2 and len(lines) == 1 and "truncated" in lines[0], lines
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_external_weights_and_wrong_suffix_are_refused(tmp_path):
    model = mlp(seed=1)
    onnx.save_model(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.data", size_threshold=0)
    with pytest.raises(MTZError, match="external data"):
        read_model(tmp_path / "ext.onnx")
    with pytest.raises(MTZError, match=r"neither a \.keras nor a \.onnx"):
        read_model(tmp_path / "ext.data")
