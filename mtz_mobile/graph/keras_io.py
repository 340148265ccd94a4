"""Reading trained Keras models (safe mode) into a plain graph the zipper works on.

A model becomes a list of nodes in topological order. Weight nodes (Dense, Conv1D/2D,
DepthwiseConv1D/2D) carry their kernel and bias; BatchNormalization is folded into the weight
node it follows (equal at inference); an Activation right after a linear weight node is fused
into it; Dropout vanishes; consecutive Rescaling/Normalization layers right after the input
become one per-task affine ``rescale`` node; Keras' tensor-op hard sigmoid (relu6(x + 3) · 1/6,
as MobileNetV3 writes it) becomes one activation; a classifier written as a 1×1 Conv2D on a
1×1 map followed by Flatten (MobileNetV3's head) becomes Flatten → Dense. Everything else
(pooling, Flatten, Reshape of 1-sized axes, padding, cropping, Add, Multiply, activations) stays
a node; layer_node (keras_layers.py) refuses what it does not know, by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import sha256_of

from .keras_layers import (ACTIVATION_NAMES, LINEAR_OPS, ONE_D_KINDS, SUPPORTED, ParsedNode,  # noqa: F401
                           activation_name, fold_batchnorm, layer_node, preprocessing_affine, separable_nodes)
from .ops import canonical_shape


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
        return [i for i, n in enumerate(self.nodes) if n.op in LINEAR_OPS]

    @property
    def layout(self) -> str | None:
        return self.nodes[0].attrs.get("layout")


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


def _scalar_operand(op, kind: str) -> float | None:
    """The number a tensor op outside any layer (x + c, x * c) applies, if op is a ``kind``."""
    import keras

    if isinstance(op, keras.layers.Layer) or type(op).__name__ != kind or len(op._inbound_nodes) != 1:
        return None
    args = op._inbound_nodes[0].arguments.args
    numbers = [a for a in args if isinstance(a, (int, float))]
    return float(numbers[0]) if len(args) == 2 and len(numbers) == 1 else None


def _only_reader(op):
    outs = op._outbound_nodes
    return outs[0].operation if len(outs) == 1 else None


def _hard_sigmoid_chains(operations) -> tuple[set[str], dict]:
    """MobileNetV3 writes hard sigmoid with tensor ops, ReLU(6)(x + 3) * (1/6): the three become
    one activation. Returns (the names absorbed, {name of the multiply: the add})."""
    absorbed, chains = set(), {}
    for op in operations:
        if _scalar_operand(op, "Add") != 3.0:
            continue
        relu = _only_reader(op)
        cfg = relu.get_config() if relu is not None and type(relu).__name__ == "ReLU" else {}
        if cfg.get("max_value") != 6.0 or cfg.get("negative_slope") or cfg.get("threshold"):
            continue
        mul = _only_reader(relu)
        factor = None if mul is None else _scalar_operand(mul, "Multiply")
        if factor is not None and abs(factor - 1.0 / 6.0) < 1e-7:
            absorbed |= {op.name, relu.name}
            chains[mul.name] = op
    return absorbed, chains


DROPPED = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianDropout", "GaussianNoise", "AlphaDropout")


class _Parser:
    """The graph being built: nodes, which node each Keras name now stands for, and who reads what."""

    def __init__(self, model, path: str):
        self.path = path
        self.input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        self.one_d = len(self.input_shape) == 2 and any(type(layer).__name__ in ONE_D_KINDS for layer in model.layers)
        attrs = {"layout": "1d"} if self.one_d else {}
        shape = canonical_shape(self.input_shape, attrs.get("layout"))
        self.nodes = [ParsedNode("input", "input", [], attrs, out_shape=shape)]
        self.index_of: dict[str, int] = {}
        self.readers: dict[int, int] = {}   # layers that read each node's values
        self.stale: set[str] = set()        # names whose node now computes something after them (folded, fused)

    def alias(self, name: str, k: int) -> None:
        self.stale.update(n for n, j in self.index_of.items() if j == k)
        self.index_of[name] = k

    def wiring(self, op) -> tuple[list[str], list[int]]:
        if len(op._inbound_nodes) > 1:
            raise MTZError(f"{self.path}: layer {op.name} is called more than once: the zipper needs a plain graph")
        parents = [p.operation.name for p in op._inbound_nodes[0].parent_nodes]
        unknown = [n for n in parents if n not in self.index_of]
        if unknown:
            raise MTZError(f"{self.path}: {op.name} reads {unknown[0]}, which the zipper did not read: "
                           "restructure the model as a plain graph of supported layers")
        return parents, [self.index_of[n] for n in parents] or [0]

    def append(self, node: ParsedNode) -> int:
        for i in node.inputs:
            self.readers[i] = self.readers.get(i, 0) + 1
        self.nodes.append(node)
        self.index_of[node.name] = len(self.nodes) - 1
        return len(self.nodes) - 1

    def take(self, op, parents: list[str], inputs: list[int], hard_sigmoid: bool) -> int:
        """Add (or fold) one operation; returns the node that now stands for its output."""
        import keras

        kind = type(op).__name__
        late = [name for name in parents if name in self.stale]
        if late:
            raise MTZError(f"{self.path}: {op.name} reads {late[0]} before a BatchNormalization or activation that "
                           "another path applies to it: the zipper cannot fold that; restructure the model")
        if not hard_sigmoid and not isinstance(op, keras.layers.Layer):
            raise MTZError(f"{self.path}: unsupported operation {op.name!r} ({kind}) applied to a tensor outside a "
                           f"layer; the zipper handles {SUPPORTED}")
        src = self.nodes[inputs[0]]
        foldable = src.op in LINEAR_OPS and src.activation == "linear" and not self.readers.get(inputs[0])
        if kind in DROPPED:
            self.index_of[op.name] = inputs[0]
            return inputs[0]
        if kind == "BatchNormalization":
            if not foldable:
                raise MTZError(f"{self.path}: BatchNormalization {op.name} does not directly follow a linear Conv, "
                               "DepthwiseConv or Dense layer: fold it into one first")
            fold_batchnorm(src, op, self.path)
            self.alias(op.name, inputs[0])
            return inputs[0]
        if kind in ("Rescaling", "Normalization"):
            return self.preprocess(op, inputs[0])
        act = "hard_sigmoid" if hard_sigmoid else activation_name(op, self.path) if kind in ("Activation", "ReLU") \
            else None
        if act and foldable:
            src.activation = act
            self.alias(op.name, inputs[0])
            return inputs[0]
        if hard_sigmoid:
            return self.append(ParsedNode(op.name, "activation", inputs, {"activation": act}, out_shape=src.out_shape))
        if kind in ("SeparableConv2D", "SeparableConv1D"):
            return self.separable(op, inputs)
        node = layer_node(op, inputs, [self.nodes[i].out_shape for i in inputs], self.path, self.one_d)
        if node.op == "depthwise" and self.source(inputs[0]) == 0:
            raise MTZError(f"{self.path}: layer {op.name!r} ({kind}) reads the input with no weight layer before it: "
                           "its channels would have no pairing to follow; put a Conv layer first")
        return self.append(node)

    def separable(self, op, inputs: list[int]) -> int:
        shape = tuple(int(d) for d in op.output.shape[1:])
        shape = (1,) + shape if self.one_d and len(shape) == 2 else shape
        dw_shape = shape[:-1] + (self.nodes[inputs[0]].out_shape[-1],)
        depthwise, pointwise = separable_nodes(op, inputs, self.path, shape, dw_shape)
        if self.source(inputs[0]) == 0:
            raise MTZError(f"{self.path}: layer {op.name!r} ({type(op).__name__}) reads the input with no weight "
                           "layer before it: its depthwise channels would have no pairing to follow; put a Conv first")
        pointwise.inputs = [self.append(depthwise)]
        return self.append(pointwise)

    def source(self, j: int) -> int:
        """The input or weight node whose channels node j carries (network.source, while parsing)."""
        while self.nodes[j].op not in LINEAR_OPS + ("input",):
            node = self.nodes[j]
            j = node.inputs[node.attrs["map"] if node.op == "multiply" else 0]
        return j

    def preprocess(self, layer, i: int) -> int:
        """Rescaling/Normalization: one per-task affine node right after the input."""
        scale, offset = preprocessing_affine(layer, self.path)
        src = self.nodes[i]
        if src.op == "rescale" and not self.readers.get(i):
            # (x·s0 + o0)·s + o
            s0, o0 = np.asarray(src.attrs["scale"]), np.asarray(src.attrs["offset"])
            src.attrs = {"scale": (s0 * scale).tolist(), "offset": (o0 * scale + offset).tolist()}
            self.alias(layer.name, i)
            return i
        if src.op != "input":
            raise MTZError(f"{self.path}: {type(layer).__name__} layer {layer.name!r} is not right after the input: "
                           "preprocessing is supported only in front of the first layer; move it there or apply it "
                           "to the data")
        attrs = {"scale": scale.tolist(), "offset": offset.tolist()}
        return self.append(ParsedNode(layer.name, "rescale", [i], attrs, out_shape=src.out_shape))


def parse_model(model, path: str = "<memory>", sha256: str = "") -> ParsedModel:
    """A Keras model as ParsedNodes in topological order (see the module docstring)."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise MTZError(f"{path}: the zipper takes models with one input and one output")
    parser = _Parser(model, path)
    sequential = type(model).__name__ == "Sequential"
    # a Sequential's layers record one call per build: the chain order is the graph
    operations = model.layers if sequential else model.operations
    absorbed, chains = (set(), {}) if sequential else _hard_sigmoid_chains(operations)
    previous = 0
    for op in operations:
        if type(op).__name__ == "InputLayer":
            parser.index_of[op.name] = 0
        elif op.name not in absorbed:
            parents, inputs = ([], [previous]) if sequential else parser.wiring(chains.get(op.name, op))
            previous = parser.take(op, parents, inputs, op.name in chains)
    out_name = model.outputs[0]._keras_history.operation.name
    if parser.index_of.get(out_name) != len(parser.nodes) - 1:
        raise MTZError(f"{path}: the model's output is not its last layer")
    nodes = _conv_head_as_dense(parser.nodes)
    _check_graph(nodes, path)
    return ParsedModel(path, sha256, parser.input_shape, nodes)


def _conv_head_as_dense(nodes: list[ParsedNode]) -> list[ParsedNode]:
    """A 1×1 Conv2D on a 1×1 map, then Flatten (and an activation): MobileNetV3's classifier. It is
    Flatten → Dense exactly, which keeps the output a Dense layer as the zipper expects."""
    act = nodes[-1] if nodes[-1].op == "activation" else None
    k = len(nodes) - (3 if act else 2)
    if k < 1:
        return nodes
    conv, flat = nodes[k], nodes[k + 1]
    if not (conv.op == "conv2d" and flat.op == "flatten" and flat.inputs == [k] and conv.attrs["kernel_size"] == [1, 1]
            and int(np.prod(nodes[conv.inputs[0]].out_shape[:-1])) == 1 and (act is None or act.inputs == [k + 1])
            and sum(k in n.inputs for n in nodes) == 1 and not (act and conv.activation != "linear")):
        return nodes
    c_in, units = conv.kernel.shape[2], conv.kernel.shape[3]
    flat = ParsedNode(flat.name, "flatten", list(conv.inputs), out_shape=(c_in,))
    dense = ParsedNode(conv.name, "dense", [k], {}, conv.kernel.reshape(c_in, units), conv.bias,
                       act.attrs["activation"] if act else conv.activation, (units,))
    return nodes[:k] + [flat, dense]


def _check_graph(nodes: list[ParsedNode], path: str) -> None:
    if nodes[-1].op not in ("dense", "conv2d"):
        raise MTZError(f"{path}: the last layer must be Dense (the task's output layer), found {nodes[-1].op}")
    if len([n for n in nodes if n.op in LINEAR_OPS]) < 2:
        raise MTZError(f"{path}: needs at least one hidden layer and an output layer")
    for n in nodes:
        if n.op not in ("input", "add", "multiply") and len(n.inputs) != 1:
            raise MTZError(f"{path}: layer {n.name} has {len(n.inputs)} inputs")
        if n.op == "dense" and len(nodes[n.inputs[0]].out_shape) != 1:
            raise MTZError(f"{path}: Dense layer {n.name} gets a {len(nodes[n.inputs[0]].out_shape)}-d input: "
                           "put a Flatten or GlobalAveragePooling2D before it")


def read_model(path: str | os.PathLike) -> ParsedModel:
    return parse_model(load_keras_model(path), str(path), sha256_of(path))
