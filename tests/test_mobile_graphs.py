"""The graphs phones run — MobileNetV2/V3, EfficientNet, 1-D conv nets — read, executed and
converted without zipping: every node per task, each task's path must compute what its Keras
model computes, with numpy ops, TensorFlow ops, the joint model and the .tflite.

Weights and BatchNorm/Normalization statistics are random and far from the identity, so folding
is really exercised. Errors are relative: max |ours − Keras| / max |Keras| over the batch.
"""

import json

import keras
import numpy as np
import pytest

from converters.graph import TaskGraph, tflite_layout
from mtz_mobile.errors import MTZError
from mtz_mobile.graph.joint_model import JointModel
from mtz_mobile.graph.keras_io import parse_model
from mtz_mobile.graph.network import ZippedNetwork
from mtz_mobile.graph.ops import NUMPY_OPS, TFOps
from mtz_mobile.litert_runtime import make_interpreter

L = keras.layers
TOL = 1e-4
ERRORS: dict[str, float] = {}   # measured, printed with -s


def randomize(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, L.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape) if n in (0, 3) else rng.uniform(-0.3, 0.3, w.shape)
                               for n, w in enumerate(weights)])
        elif isinstance(layer, L.Normalization) and weights:   # adaptable statistics (no mean given)
            layer.set_weights([rng.uniform(-0.5, 0.5, weights[0].shape), rng.uniform(0.2, 2.0, weights[1].shape),
                               *weights[2:]])
            layer.finalize_state()   # what Keras does after adapt or loading: call() reads the finalized stats
        elif weights:
            layer.set_weights([rng.normal(0, 1.2 / np.sqrt(np.prod(w.shape[:-1]) if w.ndim > 1 else 10), w.shape)
                               if w.ndim > 1 else rng.normal(0, 0.1, w.shape) for w in weights])
    return model


def rel_err(ours, ref) -> float:
    return float(np.max(np.abs(np.asarray(ours, np.float64) - ref)) / np.max(np.abs(ref)))


def to_tflite(net):
    """The converter's pieces (convert_zip needs a zip directory; this network has no plan)."""
    import tempfile

    import tensorflow as tf

    graph = TaskGraph(net)
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(graph, tmp, signatures={k: f.get_concrete_function() for k, f in graph.functions.items()})
        return tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(graph.functions)).convert(), graph


def check_everywhere(name, models: dict, x: dict, tflite: bool = True):
    """Numpy, TF ops, the joint model and (optionally) LiteRT against each Keras model."""
    parsed = {t: parse_model(m, f"{name}-{t}") for t, m in models.items()}
    net = ZippedNetwork.from_models(parsed)
    refs = {t: np.asarray(m(x[t], training=False), np.float64) for t, m in models.items()}
    joint = JointModel(net)
    errors = {}
    for t in models:
        errors[f"{t}/numpy"] = rel_err(net.predict(t, x[t]), refs[t])
        errors[f"{t}/tf"] = rel_err(net.predict(t, x[t], ops=TFOps()), refs[t])
        errors[f"{t}/joint"] = rel_err(joint(t, x[t]).numpy(), refs[t])
    if tflite:
        data, graph = to_tflite(net)
        interpreter = make_interpreter(model_content=data)
        for t in models:
            runner = interpreter.get_signature_runner(t)
            out = np.concatenate([runner(input=x[t][i:i + 1])["output"] for i in range(len(x[t]))])
            errors[f"{t}/litert"] = rel_err(out, refs[t])
        check_depthwise_layout(data, graph)
    for key, err in errors.items():
        ERRORS[f"{name} {key}"] = err
    print(name, {k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) <= TOL, errors
    return net


def check_depthwise_layout(data: bytes, graph):
    """Each depthwise operand is one DEPTHWISE_CONV_2D filter buffer, with the bytes tflite_layout says."""
    from ai_edge_litert import schema_py_generated as schema

    from converters import flatbuffer as fb
    from converters.layout import _opcode, locate

    model = fb.parse_model(data, "test")
    ops = [op for op in graph.operands if graph.net.nodes[op.node].op == "depthwise"]
    for op in ops:
        assert len(op.in_groups) == 1 and op.in_groups[0] == op.out_group
        found = locate(model, tflite_layout("depthwise", graph.kernels[op.name].numpy()))
        assert len(found) == 1, op.name
    count = sum(_opcode(model, o) == schema.BuiltinOperator.DEPTHWISE_CONV_2D
                for sg in model.subgraphs for o in sg.operators or [])
    assert count == len(ops)


def images(shape, n, seed, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, (n, *shape)).astype(np.float32)


# ----- the application models -------------------------------------------------------------------

def test_mobilenet_v2():
    models = {t: randomize(keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 3),
                                                          classes=c, classifier_activation=None), seed)
              for t, c, seed in (("a", 10, 1), ("b", 7, 2))}
    net = check_everywhere("mobilenet_v2", models, {"a": images((32, 32, 3), 6, 0), "b": images((32, 32, 3), 6, 1)})
    depthwise = [i for i, n in enumerate(net.nodes) if n.op == "depthwise"]
    assert len(depthwise) == 17
    for i in depthwise:   # a depthwise layer is a member of its input's stream, never its consumer
        stream = net.stream_of(i)
        assert net.source(net.nodes[i].inputs[0]) in stream and i not in net.consumers(stream)


def test_mobilenet_v3_small():
    models = {t: randomize(keras.applications.MobileNetV3Small(
        alpha=0.75, minimalistic=False, include_preprocessing=True, weights=None, input_shape=(32, 32, 3),
        classes=c, classifier_activation=act), seed)
        for t, c, act, seed in (("a", 10, None, 3), ("b", 6, "softmax", 4))}
    x = {t: images((32, 32, 3), 6, s, 0.0, 255.0) for t, s in (("a", 2), ("b", 3))}
    net = check_everywhere("mobilenet_v3_small", models, x)
    ops = [n.op for n in net.nodes]
    assert ops.count("multiply") == 9 and ops.count("rescale") == 1 and net.nodes[-1].op == "dense"
    assert "hard_sigmoid" in {a for n in net.nodes if n.is_weight for a in n.activations.values()}
    for i, node in enumerate(net.nodes):   # a gate keeps its map's channel order: one stream
        if node.op == "multiply":
            gate = node.inputs[1 - node.attrs["map"]]
            assert net.source(gate) in net.stream_of(net.source(i))


def test_efficientnet_b0():
    models = {t: randomize(keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=c,
                                                             classifier_activation=None), seed)
              for t, c, seed in (("a", 10, 5), ("b", 10, 6))}
    x = {t: images((32, 32, 3), 4, s, 0.0, 255.0) for t, s in (("a", 4), ("b", 5))}
    net = check_everywhere("efficientnet_b0", models, x)
    # each task keeps its own Normalization statistics
    rescale = next(n for n in net.nodes if n.op == "rescale")
    assert rescale.attrs["per_task"]["a"] != rescale.attrs["per_task"]["b"]


# ----- hand-built nets ----------------------------------------------------------------------------

def conv1d_net(seed, classes):
    x0 = keras.Input((64, 3))
    x = L.ZeroPadding1D((2, 0))(x0)
    x = L.Conv1D(16, 5, strides=2, use_bias=False)(x)
    x = L.Activation("relu")(L.BatchNormalization()(x))
    y = L.BatchNormalization()(L.Conv1D(16, 3, padding="same", dilation_rate=2)(x))
    x = L.Activation("relu")(L.Add()([x, y]))
    x = L.DepthwiseConv1D(3, strides=2, padding="same")(x)
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    x = L.Conv1D(24, 1, activation="gelu")(x)
    x = L.MaxPooling1D(2)(x)
    x = L.AveragePooling1D(3, strides=1, padding="same")(x)
    x = L.GlobalAveragePooling1D()(x)
    return randomize(keras.Model(x0, L.Dense(classes)(L.Dropout(0.2)(x))), seed)


def test_conv1d_net():
    models = {"a": conv1d_net(7, 5), "b": conv1d_net(8, 3)}
    x = {t: images((64, 3), 6, s) for t, s in (("a", 6), ("b", 7))}
    net = check_everywhere("conv1d", models, x)
    assert net.layout == "1d" and net.input_shape == (1, 64, 3) and net.task_input_shapes["a"] == (64, 3)
    conv = next(n for n in net.nodes if n.op == "conv2d")
    assert conv.attrs["kernel_size"] == [1, 5] and conv.attrs["strides"] == [1, 2]


def zoo_net(seed, classes, mean=(0.4, 0.5, 0.6)):
    """Every activation, preprocessing pair, padding, cropping and an EfficientNet-style SE block."""
    x0 = keras.Input((12, 12, 3))
    x = L.Rescaling(1 / 255.0)(x0)
    x = L.Normalization(axis=-1, mean=list(mean), variance=[0.05, 0.06, 0.07])(x)
    x = L.ZeroPadding2D(((1, 0), (0, 1)))(x)
    x = L.Conv2D(8, 3, activation="gelu")(x)
    x = L.DepthwiseConv2D(3, padding="same", activation="swish")(x)
    x = L.Activation("hard_swish")(x)
    se = L.Reshape((1, 1, 8))(L.GlobalAveragePooling2D()(x))
    se = L.Conv2D(4, 1, activation="silu")(se)
    se = L.Conv2D(8, 1, activation="hard_sigmoid")(se)
    x = L.Multiply()([se, x])          # gate first: the parser must find the map
    x = L.Activation("sigmoid")(L.Cropping2D(((1, 2), (0, 1)))(x))
    x = L.Conv2D(6, 3, strides=2, padding="same")(x)
    x = L.Activation("hard_sigmoid")(x)
    x = L.Activation("gelu")(L.Flatten()(x))
    return randomize(keras.Model(x0, L.Dense(classes, activation="softmax")(x)), seed)


def test_activations_preprocessing_and_se_block():
    models = {"a": zoo_net(9, 4), "b": zoo_net(10, 5)}
    x = {t: images((12, 12, 3), 8, s, 0.0, 255.0) for t, s in (("a", 8), ("b", 9))}
    net = check_everywhere("zoo", models, x)
    mult = next(n for n in net.nodes if n.op == "multiply")
    assert mult.attrs["map"] == 1


def test_joint_signature_keys_preprocessing_per_task():
    a, b = zoo_net(11, 4), zoo_net(12, 4, mean=(0.1, 0.2, 0.3))
    net = ZippedNetwork.from_models({"a": parse_model(a), "b": parse_model(b)})
    memo: dict = {}
    x = images((12, 12, 3), 2, 13, 0.0, 255.0)
    out = {t: net.task_view(net.output, net.forward(t, x, memo=memo)[-1], t) for t in ("a", "b")}
    for t, m in (("a", a), ("b", b)):
        assert rel_err(out[t], m(x).numpy()) <= TOL


def test_numpy_and_tf_activations_match_keras():
    z = np.linspace(-8, 8, 2001).astype(np.float32)
    tf_ops = TFOps()
    for name in ("relu6", "hard_sigmoid", "hard_silu", "silu", "sigmoid", "gelu", "tanh"):
        ref = keras.ops.convert_to_numpy(keras.activations.get(name)(z))
        assert np.max(np.abs(NUMPY_OPS.activation(name, z) - ref)) <= 1e-6, name
        assert np.max(np.abs(tf_ops.activation(name, z).numpy() - ref)) <= 1e-6, name


# ----- refusals -----------------------------------------------------------------------------------

def test_unsupported_layers_are_refused_by_name():
    x0 = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3)(x0)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw_times_two")(x)
    with pytest.raises(MTZError, match="dw_times_two.*depth_multiplier"):
        parse_model(keras.Model(x0, L.Dense(2)(L.Flatten()(x))))
    x = L.SeparableConv2D(4, 3, depth_multiplier=2, name="sep")(L.Conv2D(4, 3)(x0))
    with pytest.raises(MTZError, match="'sep' has depth_multiplier 2"):
        parse_model(keras.Model(x0, L.Dense(2)(L.Flatten()(x))))
    x = L.DepthwiseConv2D(3, name="dw_first")(x0)
    with pytest.raises(MTZError, match="dw_first.*DepthwiseConv2D.*reads the input"):
        parse_model(keras.Model(x0, L.Dense(2)(L.Flatten()(L.Conv2D(4, 1)(x)))))
    x = L.Rescaling(0.5, name="late_scale")(L.Conv2D(4, 3)(x0))
    with pytest.raises(MTZError, match="late_scale.*not right after the input"):
        parse_model(keras.Model(x0, L.Dense(2)(L.Flatten()(L.Conv2D(4, 1)(x)))))
    x = L.Reshape((9, 16), name="fold")(L.Conv2D(16, 3, strides=2)(x0))
    with pytest.raises(MTZError, match="fold"):
        parse_model(keras.Model(x0, L.Dense(2)(L.Flatten()(x))))
    s0 = keras.Input((16, 2))
    x = L.Conv1D(4, 3, padding="causal", name="causal_conv")(s0)
    with pytest.raises(MTZError, match="causal_conv.*causal"):
        parse_model(keras.Model(s0, L.Dense(2)(L.Flatten()(x))))


def test_preprocessing_with_different_input_shapes_is_refused():
    def net(shape):
        x0 = keras.Input(shape)
        x = L.Conv2D(4, 3, activation="relu")(L.Rescaling(0.5)(x0))
        return parse_model(keras.Model(x0, L.Dense(2)(L.Flatten()(x))))

    with pytest.raises(MTZError, match="normalises its input"):
        ZippedNetwork.from_models({"a": net((8, 8, 3)), "b": net((10, 10, 3))})


def test_structure_round_trip_keeps_the_new_nodes():
    models = {"a": zoo_net(14, 4), "b": conv1d_net(15, 3)}
    for t, m in models.items():
        net = ZippedNetwork.from_models({t: parse_model(m)})
        again = ZippedNetwork.from_structure(json.loads(json.dumps(net.structure())), net.arrays())
        x = images(tuple(m.inputs[0].shape[1:]), 3, 16, 0.0, 255.0)
        assert rel_err(again.predict(t, x), m(x).numpy()) <= TOL
