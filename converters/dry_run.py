"""The dry run before a long zip: will the zipped graph convert, with each shared block stored once?

What can stop a conversion is the graph, not the values a zip finds: which ops follow which, and
which constants are shared. The most shared structure the zip can reach is every hidden block
shared, so the check builds that structure from the models themselves in seconds (the first
task's blocks, owned by every task; each task keeps its own output layer, which is never shared),
converts it through the converter's own path and proves its layout from the bytes, before any
calibration. A partially shared zip has the same ops, summed per owner set
(tests/test_convert_architectures.py converts both on every listed architecture).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np

from mtz_mobile.errors import MTZError
from mtz_mobile.graph.network import Group, ZippedNetwork
from mtz_mobile.zipper.config import option


@dataclass
class ConversionCheck:
    """``zip`` / ``deploy``: the dry run (``check_convertible``) before the zip starts."""

    dry_run: bool = option(True, "before zipping, convert the models' structure with every hidden block shared "
                                 "(seconds) so a graph that cannot become one .tflite is refused before the long work")


@dataclass
class DryRunReport:
    seconds: float
    shared_weight_bytes: int
    operands: int


def fully_shared(net: ZippedNetwork) -> ZippedNetwork:
    """``net`` (unzipped: one group per task) as a zip at 100 % would leave it: one group per hidden
    weight node owned by every task, holding the first task's blocks; the output layer per task.
    Every source then has one group, so every weight node reads input group 0."""
    tasks, first = tuple(net.tasks), net.tasks[0]
    out = net.copy()
    for i, node in enumerate(out.nodes):
        if not node.is_weight:
            continue
        # unzipped, each task's blocks are owned by that task alone (from_models)
        kernel = next(k for (_, _, owners), k in node.kernels.items() if owners == (first,))
        bias = next(b for (_, owners), b in node.biases.items() if owners == (first,))
        units = list(range(len(bias)))
        if i == out.output:
            node.groups = [Group((t,), {t: units}) for t in tasks]
            node.kernels = {(0, g, (t,)): kernel for g, t in enumerate(tasks)}
            node.biases = {(g, (t,)): bias for g, t in enumerate(tasks)}
        else:
            node.groups = [Group(tasks, {t: units for t in tasks})]
            node.kernels, node.biases = {(0, 0, tasks): kernel}, {(0, tasks): bias}
    return out


def check_convertible(models, quantize: str = "none") -> DryRunReport | None:
    """Convert the fully shared structure of ``models`` (task → parsed model, or an unzipped
    ZippedNetwork) in memory and prove its layout; an MTZError names the node and the fix.
    None where TensorFlow (whose converter this is) is not installed: a zip made with another Keras
    backend is converted later, where it is."""
    from mtz_mobile.contract import QUANTIZATIONS

    if quantize not in QUANTIZATIONS:
        raise MTZError(f"unknown quantization {quantize!r}: use one of {', '.join(QUANTIZATIONS)}")
    try:
        import tensorflow as tf
    except ImportError:
        return None
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        # the zip computes on another backend (JAX): TensorFlow only converts here, on the CPU, and must
        # not claim the GPU memory the zip is about to use
        with contextlib.suppress(RuntimeError):   # TensorFlow's devices already started: they stay as they are
            tf.config.set_visible_devices([], "GPU")
    start = time.perf_counter()
    net = models if isinstance(models, ZippedNetwork) else ZippedNetwork.from_models(models)
    shared = fully_shared(net)
    key = _digest(shared, quantize)
    if key in _PASSED:   # the same graph and values again in this process (a sweep, a test suite)
        return _PASSED[key]
    try:
        layout, operands = _convert_and_prove(shared, quantize)
    except MTZError as exc:
        raise MTZError(f"dry run: {_named(str(exc), shared)}") from None
    _PASSED[key] = DryRunReport(time.perf_counter() - start, layout.shared_weight_bytes, operands)
    return _PASSED[key]


_PASSED: dict[str, DryRunReport] = {}


def _digest(net: ZippedNetwork, quantize: str) -> str:
    """Everything the conversion depends on: the structure, every block's bytes, the mode."""
    h = hashlib.sha256(json.dumps([net.structure(), quantize], sort_keys=True, default=repr).encode())
    for name, arr in sorted(net.arrays().items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _convert_and_prove(net: ZippedNetwork, quantize: str):
    """convert.py's path (graph → converter → dedupe → layout proof → LiteRT load), without files."""
    from . import flatbuffer as fb
    from .convert import _check_loads, _convert_saved_model, graph_operands
    from .graph import TaskGraph
    from .layout import prove_layout

    graph = TaskGraph(net)
    signatures = {key: fn.get_concrete_function() for key, fn in graph.functions.items()}
    # int8 needs each task's images for its ranges; the structure is the same as the float file's
    raw = _convert_saved_model(graph, signatures, "none" if quantize == "int8" else quantize, None)
    model = fb.parse_model(raw, "the converter's output")
    fb.dedupe_buffers(model)
    operands = graph_operands(graph)
    data = fb.serialize(model)
    layout = prove_layout(fb.parse_model(data, "the dry run's file"), len(data), operands, list(net.tasks))
    _check_loads(data)
    return layout, len(operands)


def _named(message: str, net: ZippedNetwork) -> str:
    """The proof names blocks n<node>_g…: add the layer's own name and the way out."""
    import re

    found = re.search(r"\bn(\d+)_g\d+", message)
    if found and int(found.group(1)) < len(net.nodes):
        node = net.nodes[int(found.group(1))]
        message = f"layer {node.name} ({node.op}): {message}"
    message = message.replace("; report this with the zip directory", "")
    return (message + ": share none of this layer (--shared with one value per layer, 0 for it) or report it "
            "with the models; --no-dry-run zips anyway")
