"""Zip directory → one multi-signature .tflite, with the layout proven from the written bytes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtz_mobile.contract import MANIFEST_METADATA, QUANTIZATIONS, baseline_path
from mtz_mobile.data import TaskData, load_task_data
from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import check_output, disk_full_error, is_disk_full, output_lock, write_atomic
from mtz_mobile.zipper.plan import ZipDir, load_zip_dir

from . import flatbuffer as fb
from .graph import TaskGraph, bias_name, tflite_layout
from .layout import LayoutReport, prove_layout
from .manifest import build_manifest, validate_manifest

# how TensorFlow's C++ file writers report ENOSPC / EFBIG: in an OpError's message, not an errno
DISK_FULL_MESSAGES = ("No space left on device", "File too large", "Disk quota exceeded")


@dataclass
class Conversion:
    path: Path
    manifest: dict
    layout: LayoutReport
    baselines: dict[str, Path] = field(default_factory=dict)
    serving: str | None = None   # with a joint signature: how the page and the app will serve it


def graph_operands(graph: TaskGraph) -> list[tuple[str, str, tuple[str, ...], np.ndarray]]:
    """(name, kind, owners, values as stored) of every constant operand the graph uses."""
    out = []
    for op in graph.operands:
        values = graph.kernels[op.name].numpy()
        values = tflite_layout(graph.net.nodes[op.node].op, values)
        out.append((op.name, "kernel", op.owners, values))
    for i, node in enumerate(graph.net.nodes):
        for go, owners in node.biases:
            out.append((bias_name(i, go, owners), "bias", owners, graph.biases[bias_name(i, go, owners)].numpy()))
    return out


def _apply_quantization(converter, mode: str, representative: dict[str, np.ndarray] | None) -> None:
    import tensorflow as tf

    if mode == "none":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        if not representative:
            raise MTZError("int8 needs representative data for every task: give the zip's data or --data-dir")

        def samples():
            # each task's own images through its own signature: activation ranges differ by task
            for key, x in representative.items():
                for row in x:
                    yield key, {"input": row[None].astype(np.float32)}

        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]


def _convert_saved_model(module, signatures: dict, mode: str, representative) -> bytes:
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="mtz-savedmodel-") as tmp:
        try:
            tf.saved_model.save(module, tmp, signatures=signatures)
        except (OSError, tf.errors.OpError) as exc:
            if is_disk_full(exc) or any(m in str(exc) for m in DISK_FULL_MESSAGES):
                raise disk_full_error(tmp, exc) from None
            raise
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(signatures))
        _apply_quantization(converter, mode, representative)
        return converter.convert()


def representative_data(zipdir: ZipDir, datas: dict[str, TaskData] | None, data_dir, n: int):
    out = {}
    for task in zipdir.plan.tasks:
        data = (datas or {}).get(task.name) or load_task_data(task.data, data_dir)
        idx = np.random.default_rng(0).permutation(len(data.x_train))[:n]
        # in the signature's own input shape ((n, 28, 28) images feed a (28, 28, 1) input)
        out[task.name] = data.x_train[np.sort(idx)].reshape((-1, *task.input_shape))
    return out


def convert_zip(zip_path: str | os.PathLike, out_path: str | os.PathLike, quantize: str = "none",
                joint: bool = False, baselines: bool = False, datas: dict[str, TaskData] | None = None,
                data_dir=None, representative_samples: int = 300) -> Conversion:
    """Convert a zip directory to one .tflite with a signature per task (and ``all`` with ``joint``);
    with ``baselines``, each original model as its own OUT_STEM.baseline_TASK.tflite beside it."""
    if quantize not in QUANTIZATIONS:
        raise MTZError(f"unknown quantization {quantize!r}: use one of {', '.join(QUANTIZATIONS)}")
    out_path = Path(out_path)
    if out_path.suffix != ".tflite":
        raise MTZError(f"{out_path} does not end in .tflite: name the output model.tflite")
    check_output(out_path, directory=False)
    zipdir = load_zip_dir(zip_path)
    if joint and len({tuple(t.input_shape) for t in zipdir.plan.tasks}) != 1:
        raise MTZError("--joint needs tasks with one input shape: these tasks' inputs differ")
    with output_lock(out_path):
        representative = (representative_data(zipdir, datas, data_dir, representative_samples)
                          if quantize == "int8" else None)
        singles = {}
        if baselines:
            singles = {t.name: convert_baseline(zipdir.source_path(t.name), t.name, quantize,
                                                None if representative is None else representative[t.name])
                       for t in zipdir.plan.tasks}
        data, manifest, layout = _convert_joint(zipdir, out_path, quantize, joint, representative, singles)
        written = _write_outputs(out_path, data, singles)
    return Conversion(out_path, manifest, layout, written, joint_serving(manifest) if joint else None)


def joint_serving(manifest: dict) -> str:
    """How the page and the app will serve the joint signature: it feeds every task one input, so it
    serves only tasks that preprocess their inputs alike; otherwise each task runs on its own."""
    key, tasks = manifest["joint"]["signature_key"], manifest["tasks"]
    ways = {(t["preprocessing"]["mean"], t["preprocessing"]["scale"]) for t in tasks}
    if len(ways) == 1:
        return f"joint signature '{key}': every task in one run (the tasks preprocess their inputs alike)"
    each = ", ".join(f"{t['name']} (raw - {t['preprocessing']['mean']:g}) * {t['preprocessing']['scale']:.6g}" for t in tasks)
    return (f"joint signature '{key}' written, but the tasks preprocess their inputs differently ({each}): "
            "the page and the app run each task on its own signature instead")


def _write_outputs(out_path: Path, data: bytes, singles: dict[str, bytes]) -> dict[str, Path]:
    """The baselines first: a model.tflite whose manifest names them marks a finished conversion.
    A failed write (a full disk) takes back the baselines this call wrote."""
    written = {}
    try:
        for task, raw in singles.items():
            written[task] = write_atomic(baseline_path(out_path, task), raw)
        write_atomic(out_path, data)
    except BaseException:
        for path in written.values():
            path.unlink(missing_ok=True)
        raise
    return written


def _convert_joint(zipdir: ZipDir, out_path: Path, quantize: str, joint: bool, representative,
                   singles: dict[str, bytes]) -> tuple[bytes, dict, LayoutReport]:
    """The zipped network's file, its manifest naming the baselines' checksums, and its layout proven
    from the bytes that will be written."""
    net = zipdir.network
    graph = TaskGraph(net, joint=joint)
    signatures = {key: fn.get_concrete_function() for key, fn in graph.functions.items()}
    raw = _convert_saved_model(graph, signatures, quantize, representative)

    model = fb.parse_model(raw, "the converter's output")
    fb.dedupe_buffers(model)
    fb.strip_tensor_names(model)
    tasks = list(net.tasks)
    operands = graph_operands(graph)
    layout = prove_layout(model, 0, operands, tasks, allow_split_bias=(quantize == "int8"))
    recorded = {task: {"file": baseline_path(out_path, task).name, "sha256": hashlib.sha256(b).hexdigest()}
                for task, b in singles.items()}
    manifest = build_manifest(zipdir.plan, model, layout, quantize, recorded or None)
    validate_manifest(manifest)
    fb.set_metadata(model, MANIFEST_METADATA, _manifest_bytes(manifest))
    data = fb.serialize(model)

    # read the bytes back: the layout must hold in what is written, not in what we meant to write
    reread = fb.parse_model(data, str(out_path))
    layout = prove_layout(reread, len(data), operands, tasks, allow_split_bias=(quantize == "int8"))
    _check_loads(data)
    return data, manifest, layout


def _manifest_bytes(manifest: dict) -> bytes:
    import json

    return json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _check_loads(data: bytes) -> None:
    from mtz_mobile.litert_runtime import make_interpreter

    interpreter = make_interpreter(model_content=data)
    keys = set(interpreter.get_signature_list())
    if not keys:
        raise MTZError("LiteRT loaded the converted file but found no signatures")


def convert_baseline(keras_path: Path, key: str, quantize: str, representative: np.ndarray | None) -> bytes:
    """One original model as its own .tflite, built by the same graph code as the zipped file
    (same op pattern, signature key, input name and quantization), so benchmarks compare like
    with like."""
    from mtz_mobile.graph.model_files import read_model   # .keras or .onnx
    from mtz_mobile.graph.network import ZippedNetwork

    graph = TaskGraph(ZippedNetwork.from_models({key: read_model(keras_path)}))
    reps = None if representative is None else {key: representative}
    raw = _convert_saved_model(graph, {key: graph.functions[key].get_concrete_function()}, quantize, reps)
    model = fb.parse_model(raw, "the converter's output")
    fb.strip_tensor_names(model)   # as in the zipped file: sizes compare like with like
    return fb.serialize(model)
