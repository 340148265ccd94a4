"""Reading and rewriting a .tflite flatbuffer through LiteRT's generated object API.

What we need of the file: its buffers (who references them, from which signature), dedupe of
identical buffers, and a metadata entry holding our manifest.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from mtz_mobile.errors import MTZError

FILE_IDENTIFIER = b"TFL3"

NUMPY_OF_TENSOR_TYPE = {
    schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.INT32: np.int32, schema.TensorType.INT8: np.int8, schema.TensorType.UINT8: np.uint8,
    schema.TensorType.INT64: np.int64, schema.TensorType.INT16: np.int16, schema.TensorType.BOOL: np.bool_,
}
TYPE_NAMES = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


def load_model(path: str | os.PathLike) -> "schema.ModelT":
    """Parse a .tflite file; a file that is not one fails with one line that says so."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MTZError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_model(data, str(path))


def parse_model(data: bytes, name: str = "<bytes>") -> "schema.ModelT":
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise MTZError(f"{name} is not a TFLite flatbuffer (no TFL3 identifier): give a .tflite file")
    try:
        root = int.from_bytes(data[:4], "little")
        if root >= len(data):
            raise _Damaged("its root offset lies beyond the end")
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
        _check_offsets(model, len(data))
    except MTZError:
        raise
    except _Damaged as exc:
        raise MTZError(f"{name} is damaged: {exc}; convert it again") from exc
    except Exception as exc:  # any parse failure of a damaged file: report it as one line
        raise MTZError(f"{name} is damaged or truncated ({type(exc).__name__}): convert it again") from exc
    if not model.subgraphs:
        raise MTZError(f"{name} has no subgraphs: convert it again")
    return model


class _Damaged(ValueError):
    """A structural fault the checks below found, said in words."""


def _check_offsets(model, size: int) -> None:
    for buf in model.buffers or []:
        if buf.offset and buf.offset + buf.size > size:
            raise _Damaged("a buffer lies outside the file")
    _check_references(model)


def _check_references(model) -> None:
    """Every index the file holds points at something that exists: readers index without checks."""
    def within(indices, n, what):
        if any(not 0 <= int(i) < n for i in (indices if indices is not None else [])):
            raise _Damaged(what)

    buffers, codes = len(model.buffers or []), len(model.operatorCodes or [])
    for sg in model.subgraphs or []:
        tensors = len(sg.tensors or [])
        within([t.buffer for t in sg.tensors or []], buffers, "a tensor names a missing buffer")
        within(sg.inputs, tensors, "a subgraph input names a missing tensor")
        within(sg.outputs, tensors, "a subgraph output names a missing tensor")
        for op in sg.operators or []:
            within([op.opcodeIndex], codes, "an operator names a missing operator code")
            # -1 marks an optional operand that is absent
            within([i for i in (op.inputs if op.inputs is not None else []) if i != -1], tensors,
                   "an operator reads a missing tensor")
            within(op.outputs, tensors, "an operator writes a missing tensor")
    within([m.buffer for m in model.metadata or []], buffers, "a metadata entry names a missing buffer")
    names = [m.name for m in model.metadata or []] + [t.name for sg in model.subgraphs or [] for t in sg.tensors or []]
    for sig in model.signatureDefs or []:
        names += [sig.signatureKey] + [m.name for m in (sig.inputs or []) + (sig.outputs or [])]
    try:
        [n.decode("utf-8") for n in names if isinstance(n, bytes)]
    except UnicodeDecodeError:
        raise _Damaged("a name in it is not UTF-8") from None
    for sig in model.signatureDefs or []:
        within([sig.subgraphIndex], len(model.subgraphs or []), "a signature names a missing subgraph")
        tensors = len(model.subgraphs[sig.subgraphIndex].tensors or [])
        within([m.tensorIndex for m in (sig.inputs or []) + (sig.outputs or [])], tensors,
               "a signature names a missing tensor")


class _AlignedBufferT(schema.BufferT):
    """A buffer whose bytes start on a 16-byte boundary (the schema's force_align: 16, which the
    generated Python object API does not honour), so kernels can use the mmapped weights in place."""

    def Pack(self, builder):  # noqa: N802 — the generated API's name
        data = None
        if self.data is not None:
            payload = np.asarray(self.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(payload), 16)
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        schema.BufferAddOffset(builder, self.offset)
        schema.BufferAddSize(builder, self.size)
        return schema.BufferEnd(builder)


def serialize(model) -> bytes:
    for i, buf in enumerate(model.buffers):
        if type(buf) is not _AlignedBufferT:
            aligned = _AlignedBufferT()
            aligned.data, aligned.offset, aligned.size = buf.data, buf.offset, buf.size
            model.buffers[i] = aligned
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def buffer_bytes(model, index: int) -> bytes:
    buf = model.buffers[index]
    return b"" if buf.data is None else bytes(np.asarray(buf.data, dtype=np.uint8).tobytes())


def signature_subgraphs(model) -> dict[str, int]:
    return {decode(sig.signatureKey): sig.subgraphIndex for sig in model.signatureDefs or []}


def decode(name) -> str:
    """A flatbuffer string of the object API (bytes, str or None) as str."""
    return name.decode() if isinstance(name, bytes) else (name or "")


@dataclass
class BufferUse:
    index: int
    nbytes: int
    signatures: set[str] = field(default_factory=set)
    tensors: list[tuple[str, str, str, tuple[int, ...]]] = field(default_factory=list)  # (signature, name, type, shape)


def buffer_uses(model) -> dict[int, BufferUse]:
    """Every non-empty buffer, with the signatures and tensors that reference it."""
    key_of = {v: k for k, v in signature_subgraphs(model).items()}
    uses: dict[int, BufferUse] = {}
    metadata_buffers = {m.buffer for m in model.metadata or []}
    for sgi, sg in enumerate(model.subgraphs):
        sig = key_of.get(sgi, f"subgraph{sgi}")
        for t in sg.tensors or []:
            if t.buffer not in uses:
                data = model.buffers[t.buffer].data
                if data is None or len(data) == 0:
                    continue
                uses[t.buffer] = BufferUse(t.buffer, len(data))
            use = uses[t.buffer]
            use.signatures.add(sig)
            use.tensors.append((sig, decode(t.name), TYPE_NAMES.get(t.type, str(t.type)),
                                tuple(int(d) for d in (t.shape if t.shape is not None else []))))
    for i in metadata_buffers:
        uses.pop(i, None)
    return uses


def dedupe_buffers(model) -> int:
    """Point every tensor at the first buffer with its bytes, drop orphans; returns bytes saved."""
    first_with: dict[bytes, int] = {}
    remap = {}
    for i, buf in enumerate(model.buffers):
        data = buffer_bytes(model, i)
        if not data:
            continue
        digest = hashlib.sha256(data).digest()
        remap[i] = first_with.setdefault(digest, i)
    saved = sum(len(buffer_bytes(model, i)) for i, j in remap.items() if i != j)
    if saved == 0:
        return 0
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            t.buffer = remap.get(t.buffer, t.buffer)
    _drop_orphans(model)
    return saved


def strip_tensor_names(model) -> None:
    """Drop every tensor's name. LiteRT finds a signature's inputs and outputs by the signature's
    own names; the converter's fused-op names ("Relu6_34;BiasAdd_51;Conv2D_34;…") only take room:
    ~19 KB in a three-signature MobileNetV2, more than a quarter of the file's overhead."""
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            t.name = None


def _drop_orphans(model) -> None:
    used = {0}
    for sg in model.subgraphs:
        used.update(t.buffer for t in sg.tensors or [])
    used.update(m.buffer for m in model.metadata or [])
    used.update(model.metadataBuffer if model.metadataBuffer is not None else [])   # parsed: an ndarray, no truth value
    keep = sorted(used)
    new_index = {old: new for new, old in enumerate(keep)}
    model.buffers = [model.buffers[i] for i in keep]
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            t.buffer = new_index[t.buffer]
    for m in model.metadata or []:
        m.buffer = new_index[m.buffer]
    if model.metadataBuffer is not None:
        model.metadataBuffer = [new_index[i] for i in model.metadataBuffer]


def set_metadata(model, name: str, payload: bytes) -> None:
    """Add (or replace) a named metadata entry whose buffer holds ``payload``."""
    buf = schema.BufferT()
    buf.data = np.frombuffer(payload, dtype=np.uint8).copy()
    for m in model.metadata or []:
        if decode(m.name) == name:
            model.buffers[m.buffer] = buf
            return
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [entry]


def get_metadata(model, name: str) -> bytes | None:
    for m in model.metadata or []:
        if decode(m.name) == name:
            return buffer_bytes(model, m.buffer)
    return None


def tensor_values(model, sg_index: int, tensor_index: int) -> np.ndarray | None:
    """A constant tensor's values, dequantised to float when it carries quantisation."""
    t = model.subgraphs[sg_index].tensors[tensor_index]
    data = buffer_bytes(model, t.buffer)
    if not data or t.type not in NUMPY_OF_TENSOR_TYPE:
        return None
    values = np.frombuffer(data, dtype=NUMPY_OF_TENSOR_TYPE[t.type]).reshape(
        [int(d) for d in t.shape] if t.shape is not None else [-1])
    q = t.quantization
    if q is not None and q.scale is not None and len(q.scale) > 0 and t.type != schema.TensorType.FLOAT16:
        scale = np.asarray(q.scale, np.float64)
        zero = np.asarray(q.zeroPoint if q.zeroPoint is not None else np.zeros_like(scale), np.float64)
        if len(scale) > 1:
            shape = [1] * values.ndim
            shape[q.quantizedDimension] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return (values.astype(np.float64) - zero) * scale
    return values.astype(np.float64)
