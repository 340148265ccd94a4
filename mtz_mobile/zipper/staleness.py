"""Is a saved zip directory current, i.e. made from these models, data and settings? Asked by
`deploy` before it zips again; the answer is a short reason, or None when the zip can be reused.

The data are compared by content, not by name: plan.json records, per task, the sha256 of the
training arrays the zip was calibrated and retrained on (``data_sha256``, see ``data_digest``),
and the preprocessing and labels it recorded are compared as they are. A spec string alone names
the same arrays for a built-in data set, but not an npz or a folder that changed, nor arrays
handed to the API (a 4,000-image slice and the full set share the spec ``fashion-mnist``). A zip
written before the digest was recorded counts as stale ("data digest not recorded"): it is zipped
again once, rather than trusted on its spec strings.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from mtz_mobile.data import TaskData, load_specs, specs_for
from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import sha256_of

from .config import ZipConfig
from .plan import load_zip_dir


def data_digest(data: TaskData) -> str:
    """sha256 of what zipping reads from a task's data: the training images and labels (dtype,
    shape and bytes; calibration, retraining and the hold-out all come from them)."""
    h = hashlib.sha256()
    for array in (data.x_train, data.y_train):
        array = np.ascontiguousarray(array)
        h.update(f"{array.dtype.str}{array.shape};".encode())
        h.update(memoryview(array).cast("B"))
    return h.hexdigest()


def _loaded(data, tasks: list[str], data_dir) -> dict[str, TaskData] | None:
    """Each task's TaskData, loading specs as the zipper would; None for a malformed ``data`` (the
    zip then runs and refuses it with its own message)."""
    if isinstance(data, dict):
        return data if all(isinstance(data.get(t), TaskData) for t in tasks) else None
    try:
        return dict(zip(tasks, load_specs(specs_for(data, len(tasks)), data_dir)))
    except MTZError:
        return None


def _data_change(plan, data, tasks: list[str], data_dir) -> str | None:
    if any(getattr(t, "data_sha256", None) is None for t in plan.tasks):
        return "data digest not recorded (zipped by an older version)"
    if not isinstance(data, dict):   # other spec strings: changed, without loading anything
        try:
            if specs_for(data, len(tasks)) != [t.data for t in plan.tasks]:
                return "data changed"
        except MTZError:
            return "data changed"
    loaded = _loaded(data, tasks, data_dir)
    if loaded is None:
        return "data changed"
    for record in plan.tasks:
        now = loaded[record.name]
        if (record.data_sha256 != data_digest(now) or record.preprocessing != dict(now.preprocessing)
                or record.labels != list(now.labels)):
            return f"data changed (task {record.name})"
    return None


def zip_staleness(zip_dir: str | os.PathLike, model_paths: dict[str, str | os.PathLike], data,
                  config: ZipConfig, data_dir=None) -> str | None:
    """Why ``zip_dir`` was not made from ``model_paths`` (task name → .keras file), ``data`` (one
    spec, one per task, or loaded TaskData by task; specs load from ``data_dir``) and ``config``:
    "missing", "damaged", "models changed", "zip settings changed", "data digest not recorded …" or
    "data changed …"; None when it was. A zip of other tasks is an MTZError: zipping again would
    replace another deployment's work."""
    zip_dir = Path(zip_dir)
    if not (zip_dir / "plan.json").is_file() or not (zip_dir / "weights.npz").is_file():
        return "missing"
    try:
        plan = load_zip_dir(zip_dir).plan
    except MTZError:
        return "damaged"
    tasks = list(model_paths)
    if [t.name for t in plan.tasks] != tasks:
        raise MTZError(f"{zip_dir} holds tasks {', '.join(t.name for t in plan.tasks)}, not {', '.join(tasks)}: "
                       "use another --out or delete it")
    if [t.sha256 for t in plan.tasks] != [sha256_of(p) for p in model_paths.values()]:
        return "models changed"  # the same task names from other files, e.g. retrained references
    # the zipper's own --resume check: the saved settings read back as a config, compared as JSON
    if plan.config().to_json() != config.to_json():
        return "zip settings changed"
    return _data_change(plan, data, tasks, data_dir)
