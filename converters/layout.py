"""Proving, from the file alone, that every shared weight block is stored once.

Each buffer is classified by how operators use it (weights, bias, other constant) and by the
task signatures whose subgraphs reference it. Each constant operand of the converter's graph
(a block, or several blocks of the same owners) is then looked up by content — exact bytes for
float32/float16, dequantised values within half a quantisation step for int8 — and must be
exactly one buffer that tensors of every owner task's subgraph reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from mtz_mobile.errors import MTZError

from .flatbuffer import buffer_uses, signature_subgraphs, tensor_values

WEIGHT_OPS = {schema.BuiltinOperator.FULLY_CONNECTED, schema.BuiltinOperator.CONV_2D,
              schema.BuiltinOperator.DEPTHWISE_CONV_2D}
BIAS_OPS = {schema.BuiltinOperator.ADD}


def _opcode(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _upstream_of_weights(model, sg) -> set[int]:
    """Tensors computed from the signature's input without passing a weighted op (the per-task
    preprocessing): a constant added there is a Rescaling/Normalization offset, not a bias."""
    upstream = {int(t) for t in (sg.inputs if sg.inputs is not None else [])}
    for op in sg.operators or []:   # operators are stored in execution order
        inputs = op.inputs if op.inputs is not None else []
        if _opcode(model, op) not in WEIGHT_OPS and any(int(ti) in upstream for ti in inputs):
            upstream.update(int(t) for t in op.outputs)
    return upstream


def _role(model, sg, op, code: int, pos: int, upstream: set[int]) -> str:
    if code in WEIGHT_OPS:
        return "weights" if pos == 1 else "bias" if pos == 2 else "constant"
    if code in BIAS_OPS:
        # a bias has one value per unit (rank 1); a scalar is part of an expression (hard_sigmoid's
        # + 0.5), and an offset on the preprocessed input belongs to the task's preprocessing
        const = sg.tensors[op.inputs[pos]]
        others = [ti for n, ti in enumerate(op.inputs) if n != pos and ti >= 0]
        if len(const.shape if const.shape is not None else []) == 0 or any(ti in upstream for ti in others):
            return "constant"
        return "bias"
    return "constant"


def buffer_roles(model) -> dict[int, str]:
    """buffer index → "weights" | "bias" | "zero-bias" | "constant", following DEQUANTIZE back to its
    source. "zero-bias": a bias of zeros, which the TFLite converter adds to bias-less convolutions."""
    roles: dict[int, str] = {}
    for sg in model.subgraphs:
        produced_by_dequantize = {}
        for op in sg.operators or []:
            if _opcode(model, op) == schema.BuiltinOperator.DEQUANTIZE:
                src = sg.tensors[op.inputs[0]]
                if model.buffers[src.buffer].data is not None:
                    produced_by_dequantize[op.outputs[0]] = src.buffer
        upstream = _upstream_of_weights(model, sg)
        for op in sg.operators or []:
            code = _opcode(model, op)
            for pos, ti in enumerate(op.inputs if op.inputs is not None else []):
                if ti < 0:
                    continue
                buf = sg.tensors[ti].buffer
                if model.buffers[buf].data is None:  # not a constant: maybe dequantised from one
                    buf = produced_by_dequantize.get(ti, 0)
                if not buf:
                    continue
                role = _role(model, sg, op, code, pos, upstream)
                if roles.get(buf) in ("weights", "bias") and role == "constant":
                    continue
                roles[buf] = role
    for buf, role in roles.items():
        # the TFLite converter gives every bias-less CONV_2D a bias of zeros: filler, not a parameter
        if role == "bias" and not np.any(np.frombuffer(bytes(np.asarray(model.buffers[buf].data, np.uint8)), np.uint8)):
            roles[buf] = "zero-bias"
    return roles


@dataclass
class OperandPlacement:
    name: str
    kind: str                 # "kernel" | "bias"
    owners: list[str]
    nbytes: int
    buffers: list[int]
    signatures: list[str]


@dataclass
class LayoutReport:
    file_bytes: int
    weight_bytes: int                 # weights and biases, each buffer counted once
    shared_weight_bytes: int          # … referenced by two or more task signatures
    task_weight_bytes: dict[str, int]  # … referenced by one task only
    duplicated_bytes: int             # bytes of shared blocks that could not be kept single
    placements: list[OperandPlacement] = field(default_factory=list)


def split_weight_bytes(uses, roles: dict[int, str], tasks: list[str], also: set[int] = frozenset()):
    """(weight bytes, shared bytes, bytes per task) over the weight and bias buffers (and ``also``):
    shared = referenced by two or more of ``tasks``' signatures, per task = by that one only."""
    weights = {b: u for b, u in uses.items() if roles.get(b) in ("weights", "bias") or b in also}
    shared, per_task = 0, {t: 0 for t in tasks}
    for u in weights.values():
        users = u.signatures & set(tasks)
        if len(users) >= 2:
            shared += u.nbytes
        elif users:
            per_task[next(iter(users))] += u.nbytes
    return sum(u.nbytes for u in weights.values()), shared, per_task


def _candidates(model, shape: tuple[int, ...]):
    for sgi, sg in enumerate(model.subgraphs):
        for ti, t in enumerate(sg.tensors or []):
            if t.buffer and tuple(int(d) for d in (t.shape if t.shape is not None else [])) == shape:
                yield sgi, ti, t


def _matches(model, sgi: int, ti: int, expected: np.ndarray) -> bool:
    t = model.subgraphs[sgi].tensors[ti]
    values = tensor_values(model, sgi, ti)
    if values is None:
        return False
    if t.type == schema.TensorType.FLOAT32:
        return np.array_equal(values.astype(np.float32), expected.astype(np.float32))
    if t.type == schema.TensorType.FLOAT16:
        return np.array_equal(values.astype(np.float16), expected.astype(np.float16))
    q = t.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return False
    scale = np.asarray(q.scale, np.float64)
    if len(scale) > 1:
        shape = [1] * values.ndim
        shape[q.quantizedDimension] = -1
        scale = scale.reshape(shape)
    return bool(np.all(np.abs(values - expected) <= 0.51 * scale + 1e-12))


def locate(model, expected: np.ndarray) -> list[tuple[int, int]]:
    """(subgraph, tensor) pairs whose constant equals ``expected`` (see module docstring)."""
    return [(sgi, ti) for sgi, ti, _ in _candidates(model, tuple(expected.shape)) if _matches(model, sgi, ti, expected)]


def prove_layout(model, file_bytes: int, operands: list[tuple[str, str, tuple[str, ...], np.ndarray]],
                 tasks: list[str], allow_split_bias: bool = False) -> LayoutReport:
    """Check every shared operand (name, kind, owners, values) is one buffer used by all owners.

    ``allow_split_bias``: full-integer files keep a shared float bias as one int32 copy per task
    (its scale is input scale × weight scale, and inputs differ by task); such copies are
    reported as duplicated bytes instead of failing.
    """
    sig_of_subgraph = {v: k for k, v in signature_subgraphs(model).items()}
    uses = buffer_uses(model)
    placements, duplicated = [], 0
    for name, kind, owners, values in operands:
        if len(owners) < 2:
            continue
        found = locate(model, values)
        buffers = sorted({model.subgraphs[sgi].tensors[ti].buffer for sgi, ti in found})
        sigs = sorted({sig_of_subgraph.get(sgi, f"subgraph{sgi}") for sgi, _ in found})
        placement = OperandPlacement(name, kind, list(owners), int(sum(uses[b].nbytes for b in buffers if b in uses)),
                                     buffers, sigs)
        placements.append(placement)
        split_bias_ok = kind == "bias" and allow_split_bias
        if not buffers:
            # a bias of zeros the converter dropped (FULLY_CONNECTED without bias) is stored zero times
            if split_bias_ok or (kind == "bias" and not np.any(values)):
                continue
            raise MTZError(f"shared block {name} was not found in the converted file: the converter folded it "
                           "into another constant; report this with the zip directory")
        missing = [t for t in owners if t not in {s for b in buffers for s in uses[b].signatures}]
        if missing:
            raise MTZError(f"shared block {name} is not referenced by the signature(s) of {', '.join(missing)}")
        if len(buffers) > 1:
            if not split_bias_ok:
                raise MTZError(f"shared block {name} is stored {len(buffers)} times: deduplication did not merge "
                               "the copies; report this with the zip directory")
            duplicated += sum(uses[b].nbytes for b in buffers[1:])
    # a zero bias the converter added counts as a parameter where it holds a shared (zero) bias
    placed = {b for p in placements for b in p.buffers}
    weight_bytes, shared, per_task = split_weight_bytes(uses, buffer_roles(model), tasks, also=placed)
    return LayoutReport(file_bytes, weight_bytes, shared, per_task, duplicated, placements)
