"""The converter: LiteRT's outputs against the zipped network, the layout read back from the file."""

import json
import shutil

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from converters import convert as convert_module
from converters import convert_zip
from converters import flatbuffer as fb
from converters.graph import TaskGraph
from converters.layout import buffer_roles, prove_layout
from converters.manifest import load_schema, read_manifest
from mtz_mobile.cli import main
from mtz_mobile.data import load_task_data
from mtz_mobile.errors import MTZError
from mtz_mobile.litert_runtime import make_interpreter
from mtz_mobile.zipper.plan import load_zip_dir
from mtz_mobile.zipper.config import RetrainSettings
from mtz_mobile.zipper import ZipConfig, zip_networks
from mtz_mobile.graph.keras_io import read_model


def make_zip(models, data, out, shared, iterations=0):
    chains = {n: read_model(p) for n, p in zip(("a", "b"), models)}
    cfg = ZipConfig(shared=shared, calibration_samples=1000,
                    retrain=RetrainSettings(iterations=iterations, batch_size=64, learning_rate=1e-3))
    zip_networks(chains, {"a": data, "b": data}, cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def zips(tmp_path_factory, small_models, fmnist, train_mlp):
    root = tmp_path_factory.mktemp("zips")
    zips = {name: make_zip(small_models, fmnist, root / name, shared)
            for name, shared in (("full", ["all"]), ("partial", [0.5]), ("none", [0]))}
    # quantisation is judged on models of a realistic width (48-unit layers quantise coarsely),
    # zipped and retrained back to the originals' accuracy
    wide = [root / "wide_a.keras", root / "wide_b.keras"]
    for seed, path in zip((1, 2), wide):
        train_mlp(fmnist, path, seed, hidden=(256, 128), epochs=3)
    zips["retrained"] = make_zip(wide, fmnist, root / "retrained", ["all"], iterations=60)
    return zips


@pytest.fixture(scope="module")
def float_model(zips, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite") / "full.tflite"
    return convert_zip(zips["full"], out, joint=True, baselines=True)


def shared_operands_in_zip(zip_dir, kinds=("kernel", "bias")) -> set[tuple[str, str, str, str]]:
    """(node, kind, output group, owners) of every shared operand, from weights.npz's keys alone:
    the blocks of one node that feed one output group and belong to the same tasks are one operand."""
    with np.load(zip_dir / "weights.npz") as z:
        keys = list(z.files)
    out = set()
    for key in keys:
        node, kind, groups, owners = key.rsplit("/", 3)
        if "+" in owners and kind in kinds:
            out.add((node, kind, groups.split("-")[-1], owners))
    return out


def assert_shared_operands_stored_once(layout, path, zip_dir, kinds=("kernel", "bias")):
    """As many placements as the zip has shared operands, each one buffer every owner's signature reads."""
    expected = shared_operands_in_zip(zip_dir, kinds)
    placements = [p for p in layout.placements if p.kind in kinds]
    assert expected and len(placements) == len(expected), (len(placements), sorted(expected))
    uses = fb.buffer_uses(fb.load_model(path))
    for p in placements:
        assert len(p.buffers) == 1, p
        assert set(p.owners) <= uses[p.buffers[0]].signatures, (p, uses[p.buffers[0]].signatures)


def give_own_copy(model, buffer: int, signature: str, data: np.ndarray | None = None) -> int:
    """Point ``signature``'s tensors that read ``buffer`` at a new buffer (a byte-identical copy, or
    ``data``); returns how many tensors were repointed."""
    new = schema.BufferT()
    new.data = np.array(model.buffers[buffer].data if data is None else data, dtype=np.uint8, copy=True)
    model.buffers.append(new)
    sg = model.subgraphs[fb.signature_subgraphs(model)[signature]]
    repointed = [t for t in sg.tensors if t.buffer == buffer]
    for t in repointed:
        t.buffer = len(model.buffers) - 1
    return len(repointed)


def largest_shared_buffer(model, tasks=("a", "b")) -> int:
    uses = fb.buffer_uses(model)
    return max((b for b, u in uses.items() if set(tasks) <= u.signatures), key=lambda b: uses[b].nbytes)


def run_signature(path, key, x, output="output"):
    runner = make_interpreter(path).get_signature_runner(key)
    return np.concatenate([runner(input=x[i:i + 1])[output] for i in range(len(x))])


def test_every_signature_matches_the_zipped_network(float_model, zips, fmnist):
    net = load_zip_dir(zips["full"]).network
    x = fmnist.x_test[:300]
    for task in ("a", "b"):
        expected = net.predict(task, x)
        assert np.max(np.abs(run_signature(float_model.path, task, x) - expected)) <= 1e-5
        # the joint signature returns the same, computed in one call
        assert np.max(np.abs(run_signature(float_model.path, "all", x, output=task) - expected)) <= 1e-5
        baseline = run_signature(float_model.baselines[task], task, x)
        original = load_zip_dir(zips["none"]).network.predict(task, x)
        assert np.max(np.abs(baseline - original)) <= 1e-5


def test_shared_bytes_in_the_file_equal_the_plans_shared_parameters(float_model, zips):
    plan = json.loads((zips["full"] / "plan.json").read_text())
    layout = float_model.layout
    assert layout.shared_weight_bytes == 4 * plan["params"]["shared"]
    assert layout.weight_bytes == 4 * plan["params"]["zipped"]
    assert layout.file_bytes == float_model.path.stat().st_size
    assert layout.file_bytes <= layout.weight_bytes + 64 * 1024
    # two hidden layers shared, each a kernel and a bias; the output layers are each task's own
    assert len(shared_operands_in_zip(zips["full"])) == 4
    assert_shared_operands_stored_once(layout, float_model.path, zips["full"])


def test_layout_read_back_independently(float_model):
    """Count from the raw file, through the schema module only: no buffer holds the bytes of another."""
    model = fb.load_model(float_model.path)
    blobs = [fb.buffer_bytes(model, i) for i in range(len(model.buffers))]
    nonempty = [b for b in blobs if len(b) > 64]
    assert len(nonempty) == len(set(nonempty))
    key_of = {v: k for k, v in fb.signature_subgraphs(model).items()}
    users = {}
    for sgi, sg in enumerate(model.subgraphs):
        for t in sg.tensors:
            if len(blobs[t.buffer]) > 64:
                users.setdefault(t.buffer, set()).add(key_of[sgi])
    shared = sum(len(blobs[b]) for b, u in users.items() if {"a", "b"} <= u)
    assert shared == float_model.layout.shared_weight_bytes - sum(
        len(blobs[b]) for b, u in users.items() if {"a", "b"} <= u and len(blobs[b]) <= 64)


def test_joint_signature_computes_the_shared_prefix_once(float_model):
    """Fully shared hidden layers fed one input: 'all' runs them once, then each task's output."""
    model = fb.load_model(float_model.path)
    keys = fb.signature_subgraphs(model)

    def fully_connected(key):
        sg = model.subgraphs[keys[key]]
        return sum(model.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.FULLY_CONNECTED
                   for op in sg.operators)

    assert fully_connected("a") == fully_connected("b") == 3
    assert fully_connected("all") == 2 + 2   # two shared hidden layers once, two output layers


def test_nothing_shared_means_no_shared_buffer(zips, tmp_path):
    result = convert_zip(zips["none"], tmp_path / "none.tflite")
    assert result.layout.shared_weight_bytes == 0
    assert result.layout.placements == []


def test_shared_ops_carry_the_shared_bias_and_partial_products_none(zips, tmp_path):
    """XNNPACK's weight cache keys on (weights, bias): a shared block must meet one bias in every task."""
    result = convert_zip(zips["partial"], tmp_path / "partial.tflite")
    model = fb.load_model(result.path)
    uses = fb.buffer_uses(model)
    no_bias = 0
    for sg in model.subgraphs:
        for op in sg.operators:
            if model.operatorCodes[op.opcodeIndex].builtinCode != schema.BuiltinOperator.FULLY_CONNECTED:
                continue
            weights = sg.tensors[op.inputs[1]].buffer
            bias = op.inputs[2] if len(op.inputs) > 2 else -1
            if bias < 0:
                no_bias += 1
                assert uses[weights].signatures == {"a"} or uses[weights].signatures == {"b"}
            elif len(uses[weights].signatures) > 1:
                assert uses[sg.tensors[bias].buffer].signatures == uses[weights].signatures
    # hidden1 has no task-specific input; hidden2 and the output layer each add W̃_A / W̃_B partial products
    assert no_bias >= 2
    net = load_zip_dir(zips["partial"]).network
    for task in ("a", "b"):
        x = np.random.default_rng(0).random((20, 28, 28), dtype=np.float32)
        assert np.max(np.abs(run_signature(result.path, task, x) - net.predict(task, x))) <= 1e-5


@pytest.mark.parametrize("mode", ["fp16", "dynamic-int8", "int8"])
def test_quantized_files_keep_shared_buffers_single_and_accuracy(mode, zips, fmnist, tmp_path, float_model):
    data = {"a": fmnist, "b": fmnist}
    result = convert_zip(zips["retrained"], tmp_path / f"{mode}.tflite", quantize=mode, datas=data,
                         representative_samples=500)
    reference = convert_zip(zips["retrained"], tmp_path / "float.tflite")
    assert_shared_operands_stored_once(result.layout, result.path, zips["retrained"], kinds=("kernel",))
    assert result.layout.file_bytes < reference.layout.file_bytes * (0.6 if mode == "fp16" else 0.35)
    assert read_manifest(fb.load_model(result.path))["quantization"] == mode
    full = load_task_data("fashion-mnist")  # all 10,000 test images: a 0.5 pp bound needs them
    x, y = full.x_test, full.y_test
    for task in ("a", "b"):
        err_q = np.mean(np.argmax(run_signature(result.path, task, x), 1) != y)
        err_f = np.mean(np.argmax(run_signature(reference.path, task, x), 1) != y)
        assert abs(err_q - err_f) <= 0.005


def test_manifest_is_embedded_and_valid(float_model):
    import jsonschema

    manifest = read_manifest(fb.load_model(float_model.path))
    jsonschema.validate(manifest, load_schema())
    assert manifest == float_model.manifest
    assert [t["signature_key"] for t in manifest["tasks"]] == ["a", "b"]
    assert manifest["tasks"][0]["input"] == {"name": "input", "shape": [1, 28, 28], "dtype": "float32", "layout": "HW"}
    assert manifest["joint"]["signature_key"] == "all"
    assert manifest["sharing"]["file"]["shared_weight_bytes"] == float_model.layout.shared_weight_bytes


def test_dedupe_repairs_a_duplicated_shared_block(float_model, fmnist, tmp_path):
    """Give one signature its own copy of the shared block, as a careless converter would; dedupe undoes it."""
    model = fb.load_model(float_model.path)
    biggest = max(range(len(model.buffers)), key=lambda i: len(fb.buffer_bytes(model, i)))
    copy = schema.BufferT()
    copy.data = np.array(model.buffers[biggest].data, copy=True)
    model.buffers.append(copy)
    sg = model.subgraphs[fb.signature_subgraphs(model)["b"]]
    for t in sg.tensors:
        if t.buffer == biggest:
            t.buffer = len(model.buffers) - 1
    duplicated = fb.serialize(model)
    assert len(duplicated) >= float_model.layout.file_bytes + len(copy.data)
    model = fb.parse_model(duplicated)
    assert fb.dedupe_buffers(model) == len(fb.buffer_bytes(model, biggest))
    repaired = tmp_path / "repaired.tflite"
    repaired.write_bytes(fb.serialize(model))
    assert repaired.stat().st_size <= float_model.layout.file_bytes
    x = fmnist.x_test[:20]
    np.testing.assert_array_equal(run_signature(repaired, "b", x), run_signature(float_model.path, "b", x))


@pytest.fixture(scope="module")
def full_operands(zips):
    """The shared operands as convert.py derives them for the proof: from the converter's graph."""
    return convert_module.graph_operands(TaskGraph(load_zip_dir(zips["full"]).network, joint=True))


def test_layout_proof_refuses_a_duplicated_shared_block(float_model, full_operands):
    model = fb.load_model(float_model.path)
    prove_layout(model, 0, full_operands, ["a", "b"])  # the file as written holds
    assert give_own_copy(model, largest_shared_buffer(model), "b") >= 1
    with pytest.raises(MTZError, match="stored 2 times"):
        prove_layout(fb.parse_model(fb.serialize(model)), 0, full_operands, ["a", "b"])


def test_layout_proof_names_the_signature_that_lost_a_shared_block(float_model, full_operands):
    model = fb.load_model(float_model.path)
    shared = largest_shared_buffer(model)
    other = np.array(model.buffers[shared].data, dtype=np.uint8, copy=True)
    other[:4] = np.frombuffer(np.float32(123.0).tobytes(), np.uint8)  # b reads other bytes now
    assert give_own_copy(model, shared, "b", data=other) >= 1
    with pytest.raises(MTZError, match=r"not referenced by the signature\(s\) of b$"):
        prove_layout(fb.parse_model(fb.serialize(model)), 0, full_operands, ["a", "b"])


def test_convert_dedupes_a_careless_converters_duplicated_block(zips, fmnist, tmp_path, monkeypatch):
    """Fault injection: the real converter's real output, with signature b given its own copy of
    the largest shared block; convert_zip must still write each shared block once."""
    real, injected = convert_module._convert_saved_model, []

    def careless(module, signatures, mode, representative):
        model = fb.parse_model(real(module, signatures, mode, representative))
        shared = largest_shared_buffer(model)
        injected.append((fb.buffer_bytes(model, shared), give_own_copy(model, shared, "b")))
        return fb.serialize(model)

    monkeypatch.setattr(convert_module, "_convert_saved_model", careless)
    result = convert_zip(zips["full"], tmp_path / "careless.tflite")
    assert len(injected) == 1 and len(injected[0][0]) > 1000 and injected[0][1] >= 1
    model = fb.load_model(result.path)
    blobs = [fb.buffer_bytes(model, i) for i in range(len(model.buffers))]
    holders = [i for i, b in enumerate(blobs) if b == injected[0][0]]
    assert len(holders) == 1 and {"a", "b"} <= fb.buffer_uses(model)[holders[0]].signatures
    nonempty = [b for b in blobs if len(b) > 64]
    assert len(nonempty) == len(set(nonempty))
    assert_shared_operands_stored_once(result.layout, result.path, zips["full"])
    net = load_zip_dir(zips["full"]).network
    x = fmnist.x_test[:50]
    for task in ("a", "b"):
        assert np.max(np.abs(run_signature(result.path, task, x) - net.predict(task, x))) <= 1e-5


def test_roles_follow_the_operators(float_model):
    model = fb.load_model(float_model.path)
    roles = buffer_roles(model)
    assert sorted(set(roles.values())) == ["bias", "constant", "weights"]


@pytest.mark.parametrize("cut", [3, 100, 5000, -1000])
def test_damaged_files_fail_on_one_line(float_model, tmp_path, capsys, cut):
    data = float_model.path.read_bytes()
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(data[:cut] if cut > 0 else data[:cut][:16] + b"\xff" * 64 + data[80:cut])
    assert main(["inspect", str(bad)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mtz-mobile")]
    assert len(err) == 1 and "bad.tflite" in err[0]


def test_plan_and_weights_that_disagree_are_refused(zips, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(zips["full"], broken)
    with np.load(broken / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files}
    key = next(k for k in arrays if "/kernel/" in k and k.endswith("a+b"))
    arrays[key] = arrays[key][:, :-1]
    np.savez(broken / "weights.npz", **arrays)
    out = tmp_path / "never.tflite"
    with pytest.raises(MTZError, match="shape"):
        convert_zip(broken, out)
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_cli_convert_and_inspect(zips, tmp_path, capsys):
    out = tmp_path / "cli.tflite"
    assert main(["convert", str(zips["partial"]), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["signatures"]) == {"a", "b"}
    assert info["shared_weight_bytes"] > 0 and info["manifest"]["format"] == "mtz-mobile/manifest"


def test_inspect_into_a_pipe_closed_early_ends_quietly(zips, tmp_path):
    """`mtz-mobile inspect … | head -1`: the reader has gone before the first write; the command
    ends with SIGPIPE's exit code and no BrokenPipeError traceback."""
    import subprocess
    import sys

    out = tmp_path / "pipe.tflite"
    assert main(["convert", str(zips["partial"]), "--out", str(out)]) == 0
    script = ("import os, sys\n"
              "r, w = os.pipe(); os.close(r); os.dup2(w, 1)\n"   # stdout: a pipe nobody reads
              "from mtz_mobile.cli import main\n"
              f"sys.exit(main(['inspect', {str(out)!r}, '--json']))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 141 and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
