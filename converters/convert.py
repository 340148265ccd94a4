"""Zip directory → one multi-signature .tflite, with the layout proven from the written bytes."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtz_mobile.data import TaskData, load_task_data
from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import write_atomic
from mtz_mobile.zipper.plan import ZipDir, load_zip_dir

from . import flatbuffer as fb
from .graph import TaskGraph, bias_name
from .layout import LayoutReport, prove_layout
from .manifest import build_manifest, validate_manifest
from mtz_mobile.contract import MANIFEST_METADATA, baseline_path

from mtz_mobile.contract import QUANTIZATIONS


@dataclass
class Conversion:
    path: Path
    manifest: dict
    layout: LayoutReport
    deduplicated_bytes: int
    baselines: dict[str, Path] = field(default_factory=dict)


def graph_operands(graph: TaskGraph) -> list[tuple[str, str, tuple[str, ...], np.ndarray]]:
    """(name, kind, owners, values as stored) of every constant operand the graph uses."""
    out = []
    for op in graph.operands:
        values = graph.kernels[op.name].numpy()
        if graph.net.nodes[op.node].op == "conv2d":
            values = values.transpose(3, 0, 1, 2)  # TFLite's CONV_2D keeps filters as (out, kh, kw, in)
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
        tf.saved_model.save(module, tmp, signatures=signatures)
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
    """Convert a zip directory to one .tflite with a signature per task (and ``all`` with ``joint``)."""
    if quantize not in QUANTIZATIONS:
        raise MTZError(f"unknown quantization {quantize!r}: use one of {', '.join(QUANTIZATIONS)}")
    out_path = Path(out_path)
    if out_path.suffix != ".tflite":
        raise MTZError(f"{out_path} does not end in .tflite: name the output model.tflite")
    zipdir = load_zip_dir(zip_path)
    net = zipdir.network
    if joint and len({tuple(t.input_shape) for t in zipdir.plan.tasks}) != 1:
        raise MTZError("--joint needs tasks with one input shape: these tasks' inputs differ")
    representative = (representative_data(zipdir, datas, data_dir, representative_samples)
                      if quantize == "int8" else None)

    graph = TaskGraph(net, joint=joint)
    signatures = {key: fn.get_concrete_function() for key, fn in graph.functions.items()}
    raw = _convert_saved_model(graph, signatures, quantize, representative)

    model = fb.parse_model(raw, "the converter's output")
    saved = fb.dedupe_buffers(model)
    tasks = list(net.tasks)
    operands = graph_operands(graph)
    layout = prove_layout(model, 0, operands, tasks, allow_split_bias=(quantize == "int8"))
    manifest = build_manifest(zipdir.plan, model, layout, quantize)
    validate_manifest(manifest)
    fb.set_metadata(model, MANIFEST_METADATA, _manifest_bytes(manifest))
    data = fb.serialize(model)

    # read the bytes back: the layout must hold in what is written, not in what we meant to write
    reread = fb.parse_model(data, str(out_path))
    layout = prove_layout(reread, len(data), operands, tasks, allow_split_bias=(quantize == "int8"))
    _check_loads(data)
    write_atomic(out_path, data)

    result = Conversion(out_path, manifest, layout, saved)
    if baselines:
        for task in zipdir.plan.tasks:
            path = baseline_path(out_path, task.name)
            write_atomic(path, convert_baseline(zipdir.source_path(task.name), task.name, quantize,
                                                None if representative is None else representative[task.name]))
            result.baselines[task.name] = path
    return result


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
    from mtz_mobile.graph.keras_io import read_model
    from mtz_mobile.graph.network import ZippedNetwork

    graph = TaskGraph(ZippedNetwork.from_models({key: read_model(keras_path)}))
    reps = None if representative is None else {key: representative}
    return _convert_saved_model(graph, {key: graph.functions[key].get_concrete_function()}, quantize, reps)
