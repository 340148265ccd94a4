"""converters/layout.py: locating operands and the layout proof against expectations written here (see layout_files)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from converters import flatbuffer as fb
from converters.layout import LayoutReport, OperandPlacement, buffer_roles, locate, prove_layout, split_weight_bytes
from mtz_mobile.errors import MTZError
from test_converter import give_own_copy, shared_operands_in_zip

from layout_files import (  # noqa: F401 — files is the fixture
    MODES, TASKS, TT, buffers_of, dequantised, expected_placements, files, holders,
    independent_duplicates, largest_shared_kernel, load, nbytes, proof, shared_operands, sig_of,
    synthetic_model)



def test_locate_in_a_hand_built_model():
    """Shapes as the file gives them: a tensor without a shape is a candidate for nothing it can match."""
    model = synthetic_model()
    assert locate(model, np.array([3.0])) == [(0, 3)]
    assert locate(model, np.array([[4.0, 5.0]], np.float32)) == [(0, 4)]
    assert locate(model, np.array(2.5)) == [] and locate(model, np.array([2.5])) == []


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
