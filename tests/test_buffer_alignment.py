"""Every constant buffer of a converted file starts on a 16-byte boundary of the file (the schema's
force_align: 16), so that XNNPACK and other consumers of the mmapped file read the weights in place
instead of copying them. Read back with the flatbuffer's own tables, not through our serializer."""

from __future__ import annotations

import flatbuffers
import numpy as np
import pytest
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


@pytest.fixture(scope="module")
def odd_sized_model() -> bytes:
    """A two-layer network with weights of odd byte counts (7x5, 5, 5x3, 3 float32s), as the
    TFLite converter writes it: buffers that land off 16 bytes unless the serializer aligns them."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    w1, b1, w2, b2 = (tf.constant(rng.normal(size=s).astype(np.float32)) for s in ((7, 5), (5,), (5, 3), (3,)))

    @tf.function(input_signature=[tf.TensorSpec([1, 7], tf.float32)])
    def forward(x):
        return tf.matmul(tf.nn.relu(tf.matmul(x, w1) + b1), w2) + b2

    return tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()]).convert()


def test_rewriting_keeps_the_alignment_whatever_precedes_the_buffers(odd_sized_model):
    """Our serializer on a converter's file, after a change of size in front of the buffers
    (metadata of odd lengths): each length shifts what follows, the alignment must hold for each."""
    parsed = fb.parse_model(odd_sized_model)
    for extra in (0, 1, 3, 5, 7, 9):
        if extra:
            fb.set_metadata(parsed, "alignment_probe", b"x" * extra)
        data = fb.serialize(parsed)
        offsets = data_offsets(data)
        assert len(offsets) >= 4 and all(start % 16 == 0 for start, _ in offsets), (extra, offsets)
