"""Reading ONNX models (what torch.onnx.export writes) into the plain graph the zipper works on.

The file is parsed as data (protobuf), never run as code; weights must be inside it (no external
data files, so the source hash covers them). The model is checked before anything is built from
it: one float input of rank 2 (N, features) or 4 (N, C, H, W), one output, the default domain at
opset MIN_OPSET or newer, fixed sizes on every axis but the batch (which is fixed to 1 here), and
shapes that ONNX's inference resolves for every tensor. onnx_graph then maps the nodes.

Layout: the network runs NHWC as TensorFlow and LiteRT do (the zipped file takes NHWC input,
as for a Keras model): a PyTorch user's NCHW tensor x goes in as x.permute(0, 2, 3, 1).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import sha256_of

from .keras_io import ParsedModel
from .onnx_graph import OnnxGraphReader

MIN_OPSET = 13   # Softmax over the last axis, ReduceMean/Squeeze as torch exports them; torch writes 17+
SOURCE_LAYOUT = "NCHW"


def _onnx():
    """The onnx package, an optional dependency (``pip install 'mtz-mobile[onnx]'``)."""
    try:
        import onnx
    except ImportError as exc:
        raise MTZError("reading .onnx models needs the onnx package: pip install 'mtz-mobile[onnx]'") from exc
    return onnx


def load_onnx(path: str | os.PathLike):
    """The ModelProto, checked (see the module docstring): every refusal is one MTZError line."""
    onnx = _onnx()
    path = Path(path)
    if not path.is_file():
        raise MTZError(f"model file {path} does not exist: give the path of a .onnx file")
    try:
        model = onnx.load_model_from_string(path.read_bytes())   # protobuf parsing only
    except Exception as exc:   # DecodeError and friends: a truncated or damaged file
        raise MTZError(f"{path} is not a readable ONNX file ({type(exc).__name__}): it is truncated or damaged; "
                       "export it again") from None
    if not model.graph.node:
        raise MTZError(f"{path} holds no ONNX graph (truncated or not a model): export it again")
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    version = opsets.get("ai.onnx")
    if version is None or version < MIN_OPSET:
        raise MTZError(f"{path} uses ONNX opset {version}: mtz-mobile reads opset {MIN_OPSET} or newer; export again "
                       "with torch.onnx.export(..., opset_version=17)")
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise MTZError(f"{path} keeps weights ({external[0]}, ...) in external data files: export with "
                       "external_data=False so the .onnx file holds them")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise MTZError(f"{path} is not a valid ONNX model ({first}): export it again") from None
    return model


def _fix_input(model, path) -> str:
    """Fix the batch axis to 1 in place; refuse other dynamic sizes. Returns the input's name."""
    onnx = _onnx()
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise MTZError(f"{path}: the zipper takes models with one input and one output, this one has "
                       f"{len(inputs)} and {len(graph.output)}")
    tensor_type = inputs[0].type.tensor_type
    if tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise MTZError(f"{path}: input {inputs[0].name!r} is not float32: export with a float input")
    dims = tensor_type.shape.dim
    if len(dims) not in (2, 4):
        raise MTZError(f"{path}: input {inputs[0].name!r} has rank {len(dims)}: the zipper reads (N, C, H, W) "
                       "images and (N, features) vectors")
    for axis, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            continue
        if axis == 0:
            d.Clear()
            d.dim_value = 1
            continue
        raise MTZError(f"{path}: input {inputs[0].name!r} has a dynamic size on axis {axis} "
                       f"({d.dim_param or 'unknown'}): export with a fixed input size (dynamic axes only on the batch)")
    if dims[0].dim_value != 1:
        raise MTZError(f"{path}: input {inputs[0].name!r} has a fixed batch of {dims[0].dim_value}: export with a "
                       "batch of 1 or a dynamic batch axis")
    return inputs[0].name


def _shapes(model, path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape on a batch of 1, from ONNX's shape inference; a tensor a node reads
    whose shape it cannot resolve is refused (its size would depend on the data)."""
    onnx = _onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise MTZError(f"{path}: ONNX shape inference fails ({first}): export with fixed input sizes") from None
    shapes = {}
    for info in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = info.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            shapes[info.name] = tuple(int(d.dim_value) for d in dims)
    weights = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        for name in list(node.input) + list(node.output[:1]):
            if name and name not in weights and name not in shapes and not _constant_output(model, name):
                raise MTZError(f"{path}: {node.op_type} node {node.name or node.output[0]!r} has a dynamic shape on "
                               f"{name!r} that cannot be fixed: export with fixed input sizes and constant shapes")
    return shapes


def _constant_output(model, name: str) -> bool:
    return any(n.op_type == "Constant" and name in n.output for n in model.graph.node)


def _constants(model) -> dict[str, np.ndarray]:
    onnx = _onnx()
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Constant":
            continue
        (attr,) = node.attribute
        value = onnx.helper.get_attribute_value(attr)
        consts[node.output[0]] = numpy_helper.to_array(value) if attr.name == "value" else np.asarray(value)
    return {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in consts.items()}


def parse_onnx(model, path: str = "<memory>", sha256: str = ""):
    """A checked ModelProto as a keras_io.ParsedModel (NHWC, see the module docstring)."""
    input_name = _fix_input(model, path)
    reader = OnnxGraphReader(path, model.graph, _shapes(model, path), _constants(model), input_name)
    nodes = reader.read()
    return ParsedModel(path, sha256, reader.input_shape, nodes)


def read_onnx_model(path: str | os.PathLike):
    return parse_onnx(load_onnx(path), str(path), sha256_of(path))


class OnnxPredictor:
    """The original ONNX model through onnxruntime, fed as the zipper feeds a task: NHWC samples
    (the data specs' layout), transposed to the model's NCHW; ``predict`` as Keras' signature."""

    def __init__(self, path: str | os.PathLike):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MTZError("running .onnx models needs onnxruntime: pip install 'mtz-mobile[onnx]'") from exc
        model = load_onnx(path)
        self.input_name = _fix_input(model, str(path))   # a dynamic batch becomes 1: run sample by sample
        dims = [d.dim_value for d in next(i for i in model.graph.input if i.name == self.input_name)
                .type.tensor_type.shape.dim]
        self.shape = tuple(dims[1:])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def predict(self, x, batch_size: int | None = None, verbose: int = 0) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if len(self.shape) == 3:   # NHWC (or HW for one channel) → NCHW
            c, h, w = self.shape
            x = x.reshape(len(x), h, w, c).transpose(0, 3, 1, 2)
        else:
            x = x.reshape(len(x), *self.shape)
        return np.concatenate([self.session.run(None, {self.input_name: x[i:i + 1]})[0] for i in range(len(x))])
