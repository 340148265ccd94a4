"""The run loop of Algorithm 1, on any graph the graph reader accepts, with its checkpoint.

Tasks are zipped in sequence: the second model into the first, then the third into the joint
network, and so on (the authors zipped nine ResNets this way). For each newcomer and each hidden
weight node in topological order one ``step.zip_layer`` (or, with an error budget, one
``adaptive.adaptive_layer``) runs on the partially zipped network. Output layers stay
task-specific. With two tasks this is the paper's algorithm.

With an output directory the zip is built in its partial sibling (``fileio.partial_dir``), with a
checkpoint that ``resume=True`` continues from, and renamed into place when complete; a lock
refuses a second process writing the same output. The checkpoint is written at most once per
``CHECKPOINT_SECONDS`` of zipping, when an interrupt (Ctrl-C) arrives between layers and after the
last layer: each one writes every block and the whole plan so far, which after every layer grew
quadratically with the layers and fsynced the weights each time. A zip killed outright so redoes at
most that much finished work; one killed before its first checkpoint starts again from its first layer.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mtz_mobile import __version__
from mtz_mobile.data import TaskData
from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import (disk_full_error, is_disk_full, output_lock, partial_dir, publish_dir,
                               write_json_atomic, write_npz_atomic)
from mtz_mobile.graph.keras_io import ParsedModel
from mtz_mobile.graph.model_files import source_name
from mtz_mobile.graph.network import BLOCK_DTYPE, ZippedNetwork
from mtz_mobile.progress import Progress

from .adaptive import adaptive_layer
from .calibration import Calibration
from .config import ZipConfig, shared_count
from .staleness import data_digest
from .plan import Plan, TaskRecord
from .step import LayerStep, pending_groups, retrain_tasks, zip_layer
from .validation import Validation


CHECKPOINT_SECONDS = 30.0


@dataclass
class ZipResult:
    plan: Plan
    network: ZippedNetwork


class Checkpoint:
    """The state after each finished step, in the partial output directory."""

    def __init__(self, partial: Path):
        self.state, self.arrays = partial / "checkpoint.json", partial / "checkpoint.npz"

    def exists(self) -> bool:
        return self.state.exists() and self.arrays.exists()

    def save(self, plan: Plan, net: ZippedNetwork, config: ZipConfig, done: int) -> None:
        write_npz_atomic(self.arrays, net.arrays(BLOCK_DTYPE))   # the blocks' own dtype: exact
        # the json names the arrays, so it goes last: a crash in between leaves the previous pair
        write_json_atomic(self.state, {"plan": plan.to_json(), "network": net.structure(),
                                       "config": config.to_json(), "steps_done": done})

    def load(self):
        state = json.loads(self.state.read_text())
        with np.load(self.arrays, allow_pickle=False) as z:
            net = ZippedNetwork.from_structure(state["network"], {k: z[k] for k in z.files})
        return Plan.from_json(state["plan"]), net, ZipConfig.from_json(state["config"]), state["steps_done"]

    def remove(self) -> None:
        self.state.unlink(missing_ok=True)
        self.arrays.unlink(missing_ok=True)


def zip_networks(models: dict[str, ParsedModel], data: dict[str, TaskData], config: ZipConfig,
                 out_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
                 progress: bool = True, on_layer_done: Callable[[int, ZippedNetwork], None] | None = None
                 ) -> ZipResult:
    """Zip two or more parsed models (keyed by task name). With ``out_dir`` the result is written
    there atomically, with a checkpoint after every step that ``resume=True`` continues from."""
    original = ZippedNetwork.from_models(_check_models(models))
    _check_inputs(original, models, data, config, out_dir)
    out = Path(out_dir) if out_dir is not None else None
    with output_lock(out) if out is not None else nullcontext():
        if out is not None and out.exists() and not overwrite:
            raise MTZError(f"{out} exists: pass --overwrite or choose another --out")
        plan = _new_plan(models, data, config)
        net, start = original.copy(), 0
        partial = partial_dir(out) if out is not None else None
        if resume and not (partial is not None and partial.is_dir() and not Checkpoint(partial).exists()):
            plan, net, start = _resume(partial, plan, config)
        elif partial is not None:
            if resume:   # stopped before its first checkpoint: nothing finished to keep
                shutil.rmtree(partial)
            start_partial(partial, models)
        try:
            net = _run_steps(original, net, plan, data, config, start, partial, progress, on_layer_done)
            plan.params = net.param_counts()
            plan.network = net.structure()
            if out is not None:
                write_npz_atomic(partial / "weights.npz", net.arrays())
                write_json_atomic(partial / "plan.json", plan.to_json())
                Checkpoint(partial).remove()
                publish_dir(partial, out, overwrite)
        except MTZError:
            if partial is not None and not resume:
                shutil.rmtree(partial, ignore_errors=True)
            raise
    return ZipResult(plan, net)


def _check_models(models: dict[str, ParsedModel]) -> dict[str, ParsedModel]:
    if len(models) < 2:
        raise MTZError(f"give at least two models to zip, got {len(models)}")
    return models


def _check_inputs(original: ZippedNetwork, models, data: dict[str, TaskData], config: ZipConfig, out_dir) -> None:
    """Every problem with the arguments, before any output exists."""
    tasks, hidden = original.tasks, original.zippable()
    config.validate(len(hidden), len(tasks))
    for t in tasks:
        if t not in data:
            raise MTZError(f"no data for task {t}: give --data for every model")
        if len(data[t].x_train) == 0:
            raise MTZError(f"no training data for task {t} ({data[t].spec}): the Hessians need calibration samples")
        if config.retrain.iterations > 0 or config.max_error_increase is not None:   # the labels are used
            _check_labels(t, data[t], original.nodes[original.output].groups[tasks.index(t)].size)
    if config.threshold is None:  # resolve every count up front
        for k, i in enumerate(hidden):
            widths = [original.nodes[i].groups[n].size for n in range(len(tasks))]
            for n in range(1, len(tasks)):
                shared_count(config.layer_value(k), sum(widths[:n]), widths[n], original.nodes[i].name)
    if out_dir is not None:
        for t in tasks:
            if not Path(models[t].path).is_file():
                raise MTZError(f"model of task {t} has no file ({models[t].path}): save it as .keras or .onnx and read "
                               "it with read_model, so the zip directory can keep its source")


def _check_labels(task: str, data: TaskData, outputs: int) -> None:
    """Labels the model cannot output would stop retraining deep inside TensorFlow."""
    top = int(np.max(data.y_train)) if len(data.y_train) else 0
    if top >= max(outputs, 2):   # one sigmoid output answers labels 0 and 1
        raise MTZError(f"task {task}'s labels go up to {top} but its model has {outputs} outputs: give labels "
                       f"0–{max(outputs, 2) - 1} or the model trained on this data ({data.spec})")


def _new_plan(models: dict[str, ParsedModel], data: dict[str, TaskData], config: ZipConfig) -> Plan:
    records = [TaskRecord(t, source_name(t, m.path), m.sha256, data[t].spec, list(m.input_shape), list(data[t].labels),
                          dict(data[t].preprocessing), m.nodes[-1].activation, data_digest(data[t]))
               for t, m in models.items()]
    return Plan(records, dict(config.to_json(), sparse_detected=_is_sparse(models, config.sparse)),
                tool_version=__version__)


def _resume(partial: Path | None, plan: Plan, config: ZipConfig) -> tuple[Plan, ZippedNetwork, int]:
    checkpoint = Checkpoint(partial) if partial is not None else None
    if checkpoint is None or not checkpoint.exists():
        raise MTZError(f"nothing to resume at {partial}: run without --resume")
    saved_plan, saved_net, saved_config, done = checkpoint.load()
    difference = _difference(saved_plan, saved_config, plan, config)
    if difference:
        raise MTZError(f"the partial zip at {partial} used {difference}: resume with the same arguments or delete it")
    return saved_plan, saved_net, done


def _difference(saved_plan: Plan, saved_config: ZipConfig, plan: Plan, config: ZipConfig) -> str:
    """What the interrupted zip had otherwise than this one: settings, task names, a task's model or data."""
    old, new = saved_config.to_json(), config.to_json()
    settings = [k for k in new if old.get(k) != new[k]]
    if settings:
        return f"other settings ({', '.join(settings)})"
    names = [t.name for t in saved_plan.tasks]
    if names != [t.name for t in plan.tasks]:
        return f"other tasks ({', '.join(names)})"
    for was, now in zip(saved_plan.tasks, plan.tasks):
        if was.sha256 != now.sha256:
            return f"another model of task {now.name}"
        if asdict(was) != json.loads(json.dumps(asdict(now))):   # the saved plan went through JSON
            return f"other data for task {now.name} ({was.data})"
    return ""


def start_partial(partial: Path, models: dict[str, ParsedModel]) -> None:
    """A new partial output directory holding the models under sources/."""
    if partial.exists():
        raise MTZError(f"a partial zip exists at {partial}: pass --resume to continue it or delete it")
    try:
        (partial / "sources").mkdir(parents=True)
        for t, m in models.items():
            _copy_source(Path(m.path), partial / "sources" / source_name(t, m.path))
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if is_disk_full(exc):
            raise disk_full_error(partial, exc) from exc
        raise


def _run_steps(original: ZippedNetwork, net: ZippedNetwork, plan: Plan, data: dict[str, TaskData],
               config: ZipConfig, start: int, partial: Path | None, progress: bool, on_layer_done) -> ZippedNetwork:
    tasks = original.tasks
    if config.max_error_increase is not None:   # the search validates on training data it does not train on
        data = {t: d.holdout(config.validation_split) for t, d in data.items()}
    calib = Calibration(net, data, config)
    validation = None
    if all(d.x_val is not None for d in data.values()):
        validation = Validation(original, data, config.confidence, calib.ops)
        if config.max_error_increase is not None:
            validation.check_budget(config.max_error_increase)
    net = _zip_layers(original, net, plan, calib, validation, data, config, start, partial, progress, on_layer_done)
    if config.retrain.schedule == "end":  # after a resume too: the checkpoint holds the net before it
        plan.final_retrain = retrain_tasks(net, original, calib, data, config, tasks, seed=config.seed * 1000,
                                           sparse=plan.settings["sparse_detected"], progress=progress,
                                           label="retrain (all layers zipped)")
    if validation is not None:
        plan.validation = validation.report(net)
    return net


def _zip_layers(original: ZippedNetwork, net: ZippedNetwork, plan: Plan, calib: Calibration,
                validation: Validation | None, data: dict[str, TaskData], config: ZipConfig, start: int,
                partial: Path | None, progress: bool, on_layer_done) -> ZippedNetwork:
    """Every step from ``start`` on: one zip_layer (or adaptive_layer) each, checkpointed by ``_Saver``."""
    tasks, hidden = original.tasks, original.zippable()
    steps = [(n, k, i) for n in range(1, len(tasks)) for k, i in enumerate(hidden)]
    done = start
    overall = Progress(len(steps), label="zip", enabled=progress)   # layer k of N, elapsed, time left
    overall.done = start
    saver = _Saver(partial, config, start)
    finished = True   # plan and net hold exactly ``done`` steps (a step changes net in place)
    try:
        while done < len(steps):
            finished = False
            n, k, i = steps[done]
            step = LayerStep(net, original, calib, i, k, tasks[:n], tasks[n], data, config,
                             plan.settings["sparse_detected"], progress)
            if config.max_error_increase is not None and not net.nodes[i].inherits \
                    and not pending_groups(net.nodes[i], tasks[n]):
                followers = [(steps[m][2], steps[m][1]) for m in _inheritors(net, steps, done)]
                records, net = adaptive_layer(step, validation, followers)
            else:
                records = [zip_layer(step)]
            plan.layers += records
            done += len(records)
            finished = True   # once the layer and the layers it decided are all in the network
            last_n, last_k, last_i = steps[done - 1]   # an adaptive step decides the layers after it too
            overall.advance(done, f"task {tasks[last_n]}: layer {last_k + 1} of {len(hidden)} "
                                  f"({original.nodes[last_i].name}) zipped")
            saver.save(plan, net, done)
            if on_layer_done is not None:
                for m in range(done - len(records), done):
                    on_layer_done(m, net)
    except KeyboardInterrupt:
        if finished:
            saver.save(plan, net, done, now=True)
        raise
    saver.save(plan, net, done, now=True)   # the retraining that may follow changes net in place
    return net


class _Saver:
    """Writes the checkpoint at most once per CHECKPOINT_SECONDS, or now (see the module docstring)."""

    def __init__(self, partial: Path | None, config: ZipConfig, done: int):
        self.checkpoint = Checkpoint(partial) if partial is not None else None
        self.config, self.saved, self.at = config, done, time.monotonic()

    def save(self, plan: Plan, net: ZippedNetwork, done: int, now: bool = False) -> None:
        if self.checkpoint is None or done == self.saved:
            return
        if now or time.monotonic() - self.at >= CHECKPOINT_SECONDS:
            self.checkpoint.save(plan, net, self.config, done)
            self.saved, self.at = done, time.monotonic()


def _inheritors(net: ZippedNetwork, steps: list[tuple[int, int, int]], done: int) -> list[int]:
    """The steps right after ``done`` (same newcomer) whose nodes have no pairing of their own."""
    out = []
    for m in range(done + 1, len(steps)):
        if steps[m][0] != steps[done][0] or not net.nodes[steps[m][2]].inherits:
            break
        out.append(m)
    return out


def _is_sparse(models: dict[str, ParsedModel], setting: str) -> bool:
    if setting != "auto":
        return setting == "on"
    total = zeros = 0
    for m in models.values():
        for n in m.nodes:
            if n.kernel is not None:
                total += n.kernel.size
                zeros += int(np.count_nonzero(n.kernel == 0))
    return total > 0 and zeros / total >= 0.25


def _copy_source(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # no second copy of a large model when the file system allows
    except OSError:
        shutil.copyfile(src, dst)
