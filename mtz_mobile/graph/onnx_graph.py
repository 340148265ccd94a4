"""An ONNX graph (loaded and checked by onnx_io) as the ParsedNodes a Keras model becomes.

Tensors are NCHW in ONNX and NHWC here: every map's shape is recorded as (H, W, C), kernels are
transposed (onnx_ops), and a Flatten of a map wider than 1×1 is remembered so that the Dense
layer reading it gets its rows in NHWC order. BatchNormalization folds into the weight node
before it, an activation right after a weight node is fused into it, Dropout and Identity
vanish, and x·sigmoid(x) (torch's SiLU) is one activation — as keras_io does for Keras models.
"""

from __future__ import annotations

import re

import numpy as np

from mtz_mobile.errors import MTZError

from . import onnx_ops as oo
from .keras_layers import LINEAR_OPS, ParsedNode
from .keras_io import _check_graph, _conv_head_as_dense

NON_NEGATIVE = ("relu", "relu6", "sigmoid", "hard_sigmoid")   # zero padding before a max pool is exact after these


class OnnxGraphReader:
    """Walks the nodes (ONNX keeps them in topological order) and builds the ParsedNode list."""

    def __init__(self, path: str, graph, shapes: dict, consts: dict, input_name: str):
        self.path, self.graph, self.shapes, self.consts = path, graph, shapes, consts
        in_shape = shapes[input_name][1:]
        self.input_shape = tuple(in_shape[1:]) + (in_shape[0],) if len(in_shape) == 3 else tuple(in_shape)
        self.nodes = [ParsedNode("input", "input", [], {}, out_shape=self.input_shape)]
        self.tensor = {input_name: 0}          # ONNX tensor → the node that now computes it
        self.flat_from: dict[str, tuple] = {}  # vectors flattened from an NCHW map wider than 1×1: (H, W, C)
        self.readers: dict[int, int] = {}
        self.consumers: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
        self.gated = self._gated_self()
        self.names: set[str] = set()

    # ----- bookkeeping -------------------------------------------------------------------------
    def _gated_self(self) -> dict[str, tuple[str, str]]:
        """Mul(x, act(x)) pairs that are one activation: {Mul's output: (x, activation)}; the act
        node is skipped and x counts one reader less."""
        made = {n.output[0]: n for n in self.graph.node}
        gated = {}
        for mul in self.graph.node:
            if mul.op_type != "Mul" or len(mul.input) != 2:
                continue
            for x, g in (mul.input, mul.input[::-1]):
                act = made.get(g)
                if act is not None and act.op_type in oo.GATED_SELF and list(act.input) == [x] \
                        and self.consumers.get(g) == 1 and x not in self.consts:
                    name = oo.GATED_SELF[act.op_type]
                    if act.op_type == "HardSigmoid":
                        oo.hard_sigmoid_activation(act, self.path)
                    gated[mul.output[0]] = (x, name, act.output[0])
                    self.consumers[x] -= 1
                    break
        return gated

    def node_name(self, node) -> str:
        base = re.sub(r"[^A-Za-z0-9_.]+", "_", node.name or node.output[0]).strip("_.") or node.op_type
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def shape(self, tensor: str) -> tuple[int, ...]:
        """NHWC per-sample shape of a tensor (from shape inference)."""
        s = self.shapes[tensor][1:]
        return tuple(s[1:]) + (s[0],) if len(s) == 3 else tuple(s)

    def source_of(self, tensor: str, node) -> int:
        if tensor in self.consts:
            raise MTZError(f"{self.path}: {oo.label(node)} applies to a constant: fold constants when exporting "
                           "(torch.onnx.export does by default)")
        if tensor not in self.tensor:
            raise MTZError(f"{self.path}: {oo.label(node)} reads {tensor!r}, which the zipper did not read")
        return self.tensor[tensor]

    def append(self, node: ParsedNode, output: str) -> int:
        for i in node.inputs:
            self.readers[i] = self.readers.get(i, 0) + 1
        self.nodes.append(node)
        self.tensor[output] = len(self.nodes) - 1
        return len(self.nodes) - 1

    def foldable(self, tensor: str) -> bool:
        """The weight node computing ``tensor`` may absorb a BatchNormalization or an activation."""
        k = self.tensor.get(tensor)
        n = None if k is None else self.nodes[k]
        return (n is not None and n.op in LINEAR_OPS and n.activation == "linear"
                and self.consumers.get(tensor) == 1 and not self.readers.get(k))

    def const(self, node, index: int, what: str) -> np.ndarray:
        if index >= len(node.input) or node.input[index] not in self.consts:
            raise MTZError(f"{self.path}: {oo.label(node)} takes its {what} from another node: only constant "
                           "weights are supported")
        return self.consts[node.input[index]]

    def source_weight(self, j: int) -> int:
        """The input or weight node whose channels node j carries (as network.source does)."""
        while self.nodes[j].op not in LINEAR_OPS + ("input",):
            node = self.nodes[j]
            j = node.inputs[node.attrs["map"] if node.op == "multiply" else 0]
        return j

    # ----- the walk ----------------------------------------------------------------------------
    def read(self) -> list[ParsedNode]:
        skipped = {v[2] for v in self.gated.values()}
        for node in self.graph.node:
            if node.op_type == "Constant" or node.output[0] in skipped:
                continue
            if node.domain not in ("", "ai.onnx"):
                self.unsupported(node)
            handler = getattr(self, f"op_{node.op_type}", None)
            if node.op_type in oo.PASS_THROUGH:
                self.pass_through(node)
            elif node.output[0] in self.gated:
                x, act, _ = self.gated[node.output[0]]
                self.activation(node, act, x)
            elif node.op_type in oo.ACTIVATION_OPS:
                self.activation(node, oo.ACTIVATION_OPS[node.op_type], node.input[0])
            elif handler is None:
                self.unsupported(node)
            else:
                handler(node)
        out = self.graph.output[0].name
        if self.tensor.get(out) != len(self.nodes) - 1:
            raise MTZError(f"{self.path}: the model's output {out!r} is not computed by its last node")
        nodes = _conv_head_as_dense(self.nodes)
        _check_graph(nodes, self.path)
        return nodes

    def unsupported(self, node) -> None:
        raise MTZError(f"{self.path}: unsupported ONNX op {node.op_type} (node {node.name or node.output[0]!r}); "
                       f"the zipper reads {oo.SUPPORTED_OPS}")

    def pass_through(self, node) -> None:
        if node.op_type == "Dropout" and len(node.output) > 1 and self.consumers.get(node.output[1]):
            raise MTZError(f"{self.path}: {oo.label(node)}'s mask is used: export the model in eval mode")
        self.tensor[node.output[0]] = self.source_of(node.input[0], node)
        if node.input[0] in self.flat_from:
            self.flat_from[node.output[0]] = self.flat_from[node.input[0]]

    def activation(self, node, act: str, x: str) -> None:
        k = self.source_of(x, node)
        if self.foldable(x):
            self.nodes[k].activation = act
            self.tensor[node.output[0]] = k
            return
        self.append(ParsedNode(self.node_name(node), "activation", [k], {"activation": act},
                               out_shape=self.nodes[k].out_shape), node.output[0])

    # ----- op handlers (named op_<ONNX op type>) -----------------------------------------------
    def op_Clip(self, node) -> None:
        names = list(node.input) + [""] * (3 - len(node.input))
        bounds = [self.const(node, i, "bounds") if names[i] else None for i in (1, 2)]
        self.activation(node, oo.clip_activation(node, bounds, self.path), node.input[0])

    def op_HardSigmoid(self, node) -> None:
        self.activation(node, oo.hard_sigmoid_activation(node, self.path), node.input[0])

    def op_Softmax(self, node) -> None:
        axis = int(oo.attributes(node).get("axis", -1))
        if len(self.shapes[node.input[0]]) != 2 or axis not in (-1, 1):
            raise MTZError(f"{self.path}: {oo.label(node)} is over axis {axis} of a "
                           f"{len(self.shapes[node.input[0]])}-d tensor: only the classes of (N, classes)")
        self.activation(node, "softmax", node.input[0])

    def op_BatchNormalization(self, node) -> None:
        if not self.foldable(node.input[0]) or len(node.output) > 1:
            raise MTZError(f"{self.path}: {oo.label(node)} does not directly follow a Conv or Gemm whose output "
                           "nothing else reads: export in eval mode after such a layer")
        k = self.tensor[node.input[0]]
        stats = [self.const(node, i, "statistics") for i in range(1, 5)]
        eps = float(oo.attributes(node).get("epsilon", 1e-5))
        n = self.nodes[k]
        n.kernel, n.bias = oo.batchnorm_fold(n.kernel, n.bias, stats, eps)
        self.check_finite(node, n.kernel, n.bias)
        self.tensor[node.output[0]] = k

    def check_finite(self, node, *arrays) -> None:
        if not all(np.all(np.isfinite(a)) for a in arrays):
            raise MTZError(f"{self.path}: {oo.label(node)} has NaN or infinite weights: retrain or repair the model")

    def zero_pad(self, node, k: int, pads) -> int:
        h, w, c = self.nodes[k].out_shape
        shape = (h + sum(pads[0]), w + sum(pads[1]), c)
        pad = ParsedNode(self.node_name(node) + "_pad", "zeropad", [k], {"pads": pads}, out_shape=shape)
        self.nodes.append(pad)
        self.readers[k] = self.readers.get(k, 0) + 1
        return len(self.nodes) - 1

    def op_Conv(self, node) -> None:
        k = self.source_of(node.input[0], node)
        in_shape = self.nodes[k].out_shape
        op, kernel = oo.conv_kernel(node, self.const(node, 1, "weights"), in_shape[-1], self.path)
        bias = self.const(node, 2, "bias") if len(node.input) > 2 and node.input[2] else np.zeros(kernel.shape[-1])
        self.check_finite(node, kernel, bias)
        if op == "depthwise" and self.source_weight(k) == 0:
            raise MTZError(f"{self.path}: depthwise {oo.label(node)} reads the input with no weight layer before "
                           "it: its channels would have no pairing to follow; put a Conv first")
        settings = oo.window(node, kernel.shape[:2], in_shape[:2], self.path)
        if settings["explicit"]:
            k = self.zero_pad(node, k, settings["explicit"])
        attrs = {"kernel_size": list(kernel.shape[:2]), "strides": settings["strides"],
                 "padding": settings["padding"], "dilation": settings["dilation"]}
        self.append(ParsedNode(self.node_name(node), op, [k], attrs, kernel, np.asarray(bias, np.float32),
                               "linear", self.shape(node.output[0])), node.output[0])

    def _pool(self, node, op: str) -> None:
        k = self.source_of(node.input[0], node)
        settings, size = oo.pool_settings(node, self.nodes[k].out_shape[:2], self.path)
        include_pad = int(oo.attributes(node).get("count_include_pad", 0))
        if op == "avgpool" and include_pad and settings["padding"] == "same":
            top_bottom = [list(p) for p in (oo.same_padding(n, s, st, 1) for n, s, st in
                                            zip(self.nodes[k].out_shape[:2], size, settings["strides"]))]
            settings = dict(settings, padding="valid", explicit=top_bottom)
        if settings["explicit"]:
            src = self.nodes[k]
            act = src.activation if src.op in LINEAR_OPS else src.attrs.get("activation")
            if op == "maxpool" and act not in NON_NEGATIVE:
                raise MTZError(f"{self.path}: {oo.label(node)} pads asymmetrically to TensorFlow on values that may "
                               "be negative: pad explicitly before it or pool after a ReLU")
            if op == "avgpool" and not include_pad:
                raise MTZError(f"{self.path}: {oo.label(node)} pads unlike TensorFlow's 'same' without counting the "
                               "padding: export with count_include_pad=True or padding that TensorFlow's 'same' makes")
            k = self.zero_pad(node, k, settings["explicit"])
        attrs = {"pool_size": size, "strides": settings["strides"], "padding": settings["padding"]}
        self.append(ParsedNode(self.node_name(node), op, [k], attrs, out_shape=self.shape(node.output[0])),
                    node.output[0])

    def op_MaxPool(self, node) -> None:
        self._pool(node, "maxpool")

    def op_AveragePool(self, node) -> None:
        self._pool(node, "avgpool")

    def op_GlobalAveragePool(self, node) -> None:
        k = self.source_of(node.input[0], node)
        self.append(ParsedNode(self.node_name(node), "gap", [k], {"keepdims": True},
                               out_shape=self.shape(node.output[0])), node.output[0])

    def op_ReduceMean(self, node) -> None:
        a = oo.attributes(node)
        axes = a.get("axes") if "axes" in a else (self.const(node, 1, "axes").tolist() if len(node.input) > 1 else None)
        if len(self.shapes[node.input[0]]) != 4 or sorted(int(x) % 4 for x in axes or []) != [2, 3]:
            raise MTZError(f"{self.path}: {oo.label(node)} averages axes {axes}: only over H and W of an NCHW map")
        k = self.source_of(node.input[0], node)
        self.append(ParsedNode(self.node_name(node), "gap", [k], {"keepdims": bool(a.get("keepdims", 1))},
                               out_shape=self.shape(node.output[0])), node.output[0])

    def _flatten(self, node) -> None:
        k = self.source_of(node.input[0], node)
        src, out = self.shapes[node.input[0]], self.shapes[node.output[0]]
        if len(out) != 2 or out[0] != src[0]:
            raise MTZError(f"{self.path}: {oo.label(node)} reshapes {tuple(src)} into {tuple(out)}: only flattening "
                           "to (N, features) is supported")
        if len(src) == 2:
            self.tensor[node.output[0]] = k
            return
        if len(src) == 4 and src[2] * src[3] > 1:
            self.flat_from[node.output[0]] = self.nodes[k].out_shape
        self.append(ParsedNode(self.node_name(node), "flatten", [k], out_shape=(int(out[1]),)), node.output[0])

    op_Flatten = op_Reshape = op_Squeeze = _flatten

    def _dense(self, node, kernel: np.ndarray, bias: np.ndarray) -> None:
        x = node.input[0]
        k = self.source_of(x, node)
        if len(self.shapes[x]) != 2:
            raise MTZError(f"{self.path}: {oo.label(node)} multiplies a {len(self.shapes[x])}-d tensor: flatten to "
                           "(N, features) first")
        if x in self.flat_from:
            kernel = oo.nchw_rows_to_nhwc(kernel, self.flat_from[x])
        self.check_finite(node, kernel, bias)
        self.append(ParsedNode(self.node_name(node), "dense", [k], {}, kernel, bias, "linear",
                               (kernel.shape[1],)), node.output[0])

    def op_Gemm(self, node) -> None:
        c = self.const(node, 2, "bias") if len(node.input) > 2 and node.input[2] else None
        kernel, bias = oo.gemm_weights(node, self.const(node, 1, "weights"), c, self.path)
        self._dense(node, kernel, bias)

    def op_MatMul(self, node) -> None:
        w = np.asarray(self.const(node, 1, "weights"), np.float32)
        if w.ndim != 2:
            raise MTZError(f"{self.path}: {oo.label(node)} has {w.ndim}-d weights: only (in, out) matrices")
        self._dense(node, w, np.zeros(w.shape[1], np.float32))

    def op_Add(self, node) -> None:
        a, b = node.input
        if a in self.consts or b in self.consts:
            x, c = (b, a) if a in self.consts else (a, b)
            k = self.tensor.get(x)
            if self.preprocess(node, x, 1.0, self.consts[c]):
                return
            if not self.foldable(x):
                raise MTZError(f"{self.path}: {oo.label(node)} adds a constant to something other than a Conv or "
                               "MatMul output: only a bias there is supported")
            n = self.nodes[k]
            units = n.bias.shape[0]
            if self.consts[c].size not in (1, units):
                raise MTZError(f"{self.path}: {oo.label(node)} adds a constant of shape {self.consts[c].shape}: "
                               "only a per-channel bias is supported")
            n.bias = (n.bias + np.asarray(self.consts[c], np.float32).reshape(-1)).astype(np.float32)
            self.tensor[node.output[0]] = k
            return
        if self.shapes[a] != self.shapes[b]:
            raise MTZError(f"{self.path}: {oo.label(node)} adds shapes {self.shapes[a]} and {self.shapes[b]}: only "
                           "a residual Add of equal shapes is supported")
        ins = [self.source_of(t, node) for t in (a, b)]
        self.append(ParsedNode(self.node_name(node), "add", ins, out_shape=self.shape(node.output[0])), node.output[0])

    def op_Sub(self, node) -> None:
        if node.input[1] not in self.consts or not self.preprocess(node, node.input[0], 1.0,
                                                                     -self.consts[node.input[1]]):
            self.not_preprocessing(node)

    def op_Div(self, node) -> None:
        if node.input[1] not in self.consts or not self.preprocess(node, node.input[0],
                                                                     1.0 / self.consts[node.input[1]], 0.0):
            self.not_preprocessing(node)

    def not_preprocessing(self, node) -> None:
        raise MTZError(f"{self.path}: {oo.label(node)} is supported only as input preprocessing (the input minus, "
                       "times or divided by a per-channel constant, before the first layer)")

    def preprocess(self, node, x: str, scale, offset) -> bool:
        """x·scale + offset right after the input (torchvision's Normalize inside the exported model)
        as one per-task rescale node, as keras_io makes of Rescaling/Normalization; False when x is
        not the input or such a node."""
        k = self.tensor.get(x)
        if k is None or not (k == 0 or self.nodes[k].op == "rescale" and not self.readers.get(k)
                             and self.consumers.get(x) == 1):
            return False
        channels = self.nodes[0].out_shape[-1]
        arrays = []
        for value in (scale, offset):
            value = np.asarray(value, np.float64)
            axis_shape = (1, channels, 1, 1) if len(self.shapes[x]) == 4 else (1, channels)
            if value.size not in (1, channels) or value.size > 1 and value.reshape(
                    (1,) * (len(axis_shape) - value.ndim) + value.shape).shape != axis_shape:
                raise MTZError(f"{self.path}: {oo.label(node)} applies a constant of shape {value.shape} to the "
                               "input: only a scalar or one value per channel is supported")
            arrays.append(np.broadcast_to(value.reshape(-1), (channels,)))
        scale, offset = arrays
        if k:   # (x·s0 + o0)·s + o
            s0, o0 = (np.asarray(self.nodes[k].attrs[key], np.float64) for key in ("scale", "offset"))
            scale, offset = s0 * scale, o0 * scale + offset
            self.nodes[k].attrs = {"scale": scale.tolist(), "offset": offset.tolist()}
            self.tensor[node.output[0]] = k
            return True
        attrs = {"scale": scale.tolist(), "offset": offset.tolist()}
        self.append(ParsedNode(self.node_name(node), "rescale", [0], attrs, out_shape=self.nodes[0].out_shape),
                    node.output[0])
        return True

    def op_Mul(self, node) -> None:
        const = [t for t in node.input if t in self.consts]
        if const:
            x = next(t for t in node.input if t not in self.consts)
            if not self.preprocess(node, x, self.consts[const[0]], 0.0):
                self.not_preprocessing(node)
            return
        ins = [self.source_of(t, node) for t in node.input]
        shapes = [self.nodes[i].out_shape for i in ins]
        if any(len(s) != 3 for s in shapes) or shapes[0][-1] != shapes[1][-1]:
            raise MTZError(f"{self.path}: {oo.label(node)} multiplies {shapes[0]} by {shapes[1]}: only a map by a "
                           "per-channel gate (squeeze-and-excite) is supported")
        is_gate = [int(np.prod(s[:-1])) == 1 for s in shapes]
        attrs = {"map": 1 if is_gate[0] and not is_gate[1] else 0}
        self.append(ParsedNode(self.node_name(node), "multiply", ins, attrs, out_shape=self.shape(node.output[0])),
                    node.output[0])
