"""`mtz-mobile inspect`: what a .tflite stores, and which signatures use each buffer."""

from __future__ import annotations

import os
from pathlib import Path

from .flatbuffer import buffer_uses, load_model, signature_subgraphs
from .layout import buffer_roles, split_weight_bytes
from .manifest import read_manifest, signature_tensors


def inspect_model(path: str | os.PathLike) -> dict:
    path = Path(path)
    model = load_model(path)
    uses = buffer_uses(model)
    roles = buffer_roles(model)
    signatures = {}
    for key in signature_subgraphs(model):
        inputs, outputs = signature_tensors(model, key)
        signatures[key] = {"inputs": inputs, "outputs": outputs}
    manifest = read_manifest(model)
    task_keys = [t["signature_key"] for t in manifest["tasks"]] if manifest else list(signatures)
    buffers = [{"index": index, "bytes": use.nbytes, "role": roles.get(index, "constant"),
                "signatures": sorted(use.signatures), "tensor": use.tensors[0][1], "dtype": use.tensors[0][2],
                "shape": list(use.tensors[0][3])} for index, use in sorted(uses.items())]
    weight_bytes, shared, per_sig = split_weight_bytes(uses, roles, task_keys)
    other = sum(use.nbytes for use in uses.values()) - weight_bytes  # shapes, converter-added zero biases
    return {"path": str(path), "file_bytes": path.stat().st_size, "signatures": signatures, "buffers": buffers,
            "shared_weight_bytes": shared, "task_weight_bytes": per_sig, "other_constant_bytes": other,
            "manifest": manifest}


def format_inspection(info: dict) -> str:
    lines = [f"{info['path']}: {info['file_bytes']:,} bytes"]
    lines.append("signatures:")
    for key, sig in info["signatures"].items():
        ins = ", ".join(f"{t['name']} {t['dtype']}{t['shape']}" for t in sig["inputs"])
        outs = ", ".join(f"{t['name']} {t['dtype']}{t['shape']}" for t in sig["outputs"])
        lines.append(f"  {key}: ({ins}) -> ({outs})")
    lines.append("buffers (constants):")
    lines.append("  index       bytes  role     dtype    shape          used by")
    for b in info["buffers"]:
        lines.append(f"  {b['index']:5d} {b['bytes']:11,d}  {b['role']:<8} {b['dtype']:<8} "
                     f"{str(b['shape']):<14} {', '.join(b['signatures'])}")
    lines.append(f"shared weight bytes (used by two or more task signatures): {info['shared_weight_bytes']:,}")
    for key, n in info["task_weight_bytes"].items():
        lines.append(f"task-specific weight bytes of {key}: {n:,}")
    lines.append(f"other constants: {info['other_constant_bytes']:,} bytes")
    manifest = info["manifest"]
    if manifest is None:
        lines.append("manifest: none (not written by mtz-mobile convert)")
    else:
        s = manifest["sharing"]
        lines.append(f"manifest: {manifest['format']} v{manifest['version']} by mtz-mobile {manifest['tool_version']}, "
                     f"quantization {manifest['quantization']}")
        for t in manifest["tasks"]:
            lines.append(f"  task {t['name']}: signature {t['signature_key']}, input {t['input']['name']} "
                         f"{t['input']['shape']} {t['input'].get('layout', '')}, {len(t['labels'])} labels, "
                         f"scale {t['preprocessing']['scale']:.6g} mean {t['preprocessing']['mean']:g}")
        if manifest["joint"]:
            lines.append(f"  joint signature: {manifest['joint']['signature_key']}")
        lines.append(f"  parameters: {s['separate_params']:,} separately, {s['zipped_params']:,} zipped, "
                     f"{s['shared_params']:,} shared ({100 * s['shared_fraction']:.2f} %: "
                     f"{s['shared_fraction_definition']})")
        if s["file"]["duplicated_bytes"]:
            lines.append(f"  bytes of shared blocks the quantization could not keep single: "
                         f"{s['file']['duplicated_bytes']:,} (per-task int32 biases)")
    return "\n".join(lines)
