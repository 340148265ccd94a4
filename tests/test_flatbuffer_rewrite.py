"""converters/flatbuffer.py on a small two-signature file written by the TFLite converter, each
claim checked against something independent of our object-API code: LiteRT's interpreter running
the rewritten file, the flatbuffer's own tables (schema.Model, read without the object API), and
the float weights the file was made from. Seconds, where test_converter.py zips and converts."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from converters import flatbuffer as fb
from converters import manifest as mf
from mtz_mobile.errors import MTZError
from mtz_mobile.litert_runtime import make_interpreter
from test_buffer_alignment import data_offsets

RNG = np.random.default_rng(0)
# over 1,024 elements each: the converter's dynamic-range quantisation leaves smaller weights float
W_SHARED, B_SHARED = RNG.normal(size=(48, 40)).astype(np.float32), RNG.normal(size=40).astype(np.float32)
W_A, W_B = RNG.normal(size=(40, 30)).astype(np.float32), RNG.normal(size=(40, 32)).astype(np.float32)
X = RNG.normal(size=(1, 48)).astype(np.float32)


def convert(optimize: str | None = None) -> bytes:
    """Signatures "a" and "b" share the first layer's weights (one buffer), each has its own head."""
    import tensorflow as tf

    class Two(tf.Module):
        def __init__(self):
            self.w, self.bias = tf.Variable(W_SHARED), tf.Variable(B_SHARED)
            self.wa, self.wb = tf.Variable(W_A), tf.Variable(W_B)

        @tf.function(input_signature=[tf.TensorSpec([1, 48], tf.float32, name="x")])
        def a(self, x):
            return {"scores": tf.matmul(tf.nn.relu(tf.matmul(x, self.w) + self.bias), self.wa)}

        @tf.function(input_signature=[tf.TensorSpec([1, 48], tf.float32, name="x")])
        def b(self, x):
            return {"scores": tf.matmul(tf.nn.relu(tf.matmul(x, self.w) + self.bias), self.wb)}

    m = Two()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [m.a.get_concrete_function(), m.b.get_concrete_function()], m)
    if optimize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif optimize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


@pytest.fixture(scope="module")
def original() -> bytes:
    return convert()


def run(data: bytes) -> dict[str, np.ndarray]:
    interp = make_interpreter(model_content=data, xnnpack=False)
    return {key: interp.get_signature_runner(key)(x=X)["scores"] for key in interp.get_signature_list()}


def raw(data: bytes):
    return schema.Model.GetRootAs(data, 0)


def test_rewritten_file_computes_what_the_converters_file_computes(original):
    parsed = fb.parse_model(original)
    data = fb.serialize(parsed)
    want = run(original)
    assert sorted(want) == ["a", "b"]
    for key, value in run(data).items():
        np.testing.assert_array_equal(value, want[key])
    assert all(start % 16 == 0 for start, _ in data_offsets(data))
    assert fb.signature_subgraphs(parsed) == {fb.decode(raw(data).SignatureDefs(i).SignatureKey()):
                                              raw(data).SignatureDefs(i).SubgraphIndex() for i in range(2)}


def test_buffer_uses_name_the_signatures_that_read_each_buffer(original):
    parsed = fb.parse_model(original)
    fb.set_metadata(parsed, "probe", b"not a weight")
    uses = fb.buffer_uses(parsed)
    model = raw(fb.serialize(parsed))
    keys = {model.SignatureDefs(i).SubgraphIndex(): model.SignatureDefs(i).SignatureKey().decode() for i in range(2)}
    expected: dict[int, set] = {}
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for t in range(sg.TensorsLength()):
            tensor = sg.Tensors(t)
            if model.Buffers(tensor.Buffer()).DataLength():
                expected.setdefault(tensor.Buffer(), set()).add(keys[s])
                use = uses[tensor.Buffer()]
                assert use.nbytes == model.Buffers(tensor.Buffer()).DataLength()
                assert (keys[s], tensor.Name().decode(), "float32", tuple(tensor.ShapeAsNumpy())) in use.tensors
    assert {i: u.signatures for i, u in uses.items()} == expected
    assert sorted(map(sorted, expected.values())).count(["a", "b"]) >= 1     # the shared layer: one buffer
    by_size = {u.nbytes: u.signatures for u in uses.values()}
    assert by_size[W_SHARED.nbytes] == {"a", "b"} and by_size[W_A.nbytes] == {"a"} and by_size[W_B.nbytes] == {"b"}
    metadata_buffer = parsed.metadata[-1].buffer
    assert metadata_buffer not in uses and fb.get_metadata(parsed, "probe") == b"not a weight"


def _duplicate_a_weight(parsed) -> tuple[int, int]:
    """Give signature b's head weights their own copy of the same bytes: what two tasks' identical
    blocks look like before dedupe. Returns (buffer index, its size)."""
    sig = next(s for s in parsed.signatureDefs if fb.decode(s.signatureKey) == "b")
    sg = parsed.subgraphs[sig.subgraphIndex]
    tensor = next(t for t in sg.tensors if len(fb.buffer_bytes(parsed, t.buffer)) == W_B.nbytes)
    copy = schema.BufferT()
    copy.data = np.frombuffer(fb.buffer_bytes(parsed, tensor.buffer), np.uint8).copy()
    parsed.buffers.append(copy)
    tensor.buffer = len(parsed.buffers) - 1
    return tensor.buffer, W_B.nbytes


def test_dedupe_points_tensors_at_one_copy_and_keeps_metadata_readable(original):
    parsed = fb.parse_model(original)
    assert fb.dedupe_buffers(parsed) == 0   # the converter's own file has nothing to dedupe
    fb.set_metadata(parsed, "early", b"first entry")
    _duplicate_a_weight(parsed)
    fb.set_metadata(parsed, "late", b"after the duplicate")
    only = schema.BufferT()   # a buffer that only the model's metadataBuffer list names
    only.data = np.frombuffer(b"metadataBuffer only", np.uint8).copy()
    parsed.buffers.append(only)
    parsed.metadataBuffer = [parsed.metadata[-1].buffer, len(parsed.buffers) - 1]
    duplicated = fb.serialize(parsed)
    again = fb.parse_model(duplicated)
    assert fb.dedupe_buffers(again) == W_B.nbytes
    data = fb.serialize(again)
    model = raw(data)
    referenced = {0, model.MetadataBuffer(1)} | {model.Metadata(i).Buffer() for i in range(model.MetadataLength())} | {
        model.Subgraphs(s).Tensors(t).Buffer() for s in range(2) for t in range(model.Subgraphs(s).TensorsLength())}
    assert referenced == set(range(model.BuffersLength()))   # the copy is gone, nothing left unreferenced
    contents = [model.Buffers(i).DataAsNumpy().tobytes() if model.Buffers(i).DataLength() else b""
                for i in range(model.BuffersLength())]
    weights = [c for c in contents if c]
    assert len(weights) == len(set(weights))   # every non-empty buffer's bytes once
    assert contents[0] == b""                  # buffer 0 stays the empty sentinel
    names = {model.Metadata(i).Name().decode(): contents[model.Metadata(i).Buffer()] for i in range(model.MetadataLength())}
    assert names["early"] == b"first entry" and names["late"] == b"after the duplicate"
    assert contents[model.MetadataBuffer(0)] == b"after the duplicate"
    assert contents[model.MetadataBuffer(1)] == b"metadataBuffer only"
    want = run(original)
    for key, value in run(data).items():
        np.testing.assert_array_equal(value, want[key])


def test_stripped_names_leave_the_signatures_working(original):
    parsed = fb.parse_model(original)
    fb.strip_tensor_names(parsed)
    data = fb.serialize(parsed)
    model = raw(data)
    assert all(not model.Subgraphs(s).Tensors(t).Name() for s in range(model.SubgraphsLength())
               for t in range(model.Subgraphs(s).TensorsLength()))
    for key, value in run(data).items():
        np.testing.assert_array_equal(value, run(original)[key])


def test_metadata_is_added_replaced_and_read_back(original):
    parsed = fb.parse_model(original)
    assert fb.get_metadata(parsed, "mtz_probe") is None
    n_buffers, n_meta = len(parsed.buffers), len(parsed.metadata or [])
    fb.set_metadata(parsed, "mtz_probe", b"one")
    fb.set_metadata(parsed, "mtz_probe", b"two, longer")
    model = raw(fb.serialize(parsed))
    assert model.MetadataLength() == n_meta + 1 and model.BuffersLength() == n_buffers + 1
    entry = model.Metadata(model.MetadataLength() - 1)
    assert entry.Name() == b"mtz_probe"
    assert model.Buffers(entry.Buffer()).DataAsNumpy().tobytes() == b"two, longer"
    assert fb.get_metadata(fb.parse_model(fb.serialize(parsed)), "mtz_probe") == b"two, longer"


def _weights(parsed) -> list[np.ndarray]:
    sg = parsed.subgraphs[0]
    return [v for i in range(len(sg.tensors)) if (v := fb.tensor_values(parsed, 0, i)) is not None]


def _matching(values: list[np.ndarray], weight: np.ndarray) -> np.ndarray:
    """The stored constant that holds ``weight`` (the converter stores a MatMul's weights transposed)."""
    for v in values:
        for candidate in (v, v.T):
            if candidate.shape == weight.shape:
                return candidate
    raise AssertionError(f"no constant of shape {weight.shape} in {[v.shape for v in values]}")


def test_tensor_values_are_the_weights_the_file_was_made_from(original):
    values = _weights(fb.parse_model(original))
    assert all(v.dtype == np.float64 for v in values)
    np.testing.assert_array_equal(_matching(values, W_SHARED), W_SHARED)
    np.testing.assert_array_equal(_matching(values, W_A), W_A)
    assert any(np.array_equal(v, B_SHARED) for v in values)


@pytest.mark.parametrize("kind", ["int8", "float16"])
def test_tensor_values_dequantise_within_the_storage_step(kind):
    parsed = fb.parse_model(convert(kind))
    values = _weights(parsed)
    stored = {fb.TYPE_NAMES[t.type] for t in parsed.subgraphs[0].tensors if t.buffer and fb.buffer_bytes(parsed, t.buffer)}
    assert ("int8" if kind == "int8" else "float16") in stored
    for weight in (W_SHARED, W_A):
        got = _matching(values, weight)
        step = np.abs(weight).max(axis=0) / 127 if kind == "int8" else np.abs(weight) * 2.0 ** -10
        assert np.all(np.abs(got - weight) <= step / 2 + 1e-7 * np.abs(weight)), (kind, np.abs(got - weight).max())
        assert not np.array_equal(got, weight) or kind == "float16"


def test_signature_tensors_are_what_litert_reports(original):
    parsed = fb.parse_model(original)
    interp = make_interpreter(model_content=original, xnnpack=False)
    for key in ("a", "b"):
        inputs, outputs = mf.signature_tensors(parsed, key)
        runner = interp.get_signature_runner(key)
        for ours, theirs in ((inputs, runner.get_input_details()), (outputs, runner.get_output_details())):
            assert {t["name"]: (t["shape"], t["dtype"]) for t in ours} == {
                name: (d["shape"].tolist(), np.dtype(d["dtype"]).name) for name, d in theirs.items()}
    with pytest.raises(MTZError, match="^the converted file has no signature 'c'$"):
        mf.signature_tensors(parsed, "c")


# ------------------------------------------------------------------------------ damaged files


def _damage(original: bytes, change) -> bytes:
    parsed = fb.parse_model(original)
    change(parsed)
    return fb.serialize(parsed)


def _first_op(p):
    return p.subgraphs[0].operators[0]


DAMAGE = {
    "a tensor names a missing buffer": lambda p: setattr(p.subgraphs[0].tensors[0], "buffer", len(p.buffers)),
    "a subgraph input names a missing tensor": lambda p: setattr(p.subgraphs[0], "inputs", [len(p.subgraphs[0].tensors)]),
    "a subgraph output names a missing tensor": lambda p: setattr(p.subgraphs[1], "outputs", [-1]),
    "an operator names a missing operator code": lambda p: setattr(_first_op(p), "opcodeIndex", len(p.operatorCodes)),
    "an operator reads a missing tensor": lambda p: setattr(_first_op(p), "inputs", [len(p.subgraphs[0].tensors), 0]),
    "an operator writes a missing tensor": lambda p: setattr(_first_op(p), "outputs", [-1]),
    "a metadata entry names a missing buffer": lambda p: setattr(p.metadata[0], "buffer", len(p.buffers)),
    "a name in it is not UTF-8": lambda p: setattr(p.subgraphs[1].tensors[-1], "name", b"\xff\xfe"),
    "a signature names a missing subgraph": lambda p: setattr(p.signatureDefs[1], "subgraphIndex", 2),
    "a signature names a missing tensor": lambda p: setattr(p.signatureDefs[1].outputs[0], "tensorIndex", 10_000),
    "a buffer lies outside the file": lambda p: (setattr(p.buffers[1], "offset", 16), setattr(p.buffers[1], "size", 1 << 30)),
}


@pytest.mark.parametrize("problem", DAMAGE)
def test_each_dangling_index_is_refused_in_one_line(original, problem):
    damaged = _damage(original, DAMAGE[problem])
    with pytest.raises(MTZError) as info:
        fb.parse_model(damaged, "m.tflite")
    assert str(info.value) == f"m.tflite is damaged: {problem}; convert it again"


def test_an_absent_optional_operand_is_not_damage(original):
    def optional(p):
        op = _first_op(p)
        op.inputs = list(op.inputs) + [-1]
    parsed = fb.parse_model(_damage(original, optional))
    assert list(_first_op(parsed).inputs)[-1] == -1


@pytest.mark.parametrize("data, message", [
    (b"\0\0\0\0TFL", "<bytes> is not a TFLite flatbuffer (no TFL3 identifier): give a .tflite file"),
    (b"\x1c\0\0\0TFL4" + bytes(40), "<bytes> is not a TFLite flatbuffer (no TFL3 identifier): give a .tflite file"),
    (b"\xff\0\0\0TFL3" + bytes(40), "<bytes> is damaged: its root offset lies beyond the end; convert it again"),
])
def test_what_is_not_a_flatbuffer_is_refused_in_one_line(data, message):
    with pytest.raises(MTZError) as info:
        fb.parse_model(data)
    assert str(info.value) == message


def test_truncated_file_and_no_subgraphs(original, tmp_path):
    with pytest.raises(MTZError, match=r"^<bytes> is damaged or truncated \(\w+\): convert it again$"):
        fb.parse_model(original[:len(original) // 2])
    path = tmp_path / "empty.tflite"
    path.write_bytes(_damage(original, lambda p: (setattr(p, "subgraphs", []), setattr(p, "signatureDefs", []))))
    with pytest.raises(MTZError, match=f"^{path} has no subgraphs: convert it again$"):
        fb.load_model(path)
    with pytest.raises(MTZError, match=f"^cannot read {tmp_path / 'missing.tflite'}: No such file or directory$"):
        fb.load_model(tmp_path / "missing.tflite")
    assert len(fb.load_model(_write(tmp_path / "ok.tflite", original)).subgraphs) == 2


def _write(path, data):
    path.write_bytes(data)
    return path
