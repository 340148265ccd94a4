"""Zipping mobile graphs (depthwise, inverted residuals, squeeze-and-excite, 1-D convs).

The independent check: a copy of a model whose channels were permuted consistently — one
permutation per channel stream (a residual stream, a depthwise layer with the layer it
follows, a squeeze-and-excite gate with the map it scales) — computes the same function, so at
100 % sharing it must zip back into the original exactly and the pairs must undo the
permutation. The permutation is drawn here from the graph's own structure, independently of the
zipper's pairing.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from mtz_mobile.data import TaskData
from mtz_mobile.fileio import sha256_of
from mtz_mobile.graph.keras_io import parse_model
from mtz_mobile.graph.network import ZippedNetwork
from mtz_mobile.zipper import ZipConfig, zip_networks
from mtz_mobile.zipper.config import RetrainSettings

keras = pytest.importorskip("keras")


def randomise_batchnorm(model, rng) -> None:
    """Non-trivial BN statistics, so that folding and the depthwise merges see real scales."""
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.7, 1.3, n).astype(np.float32))
            if layer.center:
                layer.beta.assign(rng.normal(0.05, 0.1, n).astype(np.float32))


def permuted_copy(parsed, rng):
    """The parsed model with every channel stream permuted; returns (copy, {stream node: perm})."""
    net = ZippedNetwork.from_models({"a": parsed})
    out = copy.deepcopy(parsed)
    perms = {}
    for stream in net.streams():
        if 0 in stream or net.output in stream:
            continue  # the input's and the output's order are the task's interface
        width = out.nodes[min(stream)].kernel.shape[-1]
        perm = rng.permutation(width)
        for i in stream:
            perms[i] = perm
            out.nodes[i].kernel = out.nodes[i].kernel[..., perm]
            out.nodes[i].bias = out.nodes[i].bias[perm]
        for j in net.consumers(stream):
            k = out.nodes[j].kernel
            if out.nodes[j].op == "conv2d":
                out.nodes[j].kernel = k[:, :, perm, :]
            else:
                positions = k.shape[0] // width
                out.nodes[j].kernel = k.reshape(positions, width, -1)[:, perm].reshape(k.shape)
    return out, perms


def _zip_copy(model, x, n_calib: int, seed: int = 0, out_dir=None, path="a.keras"):
    rng = np.random.default_rng(seed)
    digest = sha256_of(path) if Path(path).is_file() else "0" * 64
    parsed = parse_model(model, str(path), digest)
    twin, perms = permuted_copy(parsed, rng)
    y = np.zeros(len(x), np.int64)
    data = {t: TaskData("synthetic", x, y, x[:8], y[:8], [str(c) for c in range(10)]) for t in ("a", "b")}
    config = ZipConfig(shared=["all"], compensation="none", calibration_samples=n_calib, max_instances=200_000,
                       retrain=RetrainSettings(iterations=0))
    result = zip_networks({"a": parsed, "b": twin}, data, config, out_dir=out_dir, progress=False)
    return result, perms


def _check_zipped_back(model, result, perms, x):
    want = model.predict(x, verbose=0)
    scale = np.abs(want).max()
    for task in ("a", "b"):
        got = result.network.predict(task, x)
        assert np.abs(got - want).max() / scale <= 1e-4, task
    params = result.plan.params
    assert params["zipped"] == params["per_task"]["a"] + (params["per_task"]["b"] - params["shared"]), params
    hidden_output = {l.name for l in result.plan.layers}
    recovered = total = 0
    for layer in result.plan.layers:
        i = next(n for n, node in enumerate(result.network.nodes) if node.name == layer.name)
        assert layer.n_shared == layer.n_new, layer.name     # 100 % shared
        for unit_a, unit_b, _ in layer.pairs:
            recovered += int(perms[i][unit_b] == unit_a)
            total += 1
    assert hidden_output and recovered == total, f"{recovered} of {total} pairs undo the permutation"


def _images(n, shape, seed=1):
    return np.random.default_rng(seed).random((n, *shape)).astype(np.float32)


def test_fully_shared_mobilenet_v2_converts_with_each_shared_kernel_stored_once(tmp_path):
    """The zipped file runs both tasks in LiteRT as the original computes them, and every shared
    block — depthwise kernels included — is one buffer that both task signatures read."""
    from converters import convert_zip
    from converters.flatbuffer import load_model
    from mtz_mobile.litert_runtime import make_interpreter

    keras.utils.set_random_seed(7)
    model = keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 3), classes=10)
    randomise_batchnorm(model, np.random.default_rng(8))
    model.save(tmp_path / "a.keras")
    x = _images(64, (32, 32, 3))
    # the twin computes a's function, so a's file stands for its source
    _zip_copy(model, x, n_calib=64, out_dir=tmp_path / "zip", path=tmp_path / "a.keras")
    conversion = convert_zip(tmp_path / "zip", tmp_path / "model.tflite", joint=True)
    want = model.predict(x[:4], verbose=0)
    for task in ("a", "b"):
        runner = make_interpreter(conversion.path).get_signature_runner(task)
        got = np.concatenate([next(iter(runner(input=x[n:n + 1]).values())) for n in range(4)])
        assert np.abs(got - want).max() / np.abs(want).max() <= 1e-4, task
    layout = conversion.layout
    assert layout.duplicated_bytes == 0
    assert layout.task_weight_bytes["a"] == layout.task_weight_bytes["b"] < 0.01 * layout.shared_weight_bytes
    op_names = {v: k for k, v in __import__("ai_edge_litert.schema_py_generated", fromlist=["x"]).BuiltinOperator.__dict__.items()
                if not k.startswith("_")}
    fb = load_model(conversion.path)
    for sub in fb.subgraphs:
        kinds = [op_names.get(fb.operatorCodes[op.opcodeIndex].builtinCode) for op in sub.operators]
        assert kinds.count("DEPTHWISE_CONV_2D") in (0, 17)   # one per depthwise layer per task path
    depthwise_buffers = {sub.tensors[op.inputs[1]].buffer for sub in fb.subgraphs for op in sub.operators
                         if op_names.get(fb.operatorCodes[op.opcodeIndex].builtinCode) == "DEPTHWISE_CONV_2D"}
    assert len(depthwise_buffers) == 17   # every depthwise kernel stored once for both tasks


@pytest.mark.parametrize("builder", ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"])
def test_permuted_application_model_zips_back(builder):
    keras.utils.set_random_seed(3)
    build = {
        "mobilenet_v2": lambda: keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 3),
                                                                classes=10),
        "mobilenet_v3_small": lambda: keras.applications.MobileNetV3Small(
            alpha=0.75, weights=None, input_shape=(32, 32, 3), classes=10, include_preprocessing=True),
        "efficientnet_b0": lambda: keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3),
                                                                      classes=10),
    }[builder]
    model = build()
    randomise_batchnorm(model, np.random.default_rng(4))
    x = _images(96, (32, 32, 3)) * (255.0 if builder != "mobilenet_v2" else 1.0)
    result, perms = _zip_copy(model, x, n_calib=96)
    _check_zipped_back(model, result, perms, x[:16])


def test_permuted_conv1d_net_zips_back():
    layers = keras.layers
    keras.utils.set_random_seed(5)
    inp = keras.Input((64, 3))
    h = layers.Conv1D(12, 5, padding="same", use_bias=False)(inp)
    h = layers.ReLU()(layers.BatchNormalization()(h))
    r = layers.Conv1D(12, 3, padding="same", activation="relu")(h)
    h = layers.Add()([h, layers.Conv1D(12, 3, padding="same")(r)])
    h = layers.MaxPooling1D(2)(h)
    h = layers.Conv1D(16, 3, strides=2, activation="relu")(h)
    h = layers.GlobalAveragePooling1D()(h)
    model = keras.Model(inp, layers.Dense(6)(h))
    randomise_batchnorm(model, np.random.default_rng(6))
    x = _images(64, (64, 3))
    result, perms = _zip_copy(model, x, n_calib=64)
    _check_zipped_back(model, result, perms, x[:16])


def test_permuted_separable_net_zips_back_and_converts(tmp_path):
    """SeparableConv2D = depthwise (inherited pairing) + pointwise 1×1 (free pairing)."""
    from converters import convert_zip
    from mtz_mobile.litert_runtime import make_interpreter

    layers = keras.layers
    keras.utils.set_random_seed(9)
    inp = keras.Input((16, 16, 3))
    h = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3, padding="same")(inp)))
    h = layers.SeparableConv2D(12, 3, padding="same", activation="relu")(h)
    h = layers.SeparableConv2D(12, 3, strides=2, padding="same", use_bias=False)(h)
    h = layers.ReLU(6.0)(layers.BatchNormalization()(h))
    model = keras.Model(inp, layers.Dense(5)(layers.GlobalAveragePooling2D()(h)))
    randomise_batchnorm(model, np.random.default_rng(10))
    model.save(tmp_path / "a.keras")
    x = _images(64, (16, 16, 3))
    result, perms = _zip_copy(model, x, n_calib=64, out_dir=tmp_path / "zip", path=tmp_path / "a.keras")
    _check_zipped_back(model, result, perms, x[:16])
    conversion = convert_zip(tmp_path / "zip", tmp_path / "model.tflite")
    want = model.predict(x[:2], verbose=0)
    for task in ("a", "b"):
        runner = make_interpreter(conversion.path).get_signature_runner(task)
        got = np.concatenate([next(iter(runner(input=x[n:n + 1]).values())) for n in range(2)])
        assert np.abs(got - want).max() / np.abs(want).max() <= 1e-4, task



def test_adaptive_search_judges_a_layer_with_the_depthwise_layer_its_pairing_decides():
    """The trial for a convolution merges the depthwise layer after it before it is measured (the
    search records it in ``judged_with``) and the run goes on after it, so the plan lists every
    layer once, in the plain zip's order; a permuted twin computes the same function, so every
    searched layer is certified fully shared."""
    layers = keras.layers
    keras.utils.set_random_seed(11)
    inp = keras.Input((12, 12, 3))
    h = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = layers.DepthwiseConv2D(3, padding="same", activation="relu")(h)
    h = layers.Conv2D(12, 1, activation="relu")(h)
    model = keras.Model(inp, layers.Dense(4)(layers.GlobalAveragePooling2D()(h)))
    parsed = parse_model(model, "a.keras", "0" * 64)
    twin, _ = permuted_copy(parsed, np.random.default_rng(3))
    x = _images(600, (12, 12, 3))
    y = np.argmax(model.predict(x, verbose=0), axis=1)    # the original is right on every image
    data = {t: TaskData("synthetic", x, y, x[:8], y[:8], [str(c) for c in range(4)]) for t in ("a", "b")}
    common = dict(compensation="none", calibration_samples=200, retrain=RetrainSettings(iterations=0))
    adaptive = zip_networks({"a": parsed, "b": twin}, data, ZipConfig(max_error_increase=5.0, validation_split=0.25,
                                                                      **common), progress=False)
    plain = zip_networks({"a": parsed, "b": twin}, data, ZipConfig(shared=["all"], **common), progress=False)
    assert [l.name for l in adaptive.plan.layers] == [l.name for l in plain.plan.layers]
    conv, depthwise = adaptive.plan.layers[0], adaptive.plan.layers[1]
    assert depthwise.kind == "depthwise" and depthwise.search is None
    assert conv.search["judged_with"] == [depthwise.name]
    searched = [l for l in adaptive.plan.layers if l.search]
    assert searched and all(l.n_shared == l.n_new for l in searched)
    assert all(v["worse"] == 0 for v in adaptive.plan.validation.values())


def test_depthwise_channel_hessians_are_the_explicit_per_channel_ones():
    """Each depthwise channel's Hessian, Σ p̃p̃ᵀ/n over its k×k patches (bias unit last) at every
    output position of every image, equals a float64 loop over channels on numpy's im2col — with
    every instance, and on the seeded subset kept when there are more than max_instances."""
    from mtz_mobile.graph.ops import NUMPY_OPS
    from mtz_mobile.zipper.calibration import Calibration, channel_hessians

    inp = keras.Input((11, 11, 3))
    x = keras.layers.Conv2D(5, 1, activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
    out = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
    keras.utils.set_random_seed(3)
    model = keras.Model(inp, out)
    x = _images(40, (11, 11, 3))
    net = ZippedNetwork.from_models({"a": parse_model(model), "b": parse_model(model)})
    i = next(n for n, node in enumerate(net.nodes) if node.inherits)
    y = np.zeros(len(x), np.int64)
    data = {t: TaskData("synthetic", x, y, x[:8], y[:8], [str(c) for c in range(4)]) for t in ("a", "b")}
    maps = net.forward("a", x, upto=net.nodes[i].inputs[0])[net.nodes[i].inputs[0]][0]
    patches = NUMPY_OPS.patches(np.asarray(maps), net.nodes[i].attrs).reshape(-1, 9, 5).astype(np.float64)
    for cap, keep in ((10**6, None), (600, 600 / len(patches))):
        calib = Calibration(net, data, ZipConfig(calibration_samples=len(x), max_instances=cap))
        got = channel_hessians(net, calib, i, "a", 0, np.random.default_rng(2))
        kept = patches if keep is None else patches[np.random.default_rng(2).random(len(patches)) < keep]
        for c in range(5):
            p1 = np.hstack([kept[:, :, c], np.ones((len(kept), 1))])
            np.testing.assert_allclose(got[c], p1.T @ p1 / len(p1), rtol=1e-5, atol=1e-6)
    p32 = patches.astype(np.float32)   # the numpy reference op computes what TensorFlow's does
    np.testing.assert_allclose(NUMPY_OPS.channel_grams(p32), calib.ops.channel_grams(p32), rtol=1e-5)
