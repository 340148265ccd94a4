"""The sample images the browser page offers: the zip's own test data when there is any, exported
beside the model as MODEL_STEM.samples.json, else the Fashion-MNIST set shipped in static/.

One file format (what static/app.js reads)::

    {"format": "mtz-mobile/web-samples", "version": 1, "source": "...", "shape": [H, W],
     "samples": [{"index": 0, "label": "Bag", "pixels": "<base64 of H*W uint8, row-major>"}]}

The pixels are raw grey values as stored, before the task's preprocessing (the page feeds a task
(raw - mean) * scale, fitted to its input): the loaded images with their preprocessing undone.
Colour images become grey as the page makes an upload grey (ITU-R 601 luma), and a grey image
repeated into 3 channels is its one channel, so the page feeds a task what it was tested on up to
that rule. Per task the first test image of each class, at most ``PER_TASK``; the tasks whose
images have the first task's size, so that one shape holds for every sample.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from mtz_mobile.fileio import write_atomic

FORMAT = "mtz-mobile/web-samples"
PER_TASK = 10
SUFFIX = ".samples.json"
LUMA = np.array([0.299, 0.587, 0.114], np.float64)   # app.js greyFor's weights


def samples_path(model: str | Path) -> Path:
    """Where the page's samples for ``model`` live: beside it, MODEL_STEM.samples.json."""
    model = Path(model)
    return model.with_name(model.stem + SUFFIX)


def raw_grey(raw: np.ndarray) -> np.ndarray:
    """Stored values (N, H, W[, C]) (TaskData.stored_values) → grey uint8 (N, H, W)."""
    if raw.ndim == 4:
        same = raw.shape[3] == 1 or np.all(raw == raw[..., :1])
        raw = raw[..., 0] if same else raw[..., :3] @ LUMA
    return np.clip(np.rint(raw), 0, 255).astype(np.uint8)


def build_samples(datas: dict, per_class: int = 1, per_task: int | None = PER_TASK, source: str | None = None) -> dict:
    """The samples document from tasks' loaded data (task name → TaskData; their test sets);
    ``per_task`` None: every picked image."""
    entries, shape = [], None
    named = len(datas) > 1
    for task, data in datas.items():
        raw = raw_grey(data.stored_values(data.x_test))
        if shape is None:
            shape = list(raw.shape[1:])
        if list(raw.shape[1:]) != shape:
            continue   # one shape for the page: the first task's
        picked = sorted(int(i) for c in range(len(data.labels)) for i in np.flatnonzero(data.y_test == c)[:per_class])
        for i in picked[:per_task]:
            label = data.labels[int(data.y_test[i])]
            entries.append({"index": i, "label": f"{task}: {label}" if named else label,
                            "pixels": base64.b64encode(raw[i].tobytes()).decode("ascii")})
    if source is None:
        source = "test sets of " + ", ".join(f"{t} ({d.spec})" for t, d in datas.items())
    return {"format": FORMAT, "version": 1, "source": source, "shape": shape or [0, 0], "samples": entries}


def write_samples(model: str | Path, datas: dict) -> Path:
    """MODEL_STEM.samples.json beside ``model``, from the tasks' test data (atomically)."""
    path = samples_path(model)
    write_atomic(path, (json.dumps(build_samples(datas), indent=1) + "\n").encode())
    return path


def write_zip_samples(model: str | Path, zip_dir: str | Path, data_dir=None, datas: dict | None = None) -> Path:
    """The samples of the zip's own data (plan.json's specs, or ``datas`` when given loaded) beside ``model``."""
    from mtz_mobile.data import load_specs

    plan = json.loads((Path(zip_dir) / "plan.json").read_text())
    tasks = [(t["name"], t["data"]) for t in plan["tasks"]]
    given = datas if isinstance(datas, dict) else {}
    missing = [(t, spec) for t, spec in tasks if t not in given]
    loaded = dict(zip((t for t, _ in missing), load_specs((spec for _, spec in missing), data_dir)))
    return write_samples(model, {t: given.get(t) or loaded[t] for t, _ in tasks})
