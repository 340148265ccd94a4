"""Reading trained Keras models (safe mode) into a plain graph the zipper works on.

A model becomes a list of nodes in topological order. Weight nodes (Dense, Conv2D) carry their
kernel and bias; BatchNormalization is folded into the weight node it follows (equal at
inference); an Activation right after a linear weight node is fused into it; Dropout vanishes.
Pooling, Flatten, GlobalAveragePooling2D, Add and stand-alone activations stay as nodes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtz_mobile.errors import MTZError

ACTIVATION_NAMES = ("linear", "relu", "relu6", "tanh", "sigmoid", "softmax")
SUPPORTED = ("Dense, Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, Flatten, Add, "
             "BatchNormalization, Activation, ReLU, Dropout, InputLayer")


@dataclass
class ParsedNode:
    name: str
    op: str                      # input | dense | conv2d | maxpool | avgpool | gap | flatten | add | activation
    inputs: list[int]
    attrs: dict = field(default_factory=dict)
    kernel: np.ndarray | None = None
    bias: np.ndarray | None = None
    activation: str = "linear"   # fused activation of a weight node
    out_shape: tuple[int, ...] = ()   # per-sample output shape in this model


@dataclass
class ParsedModel:
    path: str
    sha256: str
    input_shape: tuple[int, ...]
    nodes: list[ParsedNode]

    @property
    def output(self) -> int:
        return len(self.nodes) - 1

    def weight_nodes(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.op in ("dense", "conv2d")]


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_keras_model(path: str | os.PathLike):
    """keras.saving.load_model in safe mode (no arbitrary code from the file)."""
    import keras

    path = Path(path)
    if not path.exists():
        raise MTZError(f"model file {path} does not exist: give the path of a .keras file")
    if path.suffix != ".keras":
        raise MTZError(f"{path} is not a .keras file: save the model with model.save('name.keras')")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise MTZError(f"cannot load {path} as a Keras model ({type(exc).__name__}: {first}): "
                       "re-save it with Keras 3") from exc


def save_keras_atomic(model, path: str | os.PathLike) -> Path:
    """model.save under a temporary name, then a rename: an interrupted save leaves no half-written
    model where a cache check would take it for a finished one."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.keras")  # Keras refuses to save to a name without .keras
    model.save(tmp)
    os.replace(tmp, path)
    return path


def _activation_name(layer, path) -> str:
    act = layer.get_config().get("activation", "linear")
    if isinstance(act, dict):
        act = act.get("config", {}).get("name", act.get("class_name", "?"))
    if type(layer).__name__ == "ReLU":
        cfg = layer.get_config()
        if cfg.get("max_value") == 6.0 and not cfg.get("negative_slope") and not cfg.get("threshold"):
            return "relu6"
        if cfg.get("max_value") is None and not cfg.get("negative_slope") and not cfg.get("threshold"):
            return "relu"
        raise MTZError(f"{path}: ReLU layer {layer.name} with a slope, threshold or cap other than 6 is not supported")
    act = str(act)
    if act not in ACTIVATION_NAMES:
        raise MTZError(f"{path}: activation {act!r} of layer {layer.name} is not supported; "
                       f"use one of {', '.join(ACTIVATION_NAMES)}")
    return act


def _check_finite(path, layer, *arrays) -> None:
    for a in arrays:
        if not np.all(np.isfinite(a)):
            raise MTZError(f"{path}: layer {layer.name} has NaN or infinite weights: retrain or repair the model")


def _layer_node(layer, inputs: list[int], path: str) -> ParsedNode:
    kind = type(layer).__name__
    shape = tuple(int(d) for d in layer.output.shape[1:])
    if kind == "Dense":
        kernel = np.asarray(layer.kernel.numpy())
        bias = np.asarray(layer.bias.numpy()) if layer.use_bias else np.zeros(kernel.shape[1], kernel.dtype)
        _check_finite(path, layer, kernel, bias)
        return ParsedNode(layer.name, "dense", inputs, {}, kernel, bias, _activation_name(layer, path), shape)
    if kind == "Conv2D":
        cfg = layer.get_config()
        if cfg.get("groups", 1) != 1:
            raise MTZError(f"{path}: grouped convolution {layer.name} is not supported: use groups=1")
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise MTZError(f"{path}: {layer.name} is channels_first: re-save the model channels_last")
        kernel = np.asarray(layer.kernel.numpy())
        bias = np.asarray(layer.bias.numpy()) if layer.use_bias else np.zeros(kernel.shape[-1], kernel.dtype)
        _check_finite(path, layer, kernel, bias)
        attrs = {"kernel_size": list(kernel.shape[:2]), "strides": list(cfg["strides"]), "padding": cfg["padding"],
                 "dilation": list(cfg["dilation_rate"])}
        return ParsedNode(layer.name, "conv2d", inputs, attrs, kernel, bias, _activation_name(layer, path), shape)
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        cfg = layer.get_config()
        attrs = {"pool_size": list(cfg["pool_size"]), "strides": list(cfg["strides"] or cfg["pool_size"]),
                 "padding": cfg["padding"]}
        return ParsedNode(layer.name, "maxpool" if kind.startswith("Max") else "avgpool", inputs, attrs,
                          out_shape=shape)
    if kind == "GlobalAveragePooling2D":
        if layer.get_config().get("keepdims"):
            raise MTZError(f"{path}: {layer.name} keeps dims: use keepdims=False")
        return ParsedNode(layer.name, "gap", inputs, out_shape=shape)
    if kind == "Flatten":
        return ParsedNode(layer.name, "flatten", inputs, out_shape=shape)
    if kind == "Add":
        return ParsedNode(layer.name, "add", inputs, out_shape=shape)
    if kind in ("Activation", "ReLU"):
        return ParsedNode(layer.name, "activation", inputs, {"activation": _activation_name(layer, path)},
                          out_shape=shape)
    if kind == "DepthwiseConv2D":
        raise MTZError(f"{path}: unsupported layer {layer.name!r} (DepthwiseConv2D): its channels would have to "
                       "follow the input's pairing, which this zipper does not do; zip a model without it")
    raise MTZError(f"{path}: unsupported layer {layer.name!r} ({kind}); the zipper handles {SUPPORTED}")


def _fold_batchnorm(node: ParsedNode, layer, path: str) -> None:
    """conv/dense → BN becomes one conv/dense: equal at inference."""
    cfg = layer.get_config()
    if cfg.get("axis") not in (-1, [-1], len(node.out_shape), [len(node.out_shape)]):
        raise MTZError(f"{path}: BatchNormalization {layer.name} normalises another axis than channels")
    gamma = np.asarray(layer.gamma.numpy()) if layer.scale else np.ones_like(node.bias)
    beta = np.asarray(layer.beta.numpy()) if layer.center else np.zeros_like(node.bias)
    mean, var = np.asarray(layer.moving_mean.numpy()), np.asarray(layer.moving_variance.numpy())
    scale = gamma / np.sqrt(var + cfg["epsilon"])
    node.kernel = node.kernel * scale
    node.bias = (node.bias - mean) * scale + beta
    _check_finite(path, layer, node.kernel, node.bias)


def parse_model(model, path: str = "<memory>", sha256: str = "") -> ParsedModel:
    """A Keras model as ParsedNodes in topological order (see the module docstring)."""
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise MTZError(f"{path}: the zipper takes models with one input and one output")
    nodes = [ParsedNode("input", "input", [], out_shape=input_shape)]
    index_of: dict[str, int] = {}
    readers: dict[int, int] = {}   # layers that read each node's values
    stale: set[str] = set()        # names whose node now computes something after them (folded BN, fused act)
    sequential = type(model).__name__ == "Sequential"
    previous = 0

    def alias(name: str, k: int) -> None:
        stale.update(n for n, j in index_of.items() if j == k)
        index_of[name] = k

    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            index_of[layer.name] = 0
            continue
        if sequential:  # a Sequential's layers record one call per build: the chain order is the graph
            parents, inputs = [], [previous]
        else:
            if len(layer._inbound_nodes) > 1:
                raise MTZError(f"{path}: layer {layer.name} is called more than once: the zipper needs a plain graph")
            parents = [p.operation.name for p in layer._inbound_nodes[0].parent_nodes]
            inputs = [index_of.get(name, 0) for name in parents] or [0]
        late = [name for name in parents if name in stale]
        if late:
            raise MTZError(f"{path}: {layer.name} reads {late[0]} before a BatchNormalization or activation that "
                           "another path applies to it: the zipper cannot fold that; restructure the model")
        src = nodes[inputs[0]]
        foldable = src.op in ("dense", "conv2d") and src.activation == "linear" and not readers.get(inputs[0])
        if kind == "Dropout":
            index_of[layer.name] = previous = inputs[0]
        elif kind == "BatchNormalization":
            if not foldable:
                raise MTZError(f"{path}: BatchNormalization {layer.name} does not directly follow a linear Conv2D or "
                               "Dense layer: fold it into one first")
            _fold_batchnorm(src, layer, path)
            alias(layer.name, inputs[0])
            previous = inputs[0]
        elif kind in ("Activation", "ReLU") and foldable:
            src.activation = _activation_name(layer, path)
            alias(layer.name, inputs[0])
            previous = inputs[0]
        else:
            for i in inputs:
                readers[i] = readers.get(i, 0) + 1
            nodes.append(_layer_node(layer, inputs, path))
            index_of[layer.name] = previous = len(nodes) - 1
    out_name = model.outputs[0]._keras_history.operation.name
    if index_of.get(out_name) != len(nodes) - 1:
        raise MTZError(f"{path}: the model's output is not its last layer")
    if nodes[-1].op not in ("dense", "conv2d"):
        raise MTZError(f"{path}: the last layer must be Dense (the task's output layer), found {nodes[-1].op}")
    if len([n for n in nodes if n.op in ("dense", "conv2d")]) < 2:
        raise MTZError(f"{path}: needs at least one hidden layer and an output layer")
    for i, n in enumerate(nodes):
        if n.op in ("dense", "conv2d", "maxpool", "avgpool", "gap", "flatten", "activation") and len(n.inputs) != 1:
            raise MTZError(f"{path}: layer {n.name} has {len(n.inputs)} inputs")
        if n.op == "dense" and len(nodes[n.inputs[0]].out_shape) != 1:
            raise MTZError(f"{path}: Dense layer {n.name} gets a {len(nodes[n.inputs[0]].out_shape)}-d input: "
                           "put a Flatten or GlobalAveragePooling2D before it")
    return ParsedModel(path, sha256, input_shape, nodes)


def read_model(path: str | os.PathLike) -> ParsedModel:
    return parse_model(load_keras_model(path), str(path), sha256_of(path))
