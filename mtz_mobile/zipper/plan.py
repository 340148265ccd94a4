"""plan.json — what was shared and why — and the zip directory that holds it with the weights.

A zip directory contains ``plan.json``, ``weights.npz`` (every block of the zipped network by
name, float32) and ``sources/`` (the original models). It is written under a temporary name and
renamed when complete; an interrupted zip leaves ``<out>.partial/`` with a checkpoint that
``--resume`` continues from.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mtz_mobile.errors import MTZError

from mtz_mobile.graph.network import ZippedNetwork

from .config import ZipConfig

PLAN_FORMAT = "mtz-mobile/plan"
PLAN_VERSION = 1


@dataclass
class TaskRecord:
    name: str
    source: str          # file name under sources/
    sha256: str
    data: str            # data spec (see data.py)
    input_shape: list[int]
    labels: list[str]
    preprocessing: dict
    output_activation: str
    # sha256 of the training arrays the zip was made on (zipper.staleness.data_digest); None in a
    # plan.json written before it was recorded, which deploy then treats as stale
    data_sha256: str | None = None


@dataclass
class LayerRecord:
    index: int           # hidden weight layer number (1-based)
    name: str
    kind: str
    newcomer: str        # the task whose units were zipped into the joint network in this step
    n_existing: int      # units of the joint network's tasks in this layer
    n_new: int           # units of the newcomer
    n_shared: int
    units: dict          # units per task after the step
    alpha: float
    damping: float | None  # the absolute λ added to S (split equally between the two sides' Hessians)
    method: str
    pairing: str
    compensation: str
    pairs: list           # [i, j, d]: unit i of the joint network (numbered in its group's first task's
                          # original layer) with the newcomer's unit j, and d(i, j)
    total_d: float | None
    retrain: dict
    seconds: float
    shared_params: int
    search: dict | None = None   # adaptive zipping: the counts tried, their validation errors and bounds


@dataclass
class Plan:
    tasks: list[TaskRecord]
    settings: dict
    layers: list[LayerRecord] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    network: dict = field(default_factory=dict)
    tool_version: str = ""
    final_retrain: dict = field(default_factory=dict)   # retraining schedule "end": once, after every layer
    validation: dict = field(default_factory=dict)      # per task: the finished zip's increase and its bound

    def to_json(self) -> dict:
        return {"format": PLAN_FORMAT, "version": PLAN_VERSION, "tool_version": self.tool_version,
                "tasks": [asdict(t) for t in self.tasks], "settings": self.settings,
                "layers": [asdict(l) for l in self.layers], "params": self.params, "network": self.network,
                "final_retrain": self.final_retrain, "validation": self.validation}

    @classmethod
    def from_json(cls, obj: dict) -> "Plan":
        if obj.get("format") != PLAN_FORMAT:
            raise MTZError("not an mtz-mobile plan.json (format field missing): point at a directory written by `mtz-mobile zip`")
        return cls([TaskRecord(**t) for t in obj["tasks"]], obj["settings"],
                   [LayerRecord(**l) for l in obj["layers"]], obj.get("params", {}), obj.get("network", {}),
                   obj.get("tool_version", ""), obj.get("final_retrain", {}), obj.get("validation", {}))

    def config(self) -> ZipConfig:
        """The settings the zip was made with, as the ZipConfig that made them."""
        # sparse_detected is what the zipper found in the models, not a setting it was given
        return ZipConfig.from_json({k: v for k, v in self.settings.items() if k != "sparse_detected"})

    def task(self, name: str) -> TaskRecord:
        for t in self.tasks:
            if t.name == name:
                return t
        raise MTZError(f"no task {name!r} in the plan: tasks are {', '.join(t.name for t in self.tasks)}")


@dataclass
class ZipDir:
    """A finished zip directory, loaded."""

    path: Path
    plan: Plan
    network: ZippedNetwork

    def source_path(self, task: str) -> Path:
        return self.path / "sources" / self.plan.task(task).source


def load_zip_dir(path: str | os.PathLike) -> ZipDir:
    path = Path(path)
    plan_path, weights_path = path / "plan.json", path / "weights.npz"
    if not plan_path.exists() or not weights_path.exists():
        raise MTZError(f"{path} is not a zip directory (plan.json and weights.npz expected): run `mtz-mobile zip` first")
    try:
        plan = Plan.from_json(json.loads(plan_path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise MTZError(f"{plan_path} is damaged ({type(exc).__name__}): zip again") from exc
    with np.load(weights_path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    try:
        network = ZippedNetwork.from_structure(plan.network, arrays)
    except KeyError as exc:
        raise MTZError(f"{weights_path} lacks block {exc.args[0]} named in plan.json: the two disagree, zip again") from exc
    expected = set(network.arrays())
    if set(arrays) != expected:
        extra = sorted(set(arrays) - expected)
        raise MTZError(f"{weights_path} has blocks plan.json does not name ({', '.join(extra[:3])}): zip again")
    return ZipDir(path, plan, network)

