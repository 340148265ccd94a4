"""Convolutional, residual, sparse, multi-domain and three-task zipping, on real Keras models.

Most models here have random weights (and random BatchNorm statistics): exactness does not
need training, and it keeps the tests fast. Each claim is checked against something computed
independently: Keras' own outputs, numpy's im2col, a copy permuted by hand.
"""

import keras
import numpy as np
import pytest

from converters import convert_zip
from mtz_mobile.data import TaskData
from mtz_mobile.errors import MTZError
from mtz_mobile.graph.joint_model import JointModel
from mtz_mobile.graph.keras_io import parse_model, read_model
from mtz_mobile.litert_runtime import make_interpreter
from mtz_mobile.zipper.mtz_math import PairGeometry
from mtz_mobile.graph.network import ZippedNetwork
from mtz_mobile.graph.ops import NUMPY_OPS
from mtz_mobile.zipper.pairing import select_pairs
from mtz_mobile.reference import build_resnet
from mtz_mobile.zipper.config import RetrainSettings
from mtz_mobile.zipper.retrain import retrain
from mtz_mobile.zipper import ZipConfig, zip_networks

NO_RETRAIN = RetrainSettings(iterations=0)
L = keras.layers


def randomize(model, seed):
    """Random weights everywhere, and BatchNorm statistics far from the identity."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, L.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape) if n in (0, 3) else rng.uniform(-0.5, 0.5, w.shape)
                               for n, w in enumerate(weights)])
        elif weights:
            layer.set_weights([rng.normal(0, 1 / np.sqrt(np.prod(w.shape[:-1]) if w.ndim > 1 else 10), w.shape)
                               for w in weights])
    return model


def images(shape, n=64, seed=0):
    return np.random.default_rng(seed).random((n,) + tuple(shape), dtype=np.float32)


def task_data(x, classes=5, seed=0):
    y = np.random.default_rng(seed).integers(0, classes, len(x))
    return TaskData("npz:synthetic", x, y, x[:32], y[:32], [str(c) for c in range(classes)])


def every_layer_cnn(seed, shape=(20, 20, 3)):
    inp = keras.Input(shape)
    x = L.Conv2D(6, 3, padding="same", activation="relu")(inp)
    x = L.BatchNormalization()(L.Conv2D(7, 3, padding="same")(x))
    x = L.ReLU()(x)
    x = L.MaxPooling2D(2, padding="same")(x)
    x = L.BatchNormalization()(L.Conv2D(8, 3, strides=2, padding="same")(x))
    x = L.Activation("relu")(x)
    x = L.Conv2D(8, 3, dilation_rate=2, padding="same", activation="relu")(x)
    x = L.AveragePooling2D(2, padding="same")(x)
    x = L.Flatten()(x)
    x = L.Dense(12, activation="relu")(x)
    return randomize(keras.Model(inp, L.Dense(5, activation="softmax")(x)), seed)


def permute_parsed(parsed, rng):
    """A copy with every hidden unit/channel renumbered — one permutation per residual stream."""
    net = ZippedNetwork.from_models({"x": parsed})
    perms = {}
    for stream in net.streams():
        members = sorted(stream)
        if 0 in members or net.output in members:
            continue
        perm = rng.permutation(net.nodes[members[0]].groups[0].size)
        for m in members:
            node = parsed.nodes[m]
            node.kernel, node.bias = node.kernel[..., perm], node.bias[perm]
        for j in net.consumers(set(members)):
            node = parsed.nodes[j]
            if node.op == "conv2d":
                node.kernel = node.kernel[:, :, perm, :]
            else:
                factor = net.row_factor(j)
                node.kernel = node.kernel.reshape(factor, len(perm), -1)[:, perm, :].reshape(node.kernel.shape)
        perms.update({m: perm for m in members})
    return parsed, perms


def zip_pair(a, b, data, **kw):
    cfg = ZipConfig(retrain=kw.pop("retrain", NO_RETRAIN), calibration_samples=len(data.x_train), **kw)
    return zip_networks({"a": a, "b": b}, {"a": data, "b": data}, cfg, progress=False)


# ----- every layer kind -----------------------------------------------------------------------

def test_parsed_graph_computes_what_keras_computes():
    model = every_layer_cnn(1)
    x = images((20, 20, 3))
    net = ZippedNetwork.from_models({"a": parse_model(model)})
    np.testing.assert_allclose(net.predict("a", x), model.predict(x, verbose=0), atol=1e-5)
    ops = [n.op for n in net.nodes]
    assert ops.count("conv2d") == 4 and "maxpool" in ops and "avgpool" in ops and "flatten" in ops
    assert "activation" not in ops  # BatchNorm folded, ReLUs fused


def assert_exact_at_none_and_permuted_copy(a_model, b_model, x, data, seed, atol):
    """Ñ = 0 reproduces both models; A zipped fully with a permuted copy of itself gives A back.

    Returns the permuted-copy zip and the permutations applied to the copy."""
    result = zip_pair(parse_model(a_model), parse_model(b_model), data, shared=[0])
    for task, model in (("a", a_model), ("b", b_model)):
        np.testing.assert_allclose(result.network.predict(task, x), model.predict(x, verbose=0), atol=atol)

    copy, perms = permute_parsed(parse_model(a_model), np.random.default_rng(seed))
    result = zip_pair(parse_model(a_model), copy, data, compensation="none")
    expected = a_model.predict(x, verbose=0)
    for task in ("a", "b"):
        np.testing.assert_allclose(result.network.predict(task, x), expected, atol=atol)
    return result, perms


def test_cnn_nothing_shared_and_permuted_copy():
    x = images((20, 20, 3))
    result, perms = assert_exact_at_none_and_permuted_copy(every_layer_cnn(1), every_layer_cnn(2), x,
                                                           task_data(x), seed=7, atol=1e-5)
    for record in result.plan.layers:
        node = next(i for i, n in enumerate(result.network.nodes) if n.name == record.name)
        perm = perms[node]
        assert record.n_shared == len(perm) and all(perm[j] == i for i, j, _ in record.pairs)


def test_conv_metric_equals_dense_metric_on_im2col():
    """The first conv's pairs and d from the zipper = exact pairing on numpy im2col Hessians."""
    a_model, b_model = every_layer_cnn(3), every_layer_cnn(4)
    x = images((20, 20, 3), n=40)
    result = zip_pair(parse_model(a_model), parse_model(b_model), task_data(x), shared=["all", 0, 0, 0, 0],
                      alpha=0.3, compensation="none")
    conv = a_model.layers[1].get_config()
    attrs = {"kernel_size": conv["kernel_size"], "strides": [1, 1], "padding": "same", "dilation": [1, 1]}
    patches = NUMPY_OPS.patches(x, attrs).reshape(-1, 3 * 3 * 3).astype(np.float64)
    x1 = np.hstack([patches, np.ones((len(patches), 1))])
    h = x1.T @ x1 / len(x1)
    w = [np.vstack([m.layers[1].kernel.numpy().reshape(-1, 6), m.layers[1].bias.numpy()[None]])
         for m in (a_model, b_model)]
    d = PairGeometry.from_hessians(0.3 * h, 0.7 * h, damping=1e-4).functional_differences(*w)
    pairs = select_pairs(d, count=6)
    record = result.plan.layers[0]
    assert [(i, j) for i, j, _ in record.pairs] == pairs
    np.testing.assert_allclose([dist for _, _, dist in record.pairs], [d[i, j] for i, j in pairs], rtol=1e-4)


@pytest.mark.parametrize("kernel, strides, dilation, padding, shape", [
    ((3, 3), (1, 1), (1, 1), "same", (9, 9, 4)),
    ((3, 3), (2, 2), (1, 1), "same", (10, 11, 3)),    # SAME padding split unevenly
    ((5, 3), (2, 1), (1, 2), "valid", (12, 9, 2)),
    ((3, 3), (1, 1), (2, 2), "same", (8, 8, 3)),
    ((1, 1), (1, 1), (1, 1), "valid", (5, 7, 6)),
])
def test_sampled_patch_rows_are_tensorflows_patches(kernel, strides, dilation, padding, shape):
    """A conv layer's instances as the zipper builds them (all of them, or the rows a seeded draw
    keeps, gathered; a pointwise conv's straight from its input) equal TensorFlow's extract_patches
    at those rows."""
    import types

    import tensorflow as tf

    from mtz_mobile.graph.ops import TFOps
    from mtz_mobile.zipper.calibration import conv_instances

    x = np.random.default_rng(0).normal(size=(3, *shape)).astype(np.float32)
    attrs = {"kernel_size": list(kernel), "strides": list(strides), "dilation": list(dilation), "padding": padding}
    full = tf.image.extract_patches(x, sizes=[1, *kernel, 1], strides=[1, *strides, 1], rates=[1, *dilation, 1],
                                    padding=padding.upper()).numpy()
    full = full.reshape(-1, full.shape[-1])
    calib = types.SimpleNamespace(ops=TFOps())
    got, rows = conv_instances(calib, x, attrs, 1.0, np.random.default_rng(1))
    assert rows is None
    np.testing.assert_array_equal(got, full)
    got, rows = conv_instances(calib, x, attrs, 0.3, np.random.default_rng(1))
    np.testing.assert_array_equal(rows, np.flatnonzero(np.random.default_rng(1).random(len(full)) < 0.3))
    np.testing.assert_array_equal(got, full[rows])


def test_subsampled_conv_hessian_is_the_explicit_one_on_the_seeded_subset():
    """With more patch instances than max_instances, a task's Hessian is Σ x̃x̃ᵀ/n over the rows the
    seeded draw keeps — each row kept with probability max_instances / rows, drawn in row order."""
    from mtz_mobile.zipper.calibration import Calibration, task_hessian

    model = every_layer_cnn(3)
    x = images((20, 20, 3), n=30)
    net = ZippedNetwork.from_models({"a": parse_model(model), "b": parse_model(every_layer_cnn(4))})
    config = ZipConfig(calibration_samples=30, max_instances=3000)
    calib = Calibration(net, {"a": task_data(x), "b": task_data(x)}, config)
    i = next(n for n, node in enumerate(net.nodes) if node.op == "conv2d")
    got = task_hessian(net, calib, i, "a", [0], np.random.default_rng(5))
    conv = model.layers[1].get_config()
    attrs = {"kernel_size": conv["kernel_size"], "strides": [1, 1], "padding": "same", "dilation": [1, 1]}
    patches = NUMPY_OPS.patches(calib.x["a"], attrs).reshape(-1, 27).astype(np.float64)
    kept = patches[np.random.default_rng(5).random(len(patches)) < 3000 / len(patches)]
    x1 = np.hstack([kept, np.ones((len(kept), 1))])
    np.testing.assert_allclose(got, x1.T @ x1 / len(x1), rtol=1e-5, atol=1e-6)


# ----- residual networks ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def resnets():
    return randomize(build_resnet((16, 16, 3), 4, width=4), 5), randomize(build_resnet((16, 16, 3), 4, width=4), 6)


def test_resnet_exactness(resnets):
    x = images((16, 16, 3), n=48)
    result, _ = assert_exact_at_none_and_permuted_copy(*resnets, x, task_data(x, classes=4), seed=11, atol=1e-4)
    # the streams (stem + first stage, and each later stage with its projection) were paired once
    assert {len(s) for s in result.network.streams() if len(s) > 1} == {2}
    # every convolution is shared whole: (k²·C_in + 1)·C_out each (BatchNorm folded into its bias),
    # counted from the Keras layers; the output Dense stays per task
    convs = [layer for layer in resnets[0].layers if isinstance(layer, L.Conv2D)]
    shared = sum((np.prod(c.kernel.shape[:-1]) + 1) * c.filters for c in convs)
    dense = resnets[0].layers[-1]
    assert isinstance(dense, L.Dense) and not any(isinstance(layer, L.Dense) for layer in resnets[0].layers[:-1])
    p = result.plan.params
    assert p["shared"] == p["saved"] == shared
    assert p["zipped"] == shared + 2 * dense.count_params()


def _preactivation_error(net, original, task, j, x):
    """Mean squared difference of node j's pre-activations for the task, zipped vs original."""
    def in_original_order(n):
        z = np.asarray(n.task_view(j, n.forward(task, x, upto=j, preactivation=True)[j], task), np.float64)
        return z[..., np.argsort(n.original_unit_order(j, task))]

    return float(np.mean((in_original_order(net) - in_original_order(original)) ** 2))


def assert_least_squares_optimum(net, original, task, j, x, keys, rng, label):
    """Moving the blocks ``keys`` of node j by +step and -step raises task's pre-activation error
    alike (a minimum of the quadratic), where a random step of 0.3 std per block is taken."""
    node = net.nodes[j]
    steps = {k: 0.3 * np.std(node.kernels[k]) * rng.normal(size=node.kernels[k].shape) for k in keys}
    errors = []
    for sign in (1, 0, -1):
        moved = net.copy()
        for k, d in steps.items():
            moved.nodes[j].kernels[k] = node.kernels[k] + sign * d
        errors.append(_preactivation_error(moved, original, task, j, x))
    plus, at, minus = errors
    curvature = plus + minus - 2 * at
    assert curvature > 0 and abs(plus - minus) <= 0.02 * curvature, (label, errors)


def test_compensation_refits_a_stream_paired_consumer_before_its_merge(resnets):
    """When a basic block's first conv is zipped, the block's second conv — its channel pairing
    decided by its residual stream, its blocks still each task's own — is refitted: each task's
    blocks then minimise the squared error of its pre-activations against the original's on the
    calibration images. Checked by forward passes alone: the error is stationary (a step either
    way in a random direction changes it only to second order)."""
    x = images((16, 16, 3), n=48)
    models = {"a": parse_model(resnets[0]), "b": parse_model(resnets[1])}
    original = ZippedNetwork.from_models(models)
    hidden, snapshots = original.zippable(), []
    cfg = ZipConfig(retrain=NO_RETRAIN, calibration_samples=len(x), compensation_ridge=1e-9)
    zip_networks(models, {"a": task_data(x), "b": task_data(x)}, cfg, progress=False,
                 on_layer_done=lambda m, net: snapshots.append((hidden[m], net.copy())))
    rng = np.random.default_rng(0)
    checked = []
    for i, net in snapshots:
        for j in net.consumers(net.stream_of(i)):
            node = net.nodes[j]
            for t in ("a", "b"):
                pending = [g for g, grp in enumerate(node.groups) if len(grp.owners) > 1 and (g, (t,)) in node.biases]
                if not pending:
                    continue
                keys = [k for k in node.kernels if k[1] in pending and k[2] == (t,)]
                assert_least_squares_optimum(net, original, t, j, x, keys, rng, (node.name, t))
                checked.append((node.name, t))
    assert len(checked) >= 2, checked   # both tasks


def _depth(key) -> int:
    return 1 + max((_depth(k) for k in key), default=0) if isinstance(key, tuple) else 0


def test_a_memo_shared_by_the_tasks_keeps_flat_keys_and_the_tasks_values(resnets):
    """The joint signature's forward pass shares a memo between the tasks. Its keys name their
    inputs by number: keys that nested their inputs' keys doubled at every residual Add, and a
    partially shared MobileNetV2's joint signature did not finish tracing in 14 minutes."""
    from mtz_mobile.graph.execute import _KEY_NUMBERS

    x = images((16, 16, 3), n=24)
    result = zip_pair(parse_model(resnets[0]), parse_model(resnets[1]), task_data(x), shared=[0.5],
                      compensation="none")
    net, memo = result.network, {}
    for t in ("a", "b"):
        shared = net.task_view(net.output, net.forward(t, x, memo=memo)[-1], t)
        np.testing.assert_array_equal(shared, net.task_view(net.output, net.forward(t, x)[-1], t))
    keys = memo[_KEY_NUMBERS]
    assert len(keys) >= len(net.nodes) and max(_depth(k) for k in keys) <= 4   # (i, g, ((gi, owners, n), …), act)


def test_resnet_partial_sharing_blocks_equal_joint_tf_model(resnets, tmp_path):
    a_model, b_model = resnets
    x = images((16, 16, 3), n=32)
    result = zip_pair(parse_model(a_model), parse_model(b_model), task_data(x, classes=4), shared=[0.5])
    joint = JointModel(result.network)
    for task in ("a", "b"):
        np.testing.assert_allclose(result.network.predict(task, x), joint(task, x).numpy(), atol=1e-5)
    # residual streams keep one grouping for every member: no gather needed at run time
    for stream in result.network.streams():
        layouts = {tuple((g.owners, g.size) for g in result.network.nodes[m].groups) for m in stream}
        assert len(layouts) == 1


def test_conv_zip_converts_and_litert_agrees(resnets, tmp_path):
    a_model, b_model = resnets
    x = images((16, 16, 3), n=12)
    cfg = ZipConfig(shared=[0.5], retrain=NO_RETRAIN, calibration_samples=12)
    data = task_data(x, classes=4)
    a_model.save(tmp_path / "a.keras")
    b_model.save(tmp_path / "b.keras")
    zip_networks({"a": read_model(tmp_path / "a.keras"), "b": read_model(tmp_path / "b.keras")},
                 {"a": data, "b": data}, cfg, tmp_path / "zip", progress=False)
    from mtz_mobile.zipper.plan import load_zip_dir

    net = load_zip_dir(tmp_path / "zip").network
    result = convert_zip(tmp_path / "zip", tmp_path / "resnet.tflite", joint=True)
    interpreter = make_interpreter(result.path)
    for task in ("a", "b"):
        runner = interpreter.get_signature_runner(task)
        out = np.concatenate([runner(input=x[i:i + 1])["output"] for i in range(len(x))])
        assert np.max(np.abs(out - net.predict(task, x))) <= 1e-5
    assert result.layout.shared_weight_bytes == 4 * result.manifest["sharing"]["shared_params"]
    # full-integer quantization calibrates each signature on its own (image-shaped) inputs
    quantized = convert_zip(tmp_path / "zip", tmp_path / "resnet_int8.tflite", quantize="int8",
                            datas={"a": data, "b": data}, representative_samples=12)
    from converters import flatbuffer as fb

    # one placement per shared operand, counted from weights.npz's keys alone (a node's blocks into one
    # output group owned by both tasks are one operand), each one buffer both task signatures read
    with np.load(tmp_path / "zip" / "weights.npz") as z:
        parts = [k.rsplit("/", 3) for k in z.files if k.endswith("/a+b")]
    for conversion, kinds in ((result, ("kernel", "bias")), (quantized, ("kernel",))):
        expected = {(node, kind, groups.split("-")[-1]) for node, kind, groups, _ in parts if kind in kinds}
        placed = [p for p in conversion.layout.placements if p.kind in kinds]
        assert expected and len(placed) == len(expected), (len(placed), sorted(expected))
        uses = fb.buffer_uses(fb.load_model(conversion.path))
        assert all(len(p.buffers) == 1 and {"a", "b"} <= uses[p.buffers[0]].signatures for p in placed)


# ----- sparse ---------------------------------------------------------------------------------

def pruned_mlp(seed, density=0.3):
    model = randomize(keras.Sequential([keras.Input((30,)), L.Dense(24, activation="relu"),
                                        L.Dense(16, activation="relu"), L.Dense(5, activation="softmax")]), seed)
    for layer in model.layers:
        k, b = layer.get_weights()
        cut = np.quantile(np.abs(k), 1 - density)
        layer.set_weights([np.where(np.abs(k) >= cut, k, 0.0), b])
    return model


def sparse_full_zip_nonzeros(models: dict, net: ZippedNetwork) -> int:
    """For a full zip of pruned Dense chains: assert that every merged unit stores exactly the Keras
    connection pattern of the partner with more connections (A's on a tie; paper §3.6), rows in the
    joint order of the shared units before it; return the nonzero weights the zip must store
    (those patterns, one bias per merged unit, each task's output layer as in Keras)."""
    kernels = {t: [layer.get_weights() for layer in m.layers] for t, m in models.items()}
    rows = {t: np.arange(kernels[t][0][0].shape[0]) for t in models}
    dense = [i for i, n in enumerate(net.nodes) if n.op == "dense"]
    nonzero = 0
    for k, i in enumerate(dense[:-1]):
        (g, group), = enumerate(net.nodes[i].groups)      # fully shared: one group, owned by both
        units = group.units
        m_a = kernels["a"][k][0][np.ix_(rows["a"], units["a"])] != 0
        m_b = kernels["b"][k][0][np.ix_(rows["b"], units["b"])] != 0
        expected = np.where(m_a.sum(axis=0) >= m_b.sum(axis=0), m_a, m_b)
        (stored,) = [v for (gi, go, owners), v in net.nodes[i].kernels.items() if go == g]
        np.testing.assert_array_equal(stored != 0, expected, err_msg=net.nodes[i].name)
        nonzero += int(expected.sum()) + len(units["a"])
        rows = units
    return nonzero + sum(int(np.count_nonzero(w)) for t in models for w in kernels[t][-1])


def test_sparse_zip_keeps_masks():
    a_model, b_model = pruned_mlp(1), pruned_mlp(2)
    x = np.random.default_rng(0).random((200, 30), dtype=np.float32)
    data = task_data(x)
    zipped = zip_pair(parse_model(a_model), parse_model(b_model), data, sparse="auto")
    assert zipped.plan.settings["sparse_detected"] is True
    models = {"a": a_model, "b": b_model}
    # each merged unit took the mask of the partner with more connections, and nothing else is stored
    assert zipped.plan.params["nonzero_zipped"] == sparse_full_zip_nonzeros(models, zipped.network)

    from mtz_mobile.zipper.step import masks as _masks

    net = zipped.network.copy()
    before = net.arrays()
    retrain(net, {"a": (x, data.y_train), "b": (x, data.y_train)}, {"a": 0.5, "b": 0.5},
            RetrainSettings(iterations=15, batch_size=32, learning_rate=1e-2), seed=0, masks=_masks(net),
            progress=False)
    after = net.arrays()
    moved = 0
    for key, arr in before.items():
        if "/kernel/" in key:
            assert np.all(after[key][arr == 0] == 0), key   # pruned stays pruned
            moved += np.count_nonzero(after[key] != arr)
    assert moved > 0  # and retraining did change the live weights

    retrained = zip_pair(parse_model(a_model), parse_model(b_model), data, sparse="auto",
                         retrain=RetrainSettings(iterations=15, batch_size=32, learning_rate=1e-2))
    # retraining after each layer moves the next layer's pairs, never a connection pattern
    assert retrained.plan.params["nonzero_zipped"] == sparse_full_zip_nonzeros(models, retrained.network)


# ----- different input domains ----------------------------------------------------------------

def small_cnn(shape, seed):
    return randomize(keras.Sequential([keras.Input(shape), L.Conv2D(5, 3, activation="relu"), L.MaxPooling2D(2),
                                       L.Conv2D(6, 3, activation="relu"), L.Flatten(),
                                       L.Dense(10, activation="relu"), L.Dense(4, activation="softmax")]), seed)


def padded_permuted_copy(small, shape, rng):
    """A ``small_cnn`` on the larger input ``shape`` that computes on a zero-padded image (data
    top-left, extra channels zero) exactly what ``small`` computes on the image: the first kernel
    gets zero weights for the extra channels, the Dense rows sit at the positions of the small map
    and the larger map's new positions get zero rows; every hidden unit is renumbered."""
    (k1, b1), (k2, b2), (k3, b3), (k4, b4) = [layer.get_weights() for layer in small.layers if layer.get_weights()]
    p1, p2, p3 = rng.permutation(k1.shape[-1]), rng.permutation(k2.shape[-1]), rng.permutation(k3.shape[-1])
    large = small_cnn(shape, seed=0)
    k1 = np.pad(k1, [(0, 0), (0, 0), (0, shape[-1] - k1.shape[2]), (0, 0)])
    own, joint = small.layers[2].output.shape[1:], large.layers[2].output.shape[1:]   # the map before Flatten
    grid = np.zeros(tuple(joint) + (k3.shape[1],), np.float32)
    grid[:own[0], :own[1]] = k3.reshape(tuple(own) + (k3.shape[1],))[:, :, p2, :]
    weights = [k1[..., p1], b1[p1], k2[:, :, p1, :][..., p2], b2[p2], grid.reshape(-1, k3.shape[1])[:, p3], b3[p3],
               k4[p3], b4]
    large.set_weights(weights)
    return large


def test_different_input_domains_are_exact_when_nothing_is_shared_and_zip_fully():
    small, large = small_cnn((28, 28, 1), 1), small_cnn((32, 32, 3), 2)
    xs, xl = images((28, 28, 1), 40, 1), images((32, 32, 3), 40, 2)
    datas = {"a": task_data(xs, 4), "b": task_data(xl, 4)}
    cfg = ZipConfig(shared=[0], retrain=NO_RETRAIN, calibration_samples=40, compensation="none")
    result = zip_networks({"a": parse_model(small), "b": parse_model(large)}, datas, cfg, progress=False)
    assert result.network.input_shape == (32, 32, 3)
    np.testing.assert_allclose(result.network.predict("a", xs), small.predict(xs, verbose=0), atol=1e-5)
    np.testing.assert_allclose(result.network.predict("b", xl), large.predict(xl, verbose=0), atol=1e-5)
    # the small task's layers are stored at the joint size (zero weights for what it never sees)
    assert result.plan.params["shared"] == 0
    assert result.plan.params["per_task"] == {"a": large.count_params(), "b": large.count_params()}
    assert result.plan.params["zipped"] == 2 * large.count_params()

    # full sharing with a copy of the small model on the large domain, every unit renumbered: the
    # pairs undo the renumbering, and both tasks compute what their Keras models compute
    copy = padded_permuted_copy(small, (32, 32, 3), np.random.default_rng(9))
    np.testing.assert_allclose(copy.predict(np.pad(xs, [(0, 0), (0, 4), (0, 4), (0, 2)]), verbose=0),
                               small.predict(xs, verbose=0), atol=1e-5)   # the copy is right
    cfg = ZipConfig(shared=["all"], retrain=NO_RETRAIN, calibration_samples=40, compensation="none")
    result = zip_networks({"a": parse_model(small), "b": parse_model(copy)}, datas, cfg, progress=False)
    np.testing.assert_allclose(result.network.predict("a", xs), small.predict(xs, verbose=0), atol=1e-5)
    np.testing.assert_allclose(result.network.predict("b", xl), copy.predict(xl, verbose=0), atol=1e-5)
    # every hidden layer is stored once at the joint (larger) size: (k²Ñ_{l−1} + 1)·Ñ_l per layer
    hidden = copy.count_params() - copy.layers[-1].count_params()
    assert result.plan.params["shared"] == result.plan.params["saved"] == hidden
    assert result.plan.params["zipped"] == hidden + 2 * copy.layers[-1].count_params()


def test_vectors_of_different_length():
    short = randomize(keras.Sequential([keras.Input((20,)), L.Dense(8, activation="relu"), L.Dense(3)]), 1)
    long = randomize(keras.Sequential([keras.Input((26,)), L.Dense(8, activation="relu"), L.Dense(3)]), 2)
    xs, xl = np.random.default_rng(1).random((50, 20), np.float32), np.random.default_rng(2).random((50, 26), np.float32)
    cfg = ZipConfig(shared=[0], retrain=NO_RETRAIN, calibration_samples=50)
    result = zip_networks({"a": parse_model(short), "b": parse_model(long)},
                          {"a": task_data(xs, 3), "b": task_data(xl, 3)}, cfg, progress=False)
    np.testing.assert_allclose(result.network.predict("a", xs), short.predict(xs, verbose=0), atol=1e-5)
    np.testing.assert_allclose(result.network.predict("b", xl), long.predict(xl, verbose=0), atol=1e-5)


# ----- three tasks ----------------------------------------------------------------------------

def mlp(seed, classes=3):
    return randomize(keras.Sequential([keras.Input((12,)), L.Dense(10, activation="relu"),
                                       L.Dense(8, activation="relu"), L.Dense(classes, activation="softmax")]), seed)


def saved_by_groups(net: ZippedNetwork) -> int:
    """Parameters saved by sharing, from the unit groups alone (not the stored blocks), by the rule
    of sequential zipping: a newcomer's unit merged into a group shares the weights from the inputs
    that all of the group's owners, itself included, share, so the weights from input group X into
    unit y are stored once for the longest run y.owners[:j] (owners in the order they joined) that X's
    owners contain: j − 1 copies saved; each bias saves one copy per owner beyond the first. With two
    tasks this is the paper's (Ñ_{l−1} + 1)·Ñ_l per layer."""
    saved = 0
    for i in net.weight_nodes():
        node = net.nodes[i]
        taps = int(np.prod(node.attrs.get("kernel_size", [1, 1]))) * net.row_factor(i)
        for out in node.groups:
            saved += (len(out.owners) - 1) * out.size
            for inp in net.input_groups(i):
                j = max(j for j in range(len(out.owners) + 1) if set(out.owners[:j]) <= set(inp.owners))
                saved += max(j - 1, 0) * taps * inp.size * out.size
    return saved


def test_three_tasks():
    models = {t: mlp(s, c) for t, s, c in (("a", 1, 3), ("b", 2, 4), ("c", 3, 5))}
    x = np.random.default_rng(0).random((80, 12), np.float32)
    datas = {t: task_data(x, m.layers[-1].units) for t, m in models.items()}
    parsed = {t: parse_model(m) for t, m in models.items()}
    nothing = zip_networks(parsed, datas, ZipConfig(shared=[0], retrain=NO_RETRAIN, calibration_samples=80),
                           progress=False)
    for t, m in models.items():
        np.testing.assert_allclose(nothing.network.predict(t, x), m.predict(x, verbose=0), atol=1e-5)

    full = zip_networks(parsed, datas, ZipConfig(retrain=NO_RETRAIN, calibration_samples=80), progress=False)
    hidden = (12 + 1) * 10 + (10 + 1) * 8
    outputs = {t: 9 * m.layers[-1].units for t, m in models.items()}
    p = full.plan.params
    assert p["per_task"] == {t: hidden + outputs[t] for t in models}
    assert p["zipped"] == hidden + sum(outputs.values())
    assert p["saved"] == 2 * hidden and p["shared"] == hidden     # each hidden block owned by all three
    owners = {o for _, _, o, _ in full.network.blocks() if len(o) > 1}
    assert owners == {("a", "b", "c")}
    joint = JointModel(full.network)
    for t in models:
        np.testing.assert_allclose(full.network.predict(t, x), joint(t, x).numpy(), atol=1e-5)
    assert [r.newcomer for r in full.plan.layers] == ["b", "b", "c", "c"]

    partial = zip_networks(parsed, datas, ZipConfig(shared=[0.5], retrain=NO_RETRAIN, calibration_samples=80),
                           progress=False)
    joint = JointModel(partial.network)
    for t in models:
        np.testing.assert_allclose(partial.network.predict(t, x), joint(t, x).numpy(), atol=1e-5)
    # each task's path uses as many parameters as its Keras model; every extra owner of a weight saves it once
    p = partial.plan.params
    assert p["per_task"] == {t: m.count_params() for t, m in models.items()}
    assert p["saved"] == p["separate_total"] - p["zipped"] == saved_by_groups(partial.network)


# ----- bad input ------------------------------------------------------------------------------

def test_mismatched_structure_unsupported_layers_and_unjoinable_inputs():
    x = images((16, 16, 3), 8)
    one = parse_model(randomize(build_resnet((16, 16, 3), 4, width=4, blocks=1), 1))
    two = parse_model(randomize(build_resnet((16, 16, 3), 4, width=4, blocks=2), 2))
    data = task_data(x, 4)
    with pytest.raises(MTZError, match="same depth and structure"):
        zip_pair(one, two, data)
    depthwise = keras.Sequential([keras.Input((16, 16, 3)), L.DepthwiseConv2D(3, name="dw"), L.Flatten(), L.Dense(4)])
    with pytest.raises(MTZError, match="'dw' \\(DepthwiseConv2D\\)"):
        parse_model(depthwise)
    vec = parse_model(mlp(1))
    img = parse_model(small_cnn((28, 28, 1), 1))
    with pytest.raises(MTZError, match="cannot be joined"):
        zip_networks({"a": vec, "b": img}, {"a": task_data(np.zeros((4, 12), np.float32)), "b": data},
                     ZipConfig(), progress=False)
    gap_small = parse_model(randomize(build_resnet((16, 16, 3), 4, width=4), 1))
    gap_large = parse_model(randomize(build_resnet((20, 20, 3), 4, width=4), 2))
    with pytest.raises(MTZError, match="cannot be joined"):
        zip_networks({"a": gap_small, "b": gap_large}, {"a": data, "b": task_data(images((20, 20, 3), 8), 4)},
                     ZipConfig(), progress=False)
