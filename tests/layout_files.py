"""The files and independent expectations test_layout_roles.py and test_layout_proof.py check
converters/layout.py against, on real converter output.

Two tiny CNNs (conv → depthwise → 1×1 conv → dense → dense) with fixed random weights and
non-zero biases (no training) are zipped at half sharing — shared blocks, task-only blocks,
bias-less partial products — and converted four ways. The expectations come from the zip
(weights.npz keys, plan.json counts), from a walk of the flatbuffer written here from the
schema, and from byte-level (float) or half-step (int8) comparisons written here; synthetic
edits of the files (a copied block, a lost block, a zeroed bias, an old-style opcode, one scale
per tensor) and a hand-built model cover the cases the converter does not produce.

Every test calls the layout code itself (mutmut runs a mutant only against the tests that called
the mutated function); under tools/checks/mutation.py the files are built once per run (see ``cached_root``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from converters import convert as convert_module
from converters import convert_zip
from converters import flatbuffer as fb
from converters.graph import TaskGraph
from converters.layout import LayoutReport, OperandPlacement, prove_layout
import mtz_mobile
from mtz_mobile.data import TaskData
from mtz_mobile.graph.keras_io import read_model
from mtz_mobile.zipper import ZipConfig, zip_networks
from mtz_mobile.zipper.config import RetrainSettings
from mtz_mobile.zipper.plan import load_zip_dir


OP = schema.BuiltinOperator
TT = schema.TensorType
MODES = ("none", "fp16", "dynamic-int8", "int8")
TASKS = ["a", "b"]
STORED = {TT.FLOAT32: np.float32, TT.FLOAT16: np.float16, TT.INT8: np.int8, TT.INT32: np.int32}


# ----- the files --------------------------------------------------------------------------------

def tiny_cnn(seed: int):
    import keras

    L = keras.layers
    inp = keras.Input((12, 12, 2))
    x = L.Conv2D(6, 3, padding="same", activation="relu")(inp)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = L.Conv2D(4, 1, activation="relu")(x)      # 2 shared channels: per-channel scales of length 2
    x = L.Dense(10, activation="relu")(L.Flatten()(x))
    model = keras.Model(inp, L.Dense(4)(x))
    rng = np.random.default_rng(seed)
    # biases well away from zero: a zero bias is folded away by the converter
    model.set_weights([rng.normal(0, 1 / np.sqrt(np.prod(w.shape[:-1])), w.shape) if w.ndim > 1
                       else rng.choice([-1, 1], w.shape) * rng.uniform(0.1, 0.5, w.shape) for w in model.get_weights()])
    return model


@dataclass
class Files:
    zip_dir: Path
    plan: dict
    operands: list            # (name, kind, owners, values) as convert.py derives them
    paths: dict               # mode → the converted file
    reports: dict             # mode → convert_zip's LayoutReport (None when read from the cache)


def build_files(root: Path) -> dict:
    """Zip the two CNNs at half sharing and convert the zip four ways; returns convert_zip's reports."""
    models = {}
    for task, seed in (("a", 1), ("b", 2)):
        tiny_cnn(seed).save(root / f"{task}.keras")
        models[task] = read_model(root / f"{task}.keras")
    rng = np.random.default_rng(0)
    datas = {}
    for task, top in (("a", 1.0), ("b", 3.0)):   # different input ranges: int8 biases split per task
        x = rng.uniform(0, top, (16, 12, 12, 2)).astype(np.float32)
        y = rng.integers(0, 4, 16)
        datas[task] = TaskData("npz:synthetic", x, y, x[:4], y[:4], [str(c) for c in range(4)])
    config = ZipConfig(shared=[0.5], method="random", compensation="none", calibration_samples=16,
                       retrain=RetrainSettings(iterations=0))
    zip_networks(models, datas, config, root / "zip", progress=False)
    reports = {mode: convert_zip(root / "zip", root / f"{mode}.tflite", quantize=mode, datas=datas,
                                 representative_samples=16).layout for mode in MODES}
    operands = convert_module.graph_operands(TaskGraph(load_zip_dir(root / "zip").network))
    np.savez(root / "operands.npz", **{f"{i}|{name}|{kind}|{'+'.join(owners)}": values
                                       for i, (name, kind, owners, values) in enumerate(operands)})
    return reports


def cached_root() -> Path | None:
    """tools/checks/mutation.py sets MTZ_TEST_MODEL_CACHE: no target mutates the zipper or TensorFlow's
    converter, so the files are built once per run (keyed by the sources that make them) and each
    mutant runs only the layout code against them — seconds instead of a conversion per mutant."""
    cache = os.environ.get("MTZ_TEST_MODEL_CACHE")
    if not cache:
        return None
    import tensorflow as tf

    digest = hashlib.sha256(Path(__file__).read_bytes() + tf.__version__.encode())
    for package in (Path(convert_module.__file__).parent, Path(mtz_mobile.__file__).parent):
        for path in sorted(package.rglob("*.py")):
            digest.update(path.read_bytes())
    return Path(cache) / f"layout-{digest.hexdigest()[:16]}"


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> Files:
    cached = cached_root()
    if cached is not None and cached.is_dir():
        root, reports = cached, dict.fromkeys(MODES)
    else:
        root = tmp_path_factory.mktemp("layout")
        reports = build_files(root)
        if cached is not None:
            shutil.copytree(root, cached.with_suffix(".partial"), dirs_exist_ok=True)
            os.replace(cached.with_suffix(".partial"), cached)
    with np.load(root / "operands.npz") as z:
        operands = [(name, kind, tuple(owners.split("+")), z[key])
                    for key in sorted(z.files, key=lambda k: int(k.split("|")[0]))
                    for _, name, kind, owners in [key.split("|")]]
    return Files(root / "zip", json.loads((root / "zip" / "plan.json").read_text()), operands,
                 {mode: root / f"{mode}.tflite" for mode in MODES}, reports)


def load(files: Files, mode: str):
    return fb.load_model(files.paths[mode])


def proof(files: Files, mode: str, file_bytes: int = 0) -> LayoutReport:
    """The proof run here on the written file. (mutmut runs only the tests that call a mutated
    function, so each test calls the layout code itself instead of reading the fixture's reports.)"""
    return prove_layout(load(files, mode), file_bytes, files.operands, TASKS, allow_split_bias=(mode == "int8"))


# ----- expectations, from the schema and the zip alone ------------------------------------------

def opcode(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return code.builtinCode or code.deprecatedBuiltinCode   # old files fill only the deprecated field


def walk_roles(model) -> dict[int, str]:
    """Each constant buffer by the operators that read it (a DEQUANTIZE's output stands for its input)."""
    const = {i for i, b in enumerate(model.buffers) if b.data is not None and len(b.data)}
    roles: dict[int, str] = {}
    for sg in model.subgraphs:
        source = {op.outputs[0]: sg.tensors[op.inputs[0]].buffer for op in sg.operators
                  if opcode(model, op) == OP.DEQUANTIZE and sg.tensors[op.inputs[0]].buffer in const}
        for op in sg.operators:
            code = opcode(model, op)
            for pos, ti in enumerate(op.inputs if op.inputs is not None else []):
                buf = -1 if ti == -1 else sg.tensors[ti].buffer
                buf = buf if buf in const else source.get(ti)
                if buf is None:
                    continue
                if code in (OP.FULLY_CONNECTED, OP.CONV_2D, OP.DEPTHWISE_CONV_2D) and pos in (1, 2):
                    role = ("weights", "bias")[pos - 1]
                else:
                    role = "bias" if code == OP.ADD else "constant"
                if role != "constant" or roles.get(buf) not in ("weights", "bias"):
                    roles[buf] = role
    for buf, role in roles.items():
        if role == "bias" and not any(fb.buffer_bytes(model, buf)):
            roles[buf] = "zero-bias"
    return roles


def operand_keys(zip_dir: Path, kind: str) -> set[tuple[str, str, str]]:
    """(node, output group, owners) of every operand of ``kind``, from weights.npz's keys."""
    with np.load(zip_dir / "weights.npz") as z:
        keys = [k.rsplit("/", 3) for k in z.files]
    return {(node, groups.split("-")[-1], owners) for node, k, groups, owners in keys if k == kind}


def half_step_equal(stored: np.ndarray, t, values: np.ndarray) -> bool:
    """Dequantised ``stored`` within half a quantisation step (per channel where the tensor says so)."""
    q = t.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return False
    axis = q.quantizedDimension if len(q.scale) > 1 else stored.ndim - 1
    s = np.moveaxis(stored.astype(np.float64), axis, -1)
    v = np.moveaxis(values.astype(np.float64), axis, -1)
    zero = np.asarray(q.zeroPoint, np.float64) if q.zeroPoint is not None else 0.0
    step = np.asarray(q.scale, np.float64)
    return bool(np.all(np.abs((s - zero) * step - v) <= (0.5 + 1e-5) * step))   # the scale is a float32


def holders(model, values: np.ndarray) -> list[tuple[int, int]]:
    """(subgraph, tensor) of every constant tensor that stores ``values``: the same bytes after the
    file's float cast, or the same values within half a step for integer tensors."""
    out = []
    for sgi, sg in enumerate(model.subgraphs):
        for ti, t in enumerate(sg.tensors):
            data = fb.buffer_bytes(model, t.buffer)
            if not data or t.type not in STORED or tuple(t.shape) != values.shape:
                continue
            if t.type in (TT.FLOAT32, TT.FLOAT16):
                same = data == values.astype(STORED[t.type]).tobytes()
            else:
                same = half_step_equal(np.frombuffer(data, STORED[t.type]).reshape(values.shape), t, values)
            if same:
                out.append((sgi, ti))
    return out


def sig_of(model) -> dict[int, str]:
    return {sig.subgraphIndex: fb.decode(sig.signatureKey) for sig in model.signatureDefs}


def buffers_of(model, found) -> list[int]:
    return sorted({model.subgraphs[sgi].tensors[ti].buffer for sgi, ti in found})


def shared_operands(files: Files, kind: str | None = None):
    return [o for o in files.operands if len(o[2]) > 1 and kind in (None, o[1])]


def largest_shared_kernel(files: Files):
    return max(shared_operands(files, "kernel"), key=lambda o: o[3].size)


def nbytes(model, buf: int) -> int:
    return len(fb.buffer_bytes(model, buf))


def synthetic_model():
    """One subgraph, buffers 1–7: an old-style FC reading tensor 0 as weights, a CONV_2D whose bias
    holds 0.0 and 1.0, an ADD of a constant, a buffer read as weights and as a shape, a
    DEQUANTIZE of an activation, an optional input before a constant, and a zero bias."""
    def const(values):
        b = schema.BufferT()
        b.data = np.frombuffer(np.asarray(values, np.float32).tobytes(), np.uint8).copy()
        return b

    def tensor(buf, shape):
        t = schema.TensorT()
        t.buffer, t.shape, t.type = buf, list(shape), TT.FLOAT32
        return t

    def op(code, inputs, outputs):
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, None if inputs is None else list(inputs), list(outputs)
        return o

    codes = []
    for builtin, deprecated in ((0, OP.FULLY_CONNECTED), (OP.CONV_2D, OP.CONV_2D), (OP.ADD, OP.ADD),
                                (OP.RESHAPE, OP.RESHAPE), (OP.DEQUANTIZE, OP.DEQUANTIZE),
                                (OP.CONCATENATION, OP.CONCATENATION)):
        c = schema.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode = builtin, deprecated
        codes.append(c)
    empty = schema.BufferT()
    buffers = [empty, const([[1, 2]]), const([0.0, 1.0]), const([3.0]), const([[4, 5]]), schema.BufferT(),
               const([6.0]), const([0.0, 0.0]), schema.BufferT(), const([7.0]), const([8.0]), const([2.5]),
               const([[9, 9]])]
    tensors = [tensor(1, (1, 2)), tensor(5, (1, 2)), tensor(2, (2,)), tensor(3, (1,)), tensor(4, (1, 2)),
               tensor(8, (1, 2)), tensor(6, (1,)), tensor(7, (2,)), tensor(5, (1, 2)), tensor(9, (1,)),
               tensor(10, (1,)), tensor(11, ()), tensor(12, (1, 2))]
    tensors[11].shape = None          # a constant read by nothing, with no shape at all
    ops = [op(0, [1, 0, -1], [1]),          # FC: tensor 0 is the weights, no bias
           op(1, [1, 4, 2], [5]),           # CONV_2D: weights buffer 4, bias buffer 2 (0.0, 1.0)
           op(2, [5, 3], [1]),              # ADD of a constant: a loose bias
           op(3, [5, 4], [1]),              # RESHAPE reading buffer 4 (weights above): stays weights
           op(4, [8], [5]),                 # DEQUANTIZE of an activation: nothing to follow
           op(5, [5, -1, 6], [1]),          # an optional input before a constant
           op(3, [5, 9], [1]),              # a shape first …
           op(0, [5, 9, 7], [1]),           # … then weights: the later use wins; bias of zeros
           op(5, [4, 10], [1]),             # weights read as a constant, then another constant
           op(3, [5, 3], [1]),              # the ADD's bias read as a shape: stays bias
           op(1, [12, 0, -1, 12], [5]),     # a CONV_2D's input and fourth operand: constants
           op(5, None, [1])]                # no inputs at all
    sg = schema.SubGraphT()
    sg.tensors, sg.operators, sg.inputs, sg.outputs = tensors, ops, [1], [1]
    model = schema.ModelT()
    model.operatorCodes, model.subgraphs, model.buffers = codes, [sg], buffers
    sig = schema.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = "a", 0
    model.signatureDefs = [sig]
    return model


# ----- weight bytes -----------------------------------------------------------------------------

def independent_duplicates(files: Files, mode: str) -> tuple[int, int]:
    """(bytes, count) of the extra copies of shared biases: an op in b's subgraph reading a shared
    weights buffer with a bias buffer other than a's op on the same weights."""
    model = load(files, mode)
    sgs = {v: k for k, v in sig_of(model).items()}
    bias_of = {}
    for task in TASKS:
        sg = model.subgraphs[sgs[task]]
        for op in sg.operators:
            if opcode(model, op) in (OP.FULLY_CONNECTED, OP.CONV_2D, OP.DEPTHWISE_CONV_2D) \
                    and len(op.inputs) > 2 and op.inputs[2] >= 0:
                bias_of.setdefault(sg.tensors[op.inputs[1]].buffer, {})[task] = sg.tensors[op.inputs[2]].buffer
    split = [b["b"] for b in bias_of.values() if len(b) == 2 and b["a"] != b["b"] and any(fb.buffer_bytes(model, b["a"]))]
    return sum(nbytes(model, b) for b in split), len(split)


def zip_blocks(zip_dir: Path) -> dict[str, list[np.ndarray]]:
    """Each kind's blocks (shared ones once), from weights.npz."""
    out = {"kernel": [], "bias": []}
    with np.load(zip_dir / "weights.npz") as z:
        for key in z.files:
            out[key.rsplit("/", 3)[1]].append(z[key])
    return out


def dequantised(model, found):
    sgi, ti = found
    t = model.subgraphs[sgi].tensors[ti]
    q = t.quantization
    stored = np.frombuffer(fb.buffer_bytes(model, t.buffer), STORED[t.type]).reshape(tuple(t.shape)).astype(np.float64)
    scale = np.asarray(q.scale, np.float64)
    zero = np.asarray(q.zeroPoint, np.float64)
    axis = q.quantizedDimension if len(scale) > 1 else 0
    shape = [1] * stored.ndim
    shape[axis] = -1 if len(scale) > 1 else 1
    return (stored - zero.reshape(shape)) * scale.reshape(shape), np.broadcast_to(scale.reshape(shape), stored.shape)


# ----- the proof ------------------------------------------------------------------------------

def expected_placements(files: Files, mode: str) -> list[OperandPlacement]:
    model = load(files, mode)
    uses_sigs = {}
    for sgi, sg in enumerate(model.subgraphs):
        for t in sg.tensors:
            uses_sigs.setdefault(t.buffer, set()).add(sig_of(model)[sgi])
    out = []
    for name, kind, owners, values in shared_operands(files):
        bufs = buffers_of(model, holders(model, values))
        out.append(OperandPlacement(name, kind, list(owners), sum(nbytes(model, b) for b in bufs), bufs,
                                    sorted(set().union(*(uses_sigs[b] for b in bufs)))))
    return out
