"""Bundle a converted model and a few labelled test images into the Android demo's assets.

    mtz-mobile export-android [MODEL.tflite] [--zip ZIPDIR] [--data TASK=SPEC ...]
                              [--data-dir DIR] [--per-source N] [--out-dir DIR]

MODEL defaults to demo_out/model.tflite (`mtz-mobile convert demo_out/zipped --out
demo_out/model.tflite --joint`). Writes, each atomically, into
android_demo/app/src/main/assets/ (or --out-dir):

- ``model.tflite``: the model, byte for byte (the app's fallback when none was pushed);
- ``samples.json``: test images with every task's true label and the host's LiteRT outputs::

    {"format": "mtz-mobile/android-samples", "version": 1,
     "model_sha256": "<hex of model.tflite>", "model_bytes": 1077664,
     "samples": [{"source": "fashion-mnist", "index": 0,      # test-set image index
                  "shape": [28, 28],                          # the task input's shape, no batch
                  "pixels": [0, 0, 13, ...],                  # raw values as stored, row-major
                  "truth": {"a": "Ankle boot", "b": "Footwear"},
                  "expected": {"a": [0.0001, ...], "b": [...]}}]}

The app computes model input = (raw - mean) * scale with the manifest's preprocessing, as the
host does here for "expected"; tasks whose labels differ (e.g. a coarse task) get their own
true label for the same image. Each task's data spec comes from --data, else the zip's
plan.json (--zip), else from its labels (Fashion-MNIST's 10 item types or 5 coarse groups).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from converters import flatbuffer as fb
from converters.manifest import read_manifest
from mtz_mobile.contract import ANDROID_ASSETS_DIR, DEMO_MODEL, DEVICE_MODEL_NAME
from mtz_mobile.data import COARSE_LABELS, FASHION_LABELS, TaskData, load_specs
from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import write_atomic

DEFAULT_MODEL = Path(DEMO_MODEL)
DEFAULT_ASSETS = Path(ANDROID_ASSETS_DIR)
SAMPLES_NAME = "samples.json"
SAMPLES_FORMAT = "mtz-mobile/android-samples"
SAMPLES_VERSION = 1
# Specs whose images are the same Fashion-MNIST test set: one image serves both.
_SAME_IMAGES = {"fashion-mnist": "fashion-mnist", "fashion-mnist-coarse": "fashion-mnist"}


def spec_from_labels(labels: list[str]) -> str | None:
    if list(labels) == FASHION_LABELS:
        return "fashion-mnist"
    if list(labels) == COARSE_LABELS:
        return "fashion-mnist-coarse"
    return None


def task_specs(manifest: dict, zip_dir=None, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Each task's data spec: --data, else the zip's plan.json, else inferred from its labels."""
    overrides = dict(overrides or {})
    planned = {}
    if zip_dir is not None:
        plan_path = Path(zip_dir) / "plan.json"
        try:
            plan = json.loads(plan_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MTZError(f"cannot read {plan_path} ({exc}): give the directory `mtz-mobile zip` wrote") from None
        planned = {t["name"]: t["data"] for t in plan.get("tasks", [])}
    names = [t["name"] for t in manifest["tasks"]]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise MTZError(f"--data names {', '.join(unknown)}, which the model does not have (tasks: {', '.join(names)})")
    specs = {}
    for task in manifest["tasks"]:
        spec = overrides.get(task["name"]) or planned.get(task["name"]) or spec_from_labels(task["labels"])
        if spec is None:
            raise MTZError(f"task {task['name']}: its labels are not Fashion-MNIST's; give --data "
                           f"{task['name']}=SPEC or --zip ZIPDIR")
        specs[task["name"]] = spec
    return specs


def pick_indices(labels: np.ndarray, n: int) -> list[int]:
    """Up to n test images, class by class in turn (first of each class, then second, ...)."""
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    picked: list[int] = []
    rank = 0
    while len(picked) < n and any(rank < len(idx) for idx in by_class):
        for idx in by_class:
            if rank < len(idx) and len(picked) < n:
                picked.append(int(idx[rank]))
        rank += 1
    return sorted(picked)


def raw_values(x: np.ndarray, data: TaskData) -> np.ndarray:
    """The values as stored, whole numbers where they are (8-bit pixels)."""
    raw = data.stored_values(x)
    rounded = np.rint(raw)
    return rounded if np.allclose(raw, rounded, atol=1e-3) else raw


def app_input(raw: np.ndarray, preprocessing: dict, shape: list[int]) -> np.ndarray:
    """What the app feeds: (raw - mean) * scale in float32, with the batch dimension."""
    mean = np.float32(preprocessing["mean"])
    scale = np.float32(preprocessing["scale"])
    return ((raw.astype(np.float32) - mean) * scale).astype(np.float32).reshape(shape)


def _json_numbers(values: np.ndarray) -> list:
    flat = np.asarray(values).ravel()
    if np.all(flat == np.rint(flat)):
        return [int(v) for v in flat]
    return [float(f"{v:.7g}") for v in flat]


def build_samples(model_bytes: bytes, manifest: dict, specs: dict[str, str], data_dir=None,
                  per_source: int = 10) -> dict:
    """samples.json's content: per image source, a few test images with each task's truth and output."""
    from mtz_mobile.litert_runtime import make_interpreter

    tasks = {t["name"]: t for t in manifest["tasks"]}
    datas = dict(zip(specs.values(), load_specs(specs.values(), data_dir)))
    groups: dict[str, list[str]] = {}
    for name, spec in specs.items():
        groups.setdefault(_SAME_IMAGES.get(spec, spec), []).append(name)

    interpreter = make_interpreter(model_content=model_bytes)
    runners = {name: interpreter.get_signature_runner(t["signature_key"]) for name, t in tasks.items()}
    samples = []
    for source, names in groups.items():
        # choose images by the task with the most classes, so the samples cover its labels
        lead = max(names, key=lambda n: datas[specs[n]].num_classes)
        lead_data = datas[specs[lead]]
        for name in names:
            data = datas[specs[name]]
            want = [int(d) for d in tasks[name]["input"]["shape"][1:]]
            if list(data.x_test.shape[1:]) != want:
                raise MTZError(f"task {name}: its data's images are {list(data.x_test.shape[1:])}, the model takes {want}")
            if len(data.x_test) != len(lead_data.x_test):
                raise MTZError(f"tasks {lead} and {name} share images from {source} but their test sets differ")
        for i in pick_indices(lead_data.y_test, per_source):
            raw = raw_values(lead_data.x_test[i], lead_data)
            truth, expected = {}, {}
            for name in names:
                task, data = tasks[name], datas[specs[name]]
                x = app_input(raw, task["preprocessing"], task["input"]["shape"])
                if not np.allclose(x[0], data.x_test[i], atol=1e-5):
                    raise MTZError(f"task {name}: the manifest's preprocessing {task['preprocessing']} does not "
                                   f"reproduce its data's inputs from the raw values")
                truth[name] = task["labels"][int(data.y_test[i])]
                out = runners[name](**{task["input"]["name"]: x})[task["output"]["name"]]
                expected[name] = _json_numbers(np.asarray(out, np.float32))
            samples.append({"source": source, "index": int(i), "shape": list(raw.shape),
                            "pixels": _json_numbers(raw), "truth": truth, "expected": expected})
    return {"format": SAMPLES_FORMAT, "version": SAMPLES_VERSION,
            "model_sha256": hashlib.sha256(model_bytes).hexdigest(), "model_bytes": len(model_bytes),
            "samples": samples}


def export_assets(model_path=DEFAULT_MODEL, out_dir=DEFAULT_ASSETS, zip_dir=None, data=None, data_dir=None,
                  per_source: int = 10) -> dict:
    """Write model.tflite and samples.json into ``out_dir``; returns {name: path}."""
    model_path, out_dir = Path(model_path), Path(out_dir)
    if not model_path.is_file():
        raise MTZError(f"{model_path} does not exist: convert a zip first (mtz-mobile convert ZIPDIR --out "
                       f"{model_path} --joint) or name the .tflite to export")
    model_bytes = model_path.read_bytes()
    manifest = read_manifest(fb.parse_model(model_bytes, str(model_path)))
    if manifest is None:
        raise MTZError(f"{model_path} has no embedded mtz_manifest: the app needs one; convert it with "
                       f"`mtz-mobile convert`")
    if per_source < 1:
        raise MTZError("--per-source must be at least 1")
    samples = build_samples(model_bytes, manifest, task_specs(manifest, zip_dir, data), data_dir, per_source)
    paths = {"model": out_dir / DEVICE_MODEL_NAME, "samples": out_dir / SAMPLES_NAME}
    write_atomic(paths["model"], model_bytes)
    write_atomic(paths["samples"], json.dumps(samples, separators=(",", ":")) + "\n")
    return paths
