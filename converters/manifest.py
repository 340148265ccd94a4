"""The manifest embedded in every zipped .tflite: the one source of truth for app and bench."""

from __future__ import annotations

import json
from pathlib import Path

from mtz_mobile import __version__
from mtz_mobile.errors import MTZError
from mtz_mobile.graph.model_files import model_format
from mtz_mobile.zipper.plan import Plan
from mtz_mobile.schemas import validate_json

from .flatbuffer import TYPE_NAMES, decode, get_metadata, signature_subgraphs
from mtz_mobile.contract import JOINT_KEY, MANIFEST_METADATA
from .layout import LayoutReport

SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")
MANIFEST_FORMAT = "mtz-mobile/manifest"


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def signature_tensors(model, key: str) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) of a signature as {name, shape, dtype}, read from the flatbuffer."""
    for sig in model.signatureDefs or []:
        if decode(sig.signatureKey) == key:
            sg = model.subgraphs[sig.subgraphIndex]

            def describe(tmap):
                t = sg.tensors[tmap.tensorIndex]
                return {"name": decode(tmap.name), "shape": [int(d) for d in (t.shape if t.shape is not None else [])],
                        "dtype": TYPE_NAMES.get(t.type, str(t.type))}

            return [describe(m) for m in sig.inputs or []], [describe(m) for m in sig.outputs or []]
    raise MTZError(f"the converted file has no signature {key!r}")


def _layout(shape: list[int]) -> str:
    return {1: "N", 2: "HW", 3: "HWC"}.get(len(shape) - 1, "N")


def _source(file: str, sha256: str, rank: int) -> dict:
    """The task's model file; an ONNX model's own input layout is named beside it, as its users
    feed NCHW tensors and the file's signatures take NHWC ones (input.layout)."""
    fmt = model_format(file)
    if fmt != "onnx":
        return {"file": file, "sha256": sha256, "format": fmt}
    return {"file": file, "sha256": sha256, "format": fmt, "input_layout": "NCHW" if rank == 3 else "NC"}


def build_manifest(plan: Plan, model, report: LayoutReport, quantization: str,
                   baselines: dict[str, dict] | None = None) -> dict:
    """``baselines``: task → {file, sha256} of the single-task files converted alongside, recorded so
    that a later run can tell whether the files beside the model belong to it."""
    tasks = []
    for task in plan.tasks:
        inputs, outputs = signature_tensors(model, task.name)
        (inp,), (out,) = inputs, outputs
        inp["layout"] = _layout(inp["shape"])
        out["activation"] = task.output_activation
        tasks.append({"name": task.name, "signature_key": task.name, "input": inp, "output": out,
                      "labels": list(task.labels),
                      "preprocessing": {"scale": float(task.preprocessing.get("scale", 1.0)),
                                        "mean": float(task.preprocessing.get("mean", 0.0))},
                      "source": _source(task.source, task.sha256, len(task.input_shape))})
    joint = None
    if JOINT_KEY in signature_subgraphs(model):
        inputs, outputs = signature_tensors(model, JOINT_KEY)
        (inp,) = inputs
        inp["layout"] = _layout(inp["shape"])
        joint = {"signature_key": JOINT_KEY, "input": inp,
                 "outputs": [dict(o, task=o["name"]) for o in outputs]}
    params = plan.params
    layers = [{"name": l.name, "kind": l.kind, "n_shared": l.n_shared, "units": dict(l.units)}
              for l in plan.layers]
    return {
        "format": MANIFEST_FORMAT, "version": 1, "tool_version": __version__, "quantization": quantization,
        "tasks": tasks, "joint": joint, "baselines": baselines,
        "sharing": {"separate_params": params["separate_total"], "zipped_params": params["zipped"],
                    "shared_params": params["shared"], "shared_fraction": params["shared_fraction"],
                    "shared_fraction_definition": params["shared_fraction_definition"], "layers": layers,
                    "file": {"weight_bytes": report.weight_bytes, "shared_weight_bytes": report.shared_weight_bytes,
                             "task_weight_bytes": dict(report.task_weight_bytes),
                             "duplicated_bytes": report.duplicated_bytes}},
    }


def validate_manifest(manifest: dict) -> None:
    validate_json(manifest, load_schema(), "manifest")


def read_manifest(model) -> dict | None:
    raw = get_metadata(model, MANIFEST_METADATA)
    if raw is None:
        return None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MTZError(f"the embedded manifest is not JSON ({type(exc).__name__}): convert the model again") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise MTZError("the embedded mtz_manifest has an unknown format: convert the model again")
    try:   # readers index its fields without checks: a damaged manifest stops here, in one line
        validate_manifest(manifest)
    except MTZError as exc:
        raise MTZError(f"the embedded {exc}: convert the model again") from None
    return manifest
