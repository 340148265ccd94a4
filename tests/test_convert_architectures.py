"""Every architecture the README lists, zipped and converted: LiteRT against the zipped network.

Full sharing: a permuted copy of one model zips back into the original exactly (the permutation
is drawn from the graph's streams, independently of the zipper), so the converted file must run
both tasks as the *Keras* model computes them, with every hidden block shared and stored once.
(MobileNetV2's fully shared conversion is test_mobile_zip's, with its depthwise buffers counted.)
Half sharing: the model and a permuted copy whose every weight was moved by noise, half of each
hidden layer's units shared: shared, task-specific and mixed groups in one graph, and the file
must compute what the zipped network computes. In both, each shared operand the zip's
weights.npz names (read from its keys alone) must be one buffer that both signatures read.
Models are narrow, inputs 32×32 or shorter, nothing retrained: seconds per case.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from converters import convert_zip
from mtz_mobile.data import TaskData
from mtz_mobile.fileio import sha256_of
from mtz_mobile.graph.keras_io import parse_model
from mtz_mobile.litert_runtime import make_interpreter
from mtz_mobile.zipper import ZipConfig, zip_networks
from mtz_mobile.zipper.config import RetrainSettings
from test_converter import assert_shared_operands_stored_once, shared_operands_in_zip
from test_mobile_zip import _check_zipped_back, _images, _zip_copy, permuted_copy, randomise_batchnorm

keras = pytest.importorskip("keras")
L = keras.layers


def mobilenet_v2():
    return keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 3), classes=6)


def mobilenet_v3_small():
    # the issue's model: squeeze-and-excite gates ending in hard_sigmoid, Keras' own preprocessing
    return keras.applications.MobileNetV3Small(alpha=0.75, weights=None, input_shape=(32, 32, 3), classes=6,
                                               include_preprocessing=True)


def efficientnet_b0():
    # B0's blocks (MBConv with expansion 1 and 6, 3×3 and 5×5 depthwise, squeeze-and-excite,
    # residual adds, Rescaling + Normalization) built by the same Keras code at a quarter of the
    # width and half the depth (10 blocks, not 16): the whole B0 costs 65 s of CPU for both cases
    from keras.src.applications.efficientnet import EfficientNet

    return EfficientNet(0.25, 0.5, 224, weights=None, input_shape=(32, 32, 3), classes=6, name="efficientnet_small")


def conv1d_net():
    inp = keras.Input((48, 3))
    h = L.ReLU()(L.BatchNormalization()(L.Conv1D(12, 5, padding="same", use_bias=False)(inp)))
    r = L.Conv1D(12, 3, padding="same", activation="relu")(h)
    h = L.Add()([h, L.Conv1D(12, 3, padding="same")(r)])
    h = L.DepthwiseConv1D(3, padding="same", activation="relu")(L.MaxPooling1D(2)(h))
    h = L.Conv1D(16, 3, strides=2, activation="hard_silu")(h)
    return keras.Model(inp, L.Dense(6)(L.GlobalAveragePooling1D()(h)))


def separable_net():
    inp = keras.Input((16, 16, 3))
    # a scale alone before a shared VALID convolution: what the converter would fold into its kernel
    h = L.Rescaling(1 / 255.0)(inp)
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3)(h)))
    h = L.SeparableConv2D(12, 3, padding="same", activation="relu")(h)
    h = L.SeparableConv2D(12, 3, strides=2, padding="same", use_bias=False)(h)
    h = L.ReLU(6.0)(L.BatchNormalization()(h))
    return keras.Model(inp, L.Dense(6)(L.GlobalAveragePooling2D()(h)))


# builder, input scale (Keras applications with their own preprocessing expect 0–255)
ARCHITECTURES = {
    "mobilenet_v2": (mobilenet_v2, 1.0),
    "mobilenet_v3_small": (mobilenet_v3_small, 255.0),
    "efficientnet_b0": (efficientnet_b0, 255.0),
    "conv1d": (conv1d_net, 1.0),
    "separable": (separable_net, 255.0),
}


def build(arch: str, seed: int, path):
    builder, scale = ARCHITECTURES[arch]
    keras.utils.set_random_seed(seed)
    model = builder()
    rng = np.random.default_rng(seed + 1)
    randomise_batchnorm(model, rng)
    for layer in model.layers:   # Keras starts biases at zero; a zero bias the converter may drop
        bias = getattr(layer, "bias", None)
        if bias is not None:
            bias.assign(rng.normal(0, 0.1, bias.shape).astype(np.float32))
    model.save(path)
    return model, _images(32, model.input_shape[1:], seed=seed + 2) * scale


def litert_outputs(path, task: str, x: np.ndarray) -> np.ndarray:
    runner = make_interpreter(path).get_signature_runner(task)
    return np.concatenate([runner(input=x[n:n + 1])["output"] for n in range(len(x))])


def check_file(conversion, zip_dir, network, x, keras_model=None) -> dict:
    """LiteRT against the zipped network (and Keras, when the zip is exact) for both tasks; every
    shared operand weights.npz names one buffer that both signatures read."""
    worst = 0.0
    for task in ("a", "b"):
        got = litert_outputs(conversion.path, task, x)
        for want in [network.predict(task, x)] + ([] if keras_model is None else [keras_model.predict(x, verbose=0)]):
            assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), (task, np.abs(got - want).max())
            worst = max(worst, float(np.abs(got - want).max()))
    layout = conversion.layout
    assert layout.duplicated_bytes == 0
    assert_shared_operands_stored_once(layout, conversion.path, zip_dir)
    return dict(max_abs_diff=worst, shared_bytes=layout.shared_weight_bytes,
                task_bytes=dict(layout.task_weight_bytes), file_bytes=layout.file_bytes)


def noisy(parsed, rng):
    """A second task's model: the parsed model with every kernel and bias moved by noise of its own
    scale, so that no pair is exact and the half-shared zip merges units that really differ."""
    out = copy.deepcopy(parsed)
    for node in out.nodes:
        for name in ("kernel", "bias"):
            w = getattr(node, name, None)
            if isinstance(w, np.ndarray) and w.size:
                setattr(node, name, (w + rng.normal(0, 0.3 * (w.std() + 1e-3), w.shape)).astype(w.dtype))
    return out


def zip_half_shared(parsed, x, out_dir):
    twin, _ = permuted_copy(noisy(parsed, np.random.default_rng(5)), np.random.default_rng(6))
    y = np.zeros(len(x), np.int64)
    data = {t: TaskData("synthetic", x, y, x[:8], y[:8], [str(c) for c in range(6)]) for t in "ab"}
    config = ZipConfig(shared=[0.5], compensation="none", calibration_samples=len(x), max_instances=200_000,
                       retrain=RetrainSettings(iterations=0))
    return zip_networks({"a": parsed, "b": twin}, data, config, out_dir=out_dir, progress=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One model per architecture, saved (the zip keeps its source), built once for both cases."""
    root, built = tmp_path_factory.mktemp("architectures"), {}

    def get(arch: str):
        if arch not in built:
            path = root / f"{arch}.keras"
            built[arch] = (path, *build(arch, 11, path))
        return built[arch]

    return get


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "efficientnet_b0", "conv1d", "separable"])
def test_permuted_copy_fully_shared_converts_to_the_keras_outputs(arch, models, tmp_path):
    path, model, x = models(arch)
    result, perms = _zip_copy(model, x, n_calib=len(x), out_dir=tmp_path / "zip", path=path)
    _check_zipped_back(model, result, perms, x[:8])
    output = result.network.nodes[result.network.output].name
    with np.load(tmp_path / "zip" / "weights.npz") as z:
        own = [k for k in z.files if "+" not in k.rsplit("/", 1)[1] and not k.startswith(output + "/")]
    assert not own, f"blocks not shared at full sharing: {own}"
    figures = check_file(convert_zip(tmp_path / "zip", tmp_path / "model.tflite"), tmp_path / "zip",
                         result.network, x[:2], keras_model=model)
    plan = json.loads((tmp_path / "zip" / "plan.json").read_text())
    # the twins' heads are identical bytes too, which deduplication stores once
    assert figures["shared_bytes"] >= 4 * plan["params"]["shared"] > 0
    assert figures["task_bytes"] == {"a": 0, "b": 0}
    print(arch, "full", figures)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_half_shared_pair_converts_to_the_zipped_outputs(arch, models, tmp_path):
    path, model, x = models(arch)
    result = zip_half_shared(parse_model(model, str(path), sha256_of(path)), x, tmp_path / "zip")
    figures = check_file(convert_zip(tmp_path / "zip", tmp_path / "model.tflite"), tmp_path / "zip",
                         result.network, x[:2])
    # shared bytes are exactly the plan's shared parameters (no constant counted as a weight) and
    # each task keeps weights of its own
    plan = json.loads((tmp_path / "zip" / "plan.json").read_text())
    assert figures["shared_bytes"] == 4 * plan["params"]["shared"] > 0
    assert all(v > 0 for v in figures["task_bytes"].values()), figures
    print(arch, "half", figures)


# ----- the dry run before a long zip ------------------------------------------------------------

@pytest.mark.parametrize("arch", ["conv1d", "separable"])
def test_dry_runs_structure_is_the_fully_shared_zips(arch, models, tmp_path):
    """What check_convertible converts has the blocks (node, groups, owners) and shapes that a real
    zip at 100 % leaves, and both compute the first task's function."""
    from converters.dry_run import fully_shared
    from mtz_mobile.graph.network import ZippedNetwork

    path, model, x = models(arch)
    result, _ = _zip_copy(model, x, n_calib=len(x))
    parsed = parse_model(model, str(path), sha256_of(path))
    dry = fully_shared(ZippedNetwork.from_models({"a": parsed, "b": permuted_copy(parsed, np.random.default_rng(0))[0]}))
    for zipped, ours in zip(result.network.nodes, dry.nodes):
        assert sorted(ours.kernels) == sorted(zipped.kernels), zipped.name
        assert sorted(ours.biases) == sorted(zipped.biases), zipped.name
        assert [k.shape for _, k in sorted(ours.kernels.items())] == [k.shape for _, k in sorted(zipped.kernels.items())]
    want = model.predict(x[:4], verbose=0)
    for task in ("a", "b"):
        assert np.abs(dry.predict(task, x[:4]) - want).max() <= 1e-4 * np.abs(want).max()


def test_dry_run_passes_the_graph_and_refuses_it_before_any_data_or_output_once_it_folds(
        models, tmp_path, monkeypatch, capsys):
    """MobileNetV3Small's fully shared structure converts; with the converter graph's hard_sigmoid in
    Keras' own form (as before ConverterOps) the converter folds its +3 into the shared
    squeeze-and-excite bias, and the zip is refused on one line naming the layer, before the data
    are read (the spec names no file) and with no output."""
    from converters import check_convertible, dry_run, graph
    from mtz_mobile.cli import main
    from mtz_mobile.graph.ops import TFOps

    path, model, _ = models("mobilenet_v3_small")
    parsed = parse_model(model, str(path), sha256_of(path))
    report = check_convertible({"a": parsed, "b": parsed})
    assert report.shared_weight_bytes > 0 and report.operands > 0
    print("dry run, MobileNetV3Small pair:", report)

    monkeypatch.setattr(graph.ConverterOps, "activation", TFOps.activation)
    monkeypatch.setattr(dry_run, "_PASSED", {})   # the graph it passed above is another graph now
    out = tmp_path / "zip"
    args = ["zip", str(path), str(path), "--names", "a,b", "--out", str(out), "--data", "npz:/nonexistent.npz"]
    assert main(args) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "dry run" in err[0] and "squeeze_excite" in err[0] and "--no-dry-run" in err[0], err
    assert not out.exists() and not list(tmp_path.glob("*partial*"))
    # with --no-dry-run the same call goes on to the data, which the spec does not name
    assert main(args + ["--no-dry-run"]) != 0
    assert "nonexistent" in capsys.readouterr().err
