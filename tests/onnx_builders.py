"""Small ONNX models in torchvision's shapes, built with onnx.helper as torch.onnx.export writes
them (opset 17, NCHW, explicit symmetric pads, BatchNormalization after Conv, ReLU6 as Clip,
SiLU as Sigmoid·Mul, a dynamic batch axis): MobileNetV2/V3's inverted residual with a depthwise
convolution and squeeze-and-excite, ResNet's basic block (and its stride-2 shortcut), and the
classifier heads. Weights and BatchNorm statistics are random and far from the identity."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class OnnxNet:
    def __init__(self, in_shape: tuple[int, ...], seed: int = 0, opset: int = OPSET):
        self.rng = np.random.default_rng(seed)
        self.in_shape, self.opset = tuple(in_shape), opset
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, kind: str) -> str:
        self.count += 1
        return f"/block{self.count}/{kind}"

    def weight(self, array, kind="w") -> str:
        name = f"{self.name(kind)}.weight"
        self.inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def ints(self, values) -> str:
        name = f"{self.name('shape')}.value"
        self.inits.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        name = self.name(op)
        self.nodes.append(helper.make_node(op, inputs, [name + "_out"], name=name, **attrs))
        return name + "_out"

    def conv(self, x, cin, cout, k=3, s=1, p=None, groups=1, bn=True, act="Relu", bias=False, perm_in=None,
             perm_out=None):
        """``perm_in``/``perm_out`` reorder input and output channels of the same random weights (a
        permuted copy computes the same function when the next layer's ``perm_in`` is this ``perm_out``)."""
        p = k // 2 if p is None else p
        out = np.arange(cout) if perm_out is None else perm_out
        w = self.rng.normal(0, 1.5 / np.sqrt(cin // groups * k * k), (cout, cin // groups, k, k))[out]
        w = w if perm_in is None or groups > 1 else w[:, perm_in]
        ins = [x, self.weight(w)] + ([self.weight(self.rng.normal(0, 0.1, cout)[out], "b")] if bias else [])
        y = self.node("Conv", ins, kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p], group=groups)
        if bn:
            stats = [self.rng.uniform(0.5, 1.5, cout), self.rng.uniform(-0.3, 0.3, cout),
                     self.rng.uniform(-0.3, 0.3, cout), self.rng.uniform(0.5, 1.5, cout)]
            y = self.node("BatchNormalization", [y] + [self.weight(v[out], "bn") for v in stats], epsilon=1e-5)
        return self.act(y, act)

    def act(self, y, act):
        if act == "Relu6":
            return self.node("Clip", [y, self.weight(np.array(0.0), "min"), self.weight(np.array(6.0), "max")])
        if act == "SiLU":
            return self.node("Mul", [y, self.node("Sigmoid", [y])])
        if act == "HardSigmoid":
            return self.node("HardSigmoid", [y], alpha=1.0 / 6, beta=0.5)
        return self.node(act, [y]) if act else y

    def se(self, x, c, squeeze, gate="HardSigmoid"):
        """torchvision's SqueezeExcitation: pool, 1×1 conv, ReLU, 1×1 conv, gate, scale."""
        s = self.node("GlobalAveragePool", [x])
        s = self.conv(s, c, squeeze, k=1, bn=False, bias=True, act="Relu")
        s = self.conv(s, squeeze, c, k=1, bn=False, bias=True, act=gate)
        return self.node("Mul", [x, s])

    def inverted_residual(self, x, cin, cout, expand, stride=1, se=True, act="Relu6"):
        hidden = cin * expand
        y = self.conv(x, cin, hidden, k=1, act=act)
        y = self.conv(y, hidden, hidden, k=3, s=stride, groups=hidden, act=act)
        if se:
            y = self.se(y, hidden, max(hidden // 4, 2))
        y = self.conv(y, hidden, cout, k=1, act=None)
        return self.node("Add", [x, y]) if stride == 1 and cin == cout else y

    def basic_block(self, x, cin, cout, stride=1):
        y = self.conv(x, cin, cout, k=3, s=stride)
        y = self.conv(y, cout, cout, k=3, act=None)
        short = x if stride == 1 and cin == cout else self.conv(x, cin, cout, k=1, s=stride, act=None)
        return self.node("Relu", [self.node("Add", [y, short])])

    def head(self, x, c, classes, hidden=None, pool=True):
        if pool:
            x = self.node("GlobalAveragePool", [x])
        x = self.node("Flatten", [x], axis=1)
        if hidden:
            x = self.dense(x, c, hidden)
            x = self.node("Dropout", [self.node("HardSwish", [x])])
            c = hidden
        return self.dense(x, c, classes)

    def dense(self, x, cin, cout, perm_in=None, perm_out=None):
        out = np.arange(cout) if perm_out is None else perm_out
        w = self.rng.normal(0, 1.0 / np.sqrt(cin), (cout, cin))[out]
        w = w if perm_in is None else w[:, perm_in]
        b = self.rng.normal(0, 0.1, cout)[out]
        return self.node("Gemm", [x, self.weight(w), self.weight(b, "b")], transB=1)

    def model(self, out: str, batch="N") -> onnx.ModelProto:
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, *self.in_shape])
        output = helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, None])
        graph = helper.make_graph(self.nodes, "net", [inp], [output], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="tests/onnx_builders")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def mobilenet_like(seed=0, in_shape=(3, 20, 20), classes=10, width=8) -> onnx.ModelProto:
    """A MobileNetV2/V3-shaped net: stem (stride 2), an inverted residual with SE, a stride-2
    depthwise block, a SiLU block (EfficientNet), 1×1 conv + HardSwish, pool, two-layer head."""
    n = OnnxNet(in_shape, seed)
    x = n.conv("input", in_shape[0], width, k=3, s=2, act="Relu6")
    x = n.inverted_residual(x, width, width, expand=2)
    x = n.inverted_residual(x, width, width * 2, expand=2, stride=2, se=False)
    x = n.inverted_residual(x, width * 2, width * 2, expand=2, se=True, act="SiLU")
    x = n.conv(x, width * 2, width * 4, k=1, act="HardSwish")
    return n.model(n.head(x, width * 4, classes, hidden=16))


def resnet_like(seed=0, in_shape=(3, 20, 20), classes=10, width=8) -> onnx.ModelProto:
    """ResNet-18's shape in small: stem conv, ReLU, max pool (3×3, stride 2, pad 1), a basic
    block, a stride-2 block with its 1×1 shortcut, average pool, Flatten of a 2×2 map, Gemm."""
    n = OnnxNet(in_shape, seed)
    x = n.conv("input", in_shape[0], width, k=3, s=1)
    x = n.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = n.basic_block(x, width, width)
    x = n.basic_block(x, width, width * 2, stride=2)
    x = n.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
    return n.model(n.head(x, width * 2 * 4, classes, pool=False))


def conv_chain(seed=0, in_shape=(1, 28, 28), widths=(8, 12, 16), classes=10, perms=None,
               grid=1) -> onnx.ModelProto:
    """Conv (stride 2) → depthwise → 1×1 Conv → pool → Dense → Dense, every hidden layer's units
    reordered by ``perms`` (one permutation per hidden weight layer but the depthwise, which
    follows its input's order): the same function for every ``perms``. ``grid`` > 1 pools to a
    grid × grid map (AveragePool) and flattens it (then ``perms`` must be None)."""
    p1, p2, p3 = perms or (None, None, None)
    n = OnnxNet(in_shape, seed)
    x = n.conv("input", in_shape[0], widths[0], k=3, s=2, act="Relu6", perm_out=p1)
    x = n.conv(x, widths[0], widths[0], k=3, groups=widths[0], act="Relu6", perm_out=p1)
    x = n.conv(x, widths[0], widths[1], k=1, act="Relu", perm_in=p1, perm_out=p2)
    size = in_shape[1] // 2 // grid
    pooled = n.node("GlobalAveragePool", [x]) if grid == 1 else n.node("AveragePool", [x], kernel_shape=[size, size],
                                                                          strides=[size, size])
    x = n.node("Flatten", [pooled], axis=1)
    x = n.node("Relu", [n.dense(x, widths[1] * grid * grid, widths[2], perm_in=p2, perm_out=p3)])
    return n.model(n.dense(x, widths[2], classes, perm_in=p3))


def mlp(seed=0, in_shape=(1, 28, 28), hidden=(48, 24), classes=10) -> onnx.ModelProto:
    n = OnnxNet(in_shape, seed)
    x = n.node("Flatten", ["input"], axis=1)
    c = int(np.prod(in_shape))
    for h in hidden:
        x, c = n.node("Relu", [n.dense(x, c, h)]), h
    return n.model(n.node("Softmax", [n.dense(x, c, classes)], axis=-1))


def save(model: onnx.ModelProto, path) -> str:
    onnx.save_model(model, str(path))
    return str(path)


def fit_head(model: onnx.ModelProto, x_nchw: np.ndarray, labels: np.ndarray, ridge: float = 1e-2) -> onnx.ModelProto:
    """The model with its last Gemm refitted by ridge regression on one-hot labels over the
    features onnxruntime computes before it: random features with a fitted classifier, so the
    model answers well above chance (the zipper refuses originals near chance) without training."""
    import onnxruntime as ort

    last = model.graph.node[-1]
    assert last.op_type == "Gemm" and helper.get_attribute_value(last.attribute[0]) == 1   # transB=1
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.append(helper.make_tensor_value_info(last.input[0], TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    features = session.run(None, {"input": x_nchw.astype(np.float32)})[0].astype(np.float64)
    features = np.hstack([features, np.ones((len(features), 1))])
    classes = int(labels.max()) + 1
    target = np.eye(classes)[labels]
    w = np.linalg.solve(features.T @ features + ridge * len(features) * np.eye(features.shape[1]), features.T @ target)
    weights = {t.name: t for t in model.graph.initializer}
    weights[last.input[1]].CopyFrom(numpy_helper.from_array(w[:-1].T.astype(np.float32), last.input[1]))
    weights[last.input[2]].CopyFrom(numpy_helper.from_array(w[-1].astype(np.float32), last.input[2]))
    return model
