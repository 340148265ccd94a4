"""converters/layout.py against expectations computed without it, on real converter output.

Two tiny CNNs (conv → depthwise → 1×1 conv → dense → dense) with fixed random weights and
non-zero biases (no training) are zipped at half sharing — shared blocks, task-only blocks,
bias-less partial products — and converted four ways. The expectations come from the zip
(weights.npz keys, plan.json counts), from a walk of the flatbuffer written here from the
schema, and from byte-level (float) or half-step (int8) comparisons written here; synthetic
edits of the files (a copied block, a lost block, a zeroed bias, an old-style opcode, one scale
per tensor) and a hand-built model cover the cases the converter does not produce.

Every test calls the layout code itself (mutmut runs a mutant only against the tests that called
the mutated function); under tools/mutation.py the files are built once per run (see ``cached_root``).
"""

from __future__ import annotations

import copy
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
from converters.layout import (LayoutReport, OperandPlacement, buffer_roles, locate, prove_layout,
                               split_weight_bytes)
import mtz_mobile
from mtz_mobile.data import TaskData
from mtz_mobile.errors import MTZError
from mtz_mobile.graph.keras_io import read_model
from mtz_mobile.zipper import ZipConfig, zip_networks
from mtz_mobile.zipper.config import RetrainSettings
from mtz_mobile.zipper.plan import load_zip_dir

from test_converter import give_own_copy, shared_operands_in_zip

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
    """tools/mutation.py sets MTZ_TEST_MODEL_CACHE: no target mutates the zipper or TensorFlow's
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


@pytest.fixture(scope="module")
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


# ----- buffer roles -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_roles_follow_the_operators(files, mode):
    model = load(files, mode)
    roles = buffer_roles(model)
    assert roles == walk_roles(model)
    counts = {r: sum(v == r for v in roles.values()) for r in ("weights", "bias", "zero-bias", "constant")}
    # one buffer per kernel operand; one per bias operand, plus the int8 copies of split biases
    assert counts["weights"] == len(operand_keys(files.zip_dir, "kernel")) == 18
    assert counts["bias"] == len(operand_keys(files.zip_dir, "bias")) + independent_duplicates(files, mode)[1]
    # the 1×1 conv's bias-less partial products into its shared group share one bias of zeros
    assert counts["zero-bias"] == 1
    assert counts["constant"] >= 1 and all(model.buffers[b].data is not None for b in roles)


def test_roles_read_old_style_opcodes(files):
    """A file whose operator codes fill only deprecated_builtin_code (builtin_code 0 = ADD) reads the same."""
    model = load(files, "none")
    roles = buffer_roles(model)
    for code in model.operatorCodes:
        code.builtinCode = 0
    assert buffer_roles(model) == roles
    for code in model.operatorCodes:   # and one that fills only builtin_code
        code.builtinCode, code.deprecatedBuiltinCode = code.deprecatedBuiltinCode, 0
    assert buffer_roles(model) == roles


def test_fp16_roles_are_the_dequantize_sources(files):
    model = load(files, "fp16")
    roles = buffer_roles(model)
    weights = [b for b, r in roles.items() if r in ("weights", "bias")]
    types = {t.buffer: t.type for sg in model.subgraphs for t in sg.tensors}
    assert weights and all(types[b] == TT.FLOAT16 for b in weights)


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


def test_roles_of_a_hand_built_model():
    model = synthetic_model()
    expected = {1: "weights", 2: "bias", 3: "bias", 4: "weights", 6: "constant", 9: "weights", 7: "zero-bias",
                10: "constant", 12: "constant"}
    assert buffer_roles(model) == expected == walk_roles(model)


def test_locate_in_a_hand_built_model():
    """Shapes as the file gives them: a tensor without a shape is a candidate for nothing it can match."""
    model = synthetic_model()
    assert locate(model, np.array([3.0])) == [(0, 3)]
    assert locate(model, np.array([[4.0, 5.0]], np.float32)) == [(0, 4)]
    assert locate(model, np.array(2.5)) == [] and locate(model, np.array([2.5])) == []


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


def test_int8_biases_split_and_the_rest_do_not(files):
    assert independent_duplicates(files, "int8")[1] >= 2
    for mode in ("none", "fp16", "dynamic-int8"):
        assert independent_duplicates(files, mode) == (0, 0)


@pytest.mark.parametrize("mode, size", [("none", 4), ("fp16", 2)])
def test_weight_bytes_are_the_plans_parameters(files, mode, size):
    params = files.plan["params"]
    layout = proof(files, mode)
    model = load(files, mode)
    total, shared, per_task = split_weight_bytes(fb.buffer_uses(model), buffer_roles(model), TASKS)
    assert (total, shared, per_task) == (layout.weight_bytes, layout.shared_weight_bytes, layout.task_weight_bytes)
    assert total == size * params["zipped"]
    assert shared == size * params["shared"] > 0
    assert per_task == {t: size * (params["per_task"][t] - params["shared"]) for t in TASKS}
    assert layout.duplicated_bytes == 0


def zip_blocks(zip_dir: Path) -> dict[str, list[np.ndarray]]:
    """Each kind's blocks (shared ones once), from weights.npz."""
    out = {"kernel": [], "bias": []}
    with np.load(zip_dir / "weights.npz") as z:
        for key in z.files:
            out[key.rsplit("/", 3)[1]].append(z[key])
    return out


def test_int8_weight_bytes_are_one_byte_per_weight_four_per_bias(files):
    blocks = zip_blocks(files.zip_dir)
    layout = proof(files, "int8")
    dup_bytes, dup_count = independent_duplicates(files, "int8")
    kernels, biases = sum(b.size for b in blocks["kernel"]), sum(b.size for b in blocks["bias"])
    assert layout.weight_bytes == kernels + 4 * biases + dup_bytes
    assert layout.duplicated_bytes == dup_bytes > 0
    assert layout.shared_weight_bytes + sum(layout.task_weight_bytes.values()) == layout.weight_bytes
    shared_params = files.plan["params"]["shared"]
    shared_bias = sum(o[3].size for o in shared_operands(files, "bias"))
    assert layout.shared_weight_bytes == (shared_params - shared_bias) + 4 * shared_bias - dup_bytes


def test_dynamic_int8_weight_bytes_are_the_role_buffers(files):
    model = load(files, "dynamic-int8")
    layout = proof(files, "dynamic-int8")
    roles = walk_roles(model)
    own = {t: 0 for t in TASKS}
    users = {}
    for sgi, sg in enumerate(model.subgraphs):
        for t in sg.tensors:
            users.setdefault(t.buffer, set()).add(sig_of(model)[sgi])
    weights = [b for b, r in roles.items() if r in ("weights", "bias")]
    for b in weights:
        if len(users[b]) == 1:
            own[next(iter(users[b]))] += nbytes(model, b)
    assert layout.weight_bytes == sum(nbytes(model, b) for b in weights)
    assert layout.shared_weight_bytes == sum(nbytes(model, b) for b in weights if len(users[b]) == 2)
    assert layout.task_weight_bytes == own
    int8 = {t.buffer for sg in model.subgraphs for t in sg.tensors if t.type == TT.INT8}
    assert int8 & set(weights)   # the big dense operands were quantised
    assert layout.weight_bytes < 4 * files.plan["params"]["zipped"]


def test_split_weight_bytes_by_signature():
    """Counted per buffer: shared = two or more of the tasks, own = one; a joint signature is no task."""
    U = fb.BufferUse
    uses = {1: U(1, 100, {"a", "b"}), 2: U(2, 10, {"a"}), 3: U(3, 20, {"b", "all"}), 4: U(4, 7, {"all"}),
            5: U(5, 1000, {"a", "b"}), 6: U(6, 3, {"a", "b", "c"}), 7: U(7, 50, {"a", "b"}), 8: U(8, 9, {"c"})}
    roles = {1: "weights", 2: "bias", 3: "weights", 4: "bias", 5: "constant", 6: "weights", 7: "zero-bias",
             8: "weights"}
    assert split_weight_bytes(uses, roles, ["a", "b"]) == (100 + 10 + 20 + 7 + 3 + 9, 100 + 3, {"a": 10, "b": 20})
    assert split_weight_bytes(uses, roles, ["a", "b", "c"]) == (149, 103, {"a": 10, "b": 20, "c": 9})
    assert split_weight_bytes(uses, roles, ["a", "b"], also={7}) == (199, 153, {"a": 10, "b": 20})
    assert split_weight_bytes(uses, roles, ["a", "all"]) == (149, 0, {"a": 113, "all": 27})
    uses[8].signatures = {"a", "all"}
    assert split_weight_bytes(uses, roles, ["a", "all"]) == (149, 9, {"a": 113, "all": 27})
    assert split_weight_bytes({}, {}, ["a"]) == (0, 0, {"a": 0})


# ----- locating operands ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_locate_finds_exactly_the_tensors_that_store_each_operand(files, mode):
    model = load(files, mode)
    subgraph = {v: k for k, v in sig_of(model).items()}
    for name, kind, owners, values in files.operands:
        found = locate(model, values)
        assert found == holders(model, values), name
        # one tensor in each owner's subgraph and nowhere else
        assert sorted(sgi for sgi, _ in found) == sorted(subgraph[t] for t in owners), name


@pytest.mark.parametrize("mode", ["none", "fp16"])
def test_locate_refuses_a_float_one_ulp_away(files, mode):
    model = load(files, mode)
    _, _, owners, values = largest_shared_kernel(files)
    dtype = np.float32 if mode == "none" else np.float16
    flat = values.astype(dtype).ravel()
    for i in (0, flat.size // 2, flat.size - 1):
        changed = flat.copy()
        changed[i] = np.nextafter(changed[i], dtype(np.inf))
        assert locate(model, changed.reshape(values.shape)) == []
    assert len(locate(model, values)) == len(owners)


def test_locate_casts_to_float16_before_comparing(files):
    """A float32 change the file's float16 cannot hold still matches; in the float32 file it does not."""
    _, _, owners, values = largest_shared_kernel(files)
    flat = values.astype(np.float32).ravel().copy()
    flat[0] = np.nextafter(flat[0], np.float32(np.inf))
    changed = flat.reshape(values.shape)
    assert changed.astype(np.float16).tobytes() == values.astype(np.float16).tobytes()
    # float64 values round to the file's float32 before comparing
    wide = values.astype(np.float64) * (1 + 1e-10)
    assert not np.array_equal(wide, values.astype(np.float64))
    assert len(locate(load(files, "none"), wide)) == len(owners)
    assert len(locate(load(files, "fp16"), changed)) == len(owners)
    assert locate(load(files, "none"), changed) == []


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


@pytest.mark.parametrize("mode", ["int8", "dynamic-int8"])
def test_locate_int8_within_half_a_step_of_each_channels_scale(files, mode):
    """Per element: 0.45 of its own channel's step from the stored value matches, 0.6 does not."""
    model = load(files, mode)
    checked = set()
    for name, kind, owners, values in files.operands:
        found = locate(model, values)
        t = model.subgraphs[found[0][0]].tensors[found[0][1]]
        if t.type not in (TT.INT8, TT.INT32):
            continue
        checked.add((t.type, len(t.quantization.scale) > 1, t.quantization.quantizedDimension))
        dq, step = dequantised(model, found[0])
        i = int(np.argmin(step)) if step.size > 1 else 0
        j = int(np.argmax(step))
        for k in {i, j}:
            for frac, hit in ((0.45, True), (-0.45, True), (0.6, False), (-0.6, False)):
                near = dq.copy().ravel()
                near[k] += frac * step.ravel()[k]
                near = near.reshape(values.shape)
                assert (found[0] in locate(model, near)) == hit, (name, k, frac)
    if mode == "int8":   # per-channel conv filters (axis 0), depthwise filters (axis 3), int32 biases
        assert {(TT.INT8, True, 0), (TT.INT8, True, 3)} <= checked and any(c[0] == TT.INT32 for c in checked)
    else:
        assert any(c[0] == TT.INT8 for c in checked)


def test_locate_int8_with_one_scale_per_tensor(files):
    """The int8 file's filters carry a scale per channel; requantised with one scale for the whole
    tensor, the same operand is found, and one element 0.6 of a step off is not."""
    model = load(files, "int8")
    _, _, owners, values = largest_shared_kernel(files)
    found = locate(model, values)
    buf = buffers_of(model, found)[0]
    step = float(np.abs(values).max()) / 127
    stored = np.clip(np.round(values / step), -127, 127).astype(np.int8)
    model.buffers[buf].data = np.frombuffer(stored.tobytes(), np.uint8).copy()
    for sgi, ti in found:
        q = model.subgraphs[sgi].tensors[ti].quantization
        q.scale, q.zeroPoint, q.quantizedDimension = np.array([step], np.float32), np.array([0], np.int64), 0
    step = float(np.float32(step))
    assert locate(model, values) == found and len(found) == len(owners)
    off = stored.astype(np.float64) * step
    off.flat[7] += 0.6 * step
    assert locate(model, off) == []
    off.flat[7] -= 0.2 * step
    assert locate(model, off) == found


def test_locate_needs_the_shape_and_a_constant(files):
    model = load(files, "none")
    _, _, owners, values = largest_shared_kernel(files)
    assert locate(model, values.reshape(-1)) == []
    assert locate(model, values[None]) == []
    # activations of the input's shape hold no constant: nothing to find
    assert locate(model, np.zeros((1, 12, 12, 2), np.float32)) == []
    # the RESHAPE's int32 shape has no quantisation: it matches no operand, even its own values
    shape_tensors = [(sgi, ti) for sgi, sg in enumerate(model.subgraphs) for ti, t in enumerate(sg.tensors)
                     if t.type == TT.INT32 and fb.buffer_bytes(model, t.buffer)]
    sgi, ti = shape_tensors[0]
    t = model.subgraphs[sgi].tensors[ti]
    assert locate(model, np.frombuffer(fb.buffer_bytes(model, t.buffer), np.int32).astype(np.float64)) == []


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


@pytest.mark.parametrize("mode", MODES)
def test_placements_one_per_shared_operand(files, mode):
    layout = proof(files, mode)
    assert len(layout.placements) == len(shared_operands_in_zip(files.zip_dir)) == 8
    assert layout.placements == expected_placements(files, mode)
    for p in layout.placements:
        assert p.signatures == TASKS
        assert len(p.buffers) == (2 if mode == "int8" and p.kind == "bias" else 1), p


@pytest.mark.parametrize("mode", MODES)
def test_report_of_the_written_file(files, mode):
    size = files.paths[mode].stat().st_size
    layout = proof(files, mode, size)
    assert layout.file_bytes == size
    assert sorted(layout.task_weight_bytes) == TASKS
    assert layout.duplicated_bytes == independent_duplicates(files, mode)[0]
    assert layout.duplicated_bytes == sum(sum(nbytes(load(files, mode), b) for b in p.buffers[1:])
                                          for p in expected_placements(files, mode))
    # what convert_zip reported is the proof of the bytes it wrote
    assert files.reports[mode] in (None, layout)


def test_int8_split_biases_fail_without_allow_split_bias(files):
    model = load(files, "int8")
    split = next(p for p in expected_placements(files, "int8") if len(p.buffers) == 2)
    operands = [o for o in files.operands if o[0] == split.name]
    with pytest.raises(MTZError) as err:
        prove_layout(model, 0, operands, TASKS)
    assert str(err.value) == (f"shared block {split.name} is stored 2 times: deduplication did not merge the copies; "
                              "report this with the zip directory")
    report = prove_layout(model, 0, operands, TASKS, allow_split_bias=True)
    assert report.duplicated_bytes == nbytes(model, split.buffers[1]) > 0


def test_a_duplicated_block_is_refused(files):
    model = load(files, "none")
    name, _, _, values = largest_shared_kernel(files)
    buf = buffers_of(model, holders(model, values))[0]
    assert give_own_copy(model, buf, "b") == 1
    model = fb.parse_model(fb.serialize(model))
    for allow in (False, True):   # a kernel is never excused
        with pytest.raises(MTZError) as err:
            prove_layout(model, 0, files.operands, TASKS, allow_split_bias=allow)
        assert str(err.value) == (f"shared block {name} is stored 2 times: deduplication did not merge the "
                                  "copies; report this with the zip directory")


def test_a_signature_that_lost_the_block_is_named(files):
    model = load(files, "none")
    name, kind, owners, values = largest_shared_kernel(files)
    buf = buffers_of(model, holders(model, values))[0]
    other = np.array(model.buffers[buf].data, np.uint8, copy=True)
    other[:4] = np.frombuffer(np.float32(123.0).tobytes(), np.uint8)
    assert give_own_copy(model, buf, "b", data=other) == 1
    model = fb.parse_model(fb.serialize(model))
    with pytest.raises(MTZError) as err:
        prove_layout(model, 0, [(name, kind, owners, values)], TASKS)
    assert str(err.value) == f"shared block {name} is not referenced by the signature(s) of b"
    with pytest.raises(MTZError) as err:   # every missing owner, in the owners' order
        prove_layout(load(files, "none"), 0, [(name, kind, ("x", "a", "y"), values)], TASKS)
    assert str(err.value) == f"shared block {name} is not referenced by the signature(s) of x, y"


def test_a_block_not_in_the_file(files):
    model = load(files, "none")
    name, kind, owners, values = largest_shared_kernel(files)
    changed = values.copy()
    changed.flat[0] += 1.0
    expected = (f"shared block {name} was not found in the converted file: the converter folded it into another "
                "constant; report this with the zip directory")
    for allow in (False, True):
        with pytest.raises(MTZError) as err:
            prove_layout(model, 0, [(name, kind, owners, changed)], TASKS, allow_split_bias=allow)
        assert str(err.value) == expected
    bias = shared_operands(files, "bias")[0]
    lost = (bias[0], "bias", bias[2], bias[3] + 1.0)
    with pytest.raises(MTZError, match=f"^shared block {bias[0]} was not found"):
        prove_layout(model, 0, [lost], TASKS)
    # full-integer files may keep no float-exact copy of a shared bias: reported, not refused
    report = prove_layout(model, 0, [lost] + files.operands, TASKS, allow_split_bias=True)
    assert report.placements[0] == OperandPlacement(bias[0], "bias", list(bias[2]), 0, [], [])
    assert report.placements[1:] == expected_placements(files, "none")
    assert report.duplicated_bytes == 0


def test_task_only_operands_are_not_placed(files):
    model = load(files, "none")
    own = [o for o in files.operands if len(o[2]) == 1]
    assert own and prove_layout(model, 0, own, TASKS).placements == []
    changed = [(n, k, o, v + 1.0) for n, k, o, v in own]   # not looked for, so not missed
    assert prove_layout(model, 0, changed, TASKS).placements == []


def test_a_zero_shared_bias_still_counts_as_a_parameter(files):
    """The converter fills bias-less convolutions with zeros; a shared bias of zeros is a parameter all
    the same: counted in the weight bytes because the proof placed it."""
    model = load(files, "none")
    name, kind, owners, values = next(o for o in shared_operands(files, "bias") if o[3].shape == (3,))
    buf = buffers_of(model, holders(model, values))[0]
    model.buffers[buf].data = np.zeros(nbytes(model, buf), np.uint8)
    operands = [(n, k, o, np.zeros_like(v) if n == name else v) for n, k, o, v in files.operands]
    assert buffer_roles(model)[buf] == "zero-bias"
    params = files.plan["params"]
    report = prove_layout(model, 0, operands, TASKS)
    assert (report.weight_bytes, report.shared_weight_bytes) == (4 * params["zipped"], 4 * params["shared"])
    total, shared, _ = split_weight_bytes(fb.buffer_uses(model), buffer_roles(model), TASKS)
    assert (total, shared) == (4 * params["zipped"] - 12, 4 * params["shared"] - 12)


def test_a_subgraph_without_a_signature_is_named_by_index(files):
    model = load(files, "none")
    model.subgraphs.append(copy.deepcopy(model.subgraphs[0]))
    report = prove_layout(model, 0, shared_operands(files), TASKS)
    index = len(model.subgraphs) - 1
    assert all(p.signatures == ["a", "b", f"subgraph{index}"] for p in report.placements)
    assert [p.buffers for p in report.placements] == [p.buffers for p in expected_placements(files, "none")]


def test_report_defaults():
    report = LayoutReport(1, 2, 3, {"a": 4}, 5)
    assert report.placements == [] and report.placements is not LayoutReport(1, 2, 3, {}, 0).placements
    assert (report.file_bytes, report.weight_bytes, report.shared_weight_bytes, report.task_weight_bytes,
            report.duplicated_bytes) == (1, 2, 3, {"a": 4}, 5)
