"""Every constant buffer of a converted file starts on a 16-byte boundary of the file (the schema's
force_align: 16), so that XNNPACK and other consumers of the mmapped file read the weights in place
instead of copying them. Read back with the flatbuffer's own tables, not through our serializer."""

from __future__ import annotations

import flatbuffers
from ai_edge_litert import schema_py_generated as schema

from converters import flatbuffer as fb


def data_offsets(data: bytes) -> list[tuple[int, int]]:
    """(file offset, length) of each buffer's data vector, as the flatbuffer's tables locate it."""
    model = schema.Model.GetRootAs(data, 0)
    out = []
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        field = flatbuffers.number_types.UOffsetTFlags.py_type(buf._tab.Offset(4))
        if field and buf.DataLength():
            out.append((buf._tab.Vector(field), buf.DataLength()))
    return out


def test_converted_buffers_start_on_16_byte_boundaries(deployed):
    for path in [deployed.model, *deployed.baselines.values()]:
        data = path.read_bytes()
        offsets = data_offsets(data)
        assert len(offsets) >= 4, path   # the weights and biases of a two-layer MLP at least
        parsed = fb.parse_model(data)
        for start, length in offsets:
            assert start % 16 == 0, f"{path.name}: a {length}-byte buffer starts at {start}, not a multiple of 16"
        # the located bytes are the buffers' own: the same multiset as the object API reads
        located = sorted(data[s:s + n] for s, n in offsets)
        assert located == sorted(b for i in range(len(parsed.buffers)) if (b := fb.buffer_bytes(parsed, i)))


def test_rewriting_keeps_the_alignment_whatever_precedes_the_buffers(deployed):
    """Serializing again after a change of size in front of the buffers (metadata of odd lengths):
    each length shifts what follows, the alignment must hold for each."""
    parsed = fb.parse_model(deployed.model.read_bytes())
    for extra in (1, 3, 5, 7, 9):
        fb.set_metadata(parsed, "alignment_probe", b"x" * extra)
        data = fb.serialize(parsed)
        assert all(start % 16 == 0 for start, _ in data_offsets(data)), extra
