"""Is a saved zip directory current, i.e. made from these models, data and settings? Asked by
`deploy` before it zips again; the answer is a short reason, or None when the zip can be reused."""

from __future__ import annotations

import os
from pathlib import Path

from mtz_mobile.data import specs_for
from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import sha256_of

from .config import ZipConfig
from .plan import load_zip_dir


def data_specs(data, tasks: list[str]) -> list:
    """Each task's data spec as the zipper records it in plan.tasks[i].data; a malformed ``data``
    gives specs that differ from any plan's, so the zip runs and reports the mistake itself."""
    if isinstance(data, dict):
        return [getattr(data.get(t), "spec", None) for t in tasks]
    try:
        return specs_for(data, len(tasks))
    except MTZError:
        return [None] * len(tasks)   # the zip refuses it with the same message


def zip_staleness(zip_dir: str | os.PathLike, model_paths: dict[str, str | os.PathLike], data,
                  config: ZipConfig) -> str | None:
    """Why ``zip_dir`` was not made from ``model_paths`` (task name → .keras file), ``data`` (one
    spec, one per task, or loaded TaskData by task) and ``config``: "missing", "damaged", "models
    changed", "zip settings changed" or "data changed"; None when it was. A zip of other tasks is
    an MTZError: zipping again would replace another deployment's work."""
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
    if [t.data for t in plan.tasks] != data_specs(data, tasks):
        return "data changed"
    return None
