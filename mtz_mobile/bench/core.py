"""What every bench target shares: the model's description, its baselines matched to its tasks,
the storage figures, the latency statistics and the zipped / separate ratios. The host
(``bench.host``), Android (``bench.android``) and browser (``web.bench``) benches import it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import sha256_of


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def describe_model(path: str | os.PathLike) -> dict:
    """Bytes, checksum, signatures, tasks and the unique weight bytes of a .tflite."""
    from converters.inspection import inspect_model

    path = Path(path)
    if not path.is_file():
        raise MTZError(f"model {path} not found: give the path of a .tflite written by `mtz-mobile convert`")
    info = inspect_model(path)
    signatures = list(info["signatures"])
    if not signatures:
        raise MTZError(f"{path} has no signatures: convert it again with `mtz-mobile convert`")
    manifest = info["manifest"]
    inspected = sum(b["bytes"] for b in info["buffers"] if b["role"] in ("weights", "bias"))
    if manifest is not None:
        tasks = [t["signature_key"] for t in manifest["tasks"]]
        joint = manifest["joint"]["signature_key"] if manifest.get("joint") else None
        weight_bytes, source = int(manifest["sharing"]["file"]["weight_bytes"]), "manifest"
    else:
        from mtz_mobile.contract import JOINT_KEY

        tasks = [k for k in signatures if k != JOINT_KEY]
        joint = JOINT_KEY if JOINT_KEY in signatures else None
        weight_bytes, source = inspected, "inspect"
    missing = [k for k in tasks + ([joint] if joint else []) if k not in signatures]
    if missing:
        raise MTZError(f"{path}'s manifest names signature(s) {', '.join(missing)} the file lacks: convert it again")
    return {"path": str(path), "file_bytes": path.stat().st_size, "sha256": sha256_of(path),
            "signatures": signatures, "tasks": tasks, "joint_key": joint, "unique_weight_bytes": weight_bytes,
            "weight_bytes_source": source, "inspected_weight_bytes": inspected, "has_manifest": manifest is not None}


def match_baselines(model: dict, baselines) -> list[dict]:
    """Each baseline must be a single-signature file whose key is one of the model's tasks,
    one file per task."""
    out, seen = [], {}
    for b in baselines or []:
        info = describe_model(b)
        keys = [k for k in info["signatures"]]
        if len(keys) != 1:
            raise MTZError(f"baseline {b} has {len(keys)} signatures ({', '.join(keys)}): give single-task files "
                           "such as OUT_STEM.baseline_TASK.tflite from `mtz-mobile convert --baselines`")
        key = keys[0]
        if key not in model["tasks"]:
            raise MTZError(f"baseline {b} runs signature {key!r}, not a task of {model['path']} "
                           f"({', '.join(model['tasks'])}): give the baselines converted with this model")
        if key in seen:
            raise MTZError(f"baselines {seen[key]} and {b} both run task {key!r}: give one file per task")
        seen[key] = b
        out.append({"task": key, "path": info["path"], "file_bytes": info["file_bytes"], "sha256": info["sha256"],
                    "signature": key, "weight_bytes": info["inspected_weight_bytes"]})
    if out and set(seen) != set(model["tasks"]):
        missing = sorted(set(model["tasks"]) - set(seen))
        raise MTZError(f"no baseline for task(s) {', '.join(missing)}: give one baseline file per task")
    return sorted(out, key=lambda b: model["tasks"].index(b["task"]))


def storage_figures(model: dict, baselines: list[dict]) -> dict:
    floor = model["unique_weight_bytes"]
    zipped = model["file_bytes"]
    out = {"zipped_file_bytes": zipped, "unique_weight_bytes": floor, "weight_bytes_source": model["weight_bytes_source"],
           "zipped_over_floor_bytes": zipped - floor, "floor_ratio": ratio(zipped, floor),
           "baselines_file_bytes": None, "baselines_weight_bytes": None, "file_ratio": None,
           "saving_bytes": None, "saving_fraction": None}
    if baselines:
        total = sum(b["file_bytes"] for b in baselines)
        out.update(baselines_file_bytes=total, baselines_weight_bytes=sum(b["weight_bytes"] for b in baselines),
                   file_ratio=ratio(zipped, total), saving_bytes=total - zipped,
                   saving_fraction=(total - zipped) / total if total else None)
    return out


def stats(samples) -> dict:
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        raise MTZError("no timing samples were taken: use --runs >= 1")
    return {"n": int(a.size), "median_us": float(np.median(a)), "p90_us": float(np.percentile(a, 90)),
            "mean_us": float(a.mean()), "min_us": float(a.min()), "max_us": float(a.max())}


TIME_FIELDS = ("median_us", "p90_us", "mean_us", "min_us", "max_us", "init_us", "first_us")


def latency_entry(variant: str, key: str, model: dict, cache: str, source: str, runs, warmup, times: dict) -> dict:
    """One report latency entry, host or Android; a figure the source does not give is None."""
    return {"variant": variant, "signature": key, "task": key if key in model["tasks"] else None,
            "xnnpack_cache": cache, "source": source, "runs": runs, "warmup": warmup,
            **{f: times.get(f) for f in TIME_FIELDS}}


def _compared(z: dict, parts: list[dict]) -> str:
    """The statistic both sides have: the median where every side has one, else the mean."""
    return "median_us" if all(e.get("median_us") is not None for e in [z] + parts) else "mean_us"


def latency_ratios(entries: list[dict], model: dict) -> list[dict]:
    med = {(e["variant"], e["signature"], e["xnnpack_cache"]): e for e in entries}
    out = []
    for cache in sorted({e["xnnpack_cache"] for e in entries}):
        for key in model["tasks"]:
            z, b = med.get(("zipped", key, cache)), med.get(("baselines", key, cache))
            if z and b:
                f = _compared(z, [b])
                out.append({"signature": key, "xnnpack_cache": cache, "statistic": f.replace("_us", ""),
                            "zipped_us": z[f], "baselines_us": b[f], "ratio": ratio(z[f], b[f]),
                            "note": "same signature, zipped file vs its own file"})
        joint = model["joint_key"]
        z = med.get(("zipped", joint, cache)) if joint else None
        parts = [med.get(("baselines", k, cache)) for k in model["tasks"]]
        if z and all(parts):
            f = _compared(z, parts)
            total = sum(p[f] for p in parts)
            out.append({"signature": joint, "xnnpack_cache": cache, "statistic": f.replace("_us", ""),
                        "zipped_us": z[f], "baselines_us": total, "ratio": ratio(z[f], total),
                        "note": "one call of the joint signature vs one call of every baseline in turn"})
    return out
