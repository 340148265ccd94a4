"""Is a converted file current, i.e. what ``convert_zip`` would make of this zip with these
settings? Asked by `deploy` before it converts again; the answer is a short reason, or None when the
file can be reused (the protocol of ``zipper.staleness`` and ``bench.staleness``: each stage owns its rule)."""

from __future__ import annotations

import os
from pathlib import Path

from mtz_mobile.contract import baseline_path
from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import sha256_of
from mtz_mobile.zipper.plan import load_zip_dir

from . import flatbuffer as fb
from .manifest import read_manifest


def conversion_staleness(model_path: str | os.PathLike, zip_dir: str | os.PathLike, quantize: str = "none",
                         joint: bool = False, baselines: bool = False) -> str | None:
    """Why ``model_path`` (and, with ``baselines``, its baseline files) is not what ``convert_zip``
    would make of ``zip_dir`` with these settings, or None when it is."""
    model_path, zip_dir = Path(model_path), Path(zip_dir)
    if not model_path.is_file():
        return "missing"
    try:
        plan = load_zip_dir(zip_dir).plan
    except MTZError:
        return "no zip"
    if model_path.stat().st_mtime < (zip_dir / "plan.json").stat().st_mtime:
        return "zip changed"
    try:
        manifest = read_manifest(fb.load_model(model_path))
    except MTZError:
        return "damaged"
    if manifest is None:
        return "no manifest"
    if {t["name"]: t["source"]["sha256"] for t in manifest["tasks"]} != {t.name: t.sha256 for t in plan.tasks}:
        return "models changed"
    if manifest["quantization"] != quantize:
        return f"quantization changed ({manifest['quantization']} → {quantize})"
    if (manifest["joint"] is not None) != joint:
        return "joint signature wanted" if joint else "joint signature not wanted"
    recorded = manifest.get("baselines") or {}
    for task in plan.tasks if baselines else []:
        path = baseline_path(model_path, task.name)
        if task.name not in recorded or not path.is_file():
            return "baselines missing"
        if sha256_of(path) != recorded[task.name]["sha256"]:
            return "baselines changed"
    return None
