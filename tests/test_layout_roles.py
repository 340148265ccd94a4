"""converters/layout.py: buffer roles and weight bytes against a walk of the schema and the zip (see layout_files)."""

from __future__ import annotations

import pytest

from converters import flatbuffer as fb
from converters.layout import buffer_roles, split_weight_bytes

from layout_files import (  # noqa: F401 — files is the fixture
    MODES, TASKS, TT, files, independent_duplicates, load, nbytes, operand_keys, proof,
    shared_operands, sig_of, synthetic_model, walk_roles, zip_blocks)


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


def test_roles_of_a_hand_built_model():
    model = synthetic_model()
    expected = {1: "weights", 2: "bias", 3: "bias", 4: "weights", 6: "constant", 9: "weights", 7: "zero-bias",
                10: "constant", 12: "constant"}
    assert buffer_roles(model) == expected == walk_roles(model)


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
