"""The two practitioner baselines as plain functions, each writing an ordinary zip directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from mtz_mobile import __version__
from mtz_mobile.data import TaskData
from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import output_lock, partial_dir, publish_dir, write_json_atomic, write_npz_atomic
from mtz_mobile.graph.keras_io import ParsedModel
from mtz_mobile.graph.model_files import source_name
from mtz_mobile.graph.network import ZippedNetwork
from mtz_mobile.zipper.config import ZipConfig
from mtz_mobile.zipper.staleness import data_digest
from mtz_mobile.zipper.plan import Plan, TaskRecord
from mtz_mobile.zipper.run import ZipResult, start_partial
from mtz_mobile.zipper.validation import Validation

from .train import train_blocks
from .trunk import check_head, share_trunk, share_whole_trunk, trunk_nodes


def frozen_trunk(models: dict[str, ParsedModel], data: dict[str, TaskData], config: ZipConfig,
                 layers: int | None = None, out_dir=None, progress: bool = False) -> ZipResult:
    """Task A's (the first model's) first ``layers`` hidden layers for both tasks (None: all of
    them, on any graph whose head is its last Dense layer; fewer: chain networks only); task B's
    layers after them retrained on A's features with ``config.retrain`` (A's blocks never change)."""
    a, b = _two(models)
    net = ZippedNetwork.from_models(models)
    _share(net, layers, models[a])
    layers = len(net.zippable()) if layers is None else layers
    own = f"/{b}"   # saved names end with the owners: B's own blocks end with "/b"
    return _finish(models, data, config, net, [b], lambda key: key.endswith(own),
                   {"baseline": "frozen-trunk", "trunk_layers": layers, "trunk_from": a}, out_dir, progress)


def multitask_finetune(models: dict[str, ParsedModel], data: dict[str, TaskData], config: ZipConfig,
                       trunk: ParsedModel | None = None, out_dir=None, progress: bool = False) -> ZipResult:
    """Every hidden layer shared, initialised from ``trunk`` (a model of the same graph, e.g. the
    pretrained backbone both tasks were fine-tuned from; default: task A's model), each task's own
    output layer, all trained jointly on both tasks (loss weights α, 1 − α) with ``config.retrain``."""
    a, _ = _two(models)
    net = ZippedNetwork.from_models(models)
    _share(net, None, trunk if trunk is not None else models[a])
    source = a if trunk is None else Path(trunk.path).name
    return _finish(models, data, config, net, list(models), lambda key: True,
                   {"baseline": "multitask-finetune", "trunk_from": source}, out_dir, progress)


def _share(net: ZippedNetwork, layers: int | None, source: ParsedModel) -> None:
    """The trunk: every hidden layer (any graph), or the first ``layers`` of a chain network."""
    check_head(net)
    if layers is None or layers == len(net.zippable()):
        share_whole_trunk(net, source)
    else:
        share_trunk(net, trunk_nodes(net, layers), source)


def _two(models: dict) -> tuple[str, str]:
    if len(models) != 2:
        raise MTZError(f"the baselines take two models (task A's trunk, task B), got {len(models)}")
    return tuple(models)


def _finish(models, data: dict[str, TaskData], config: ZipConfig, net: ZippedNetwork, tasks: list[str], trainable,
            record: dict, out_dir, progress: bool) -> ZipResult:
    """Train on the training split less the hold-out, certify on the hold-out as a zip does, write."""
    config.validate(len(net.zippable()), len(net.tasks))
    held = {t: d.holdout(config.validation_split) for t, d in data.items()}
    original = ZippedNetwork.from_models(models)
    soft = None
    if config.retrain.distill > 0:
        soft = {t: original.predict(t, held[t].x_train, preactivation=True) for t in tasks}
    weights = config.weights(net.tasks)
    record["retrain"] = train_blocks(net, {t: (held[t].x_train, held[t].y_train) for t in tasks},
                                     {t: weights[t] for t in tasks}, config.retrain, config.seed * 1000, trainable,
                                     soft, progress)
    plan = Plan([TaskRecord(t, source_name(t, m.path), m.sha256, held[t].spec, list(m.input_shape),
                            list(held[t].labels), dict(held[t].preprocessing), m.nodes[-1].activation,
                            data_digest(data[t])) for t, m in models.items()],
                dict(config.to_json(), sparse_detected=False), tool_version=__version__)
    plan.final_retrain = record
    plan.params, plan.network = net.param_counts(), net.structure()
    plan.validation = Validation(original, held, config.confidence).report(net)
    if out_dir is not None:
        _write(Path(out_dir), models, plan, net)
    return ZipResult(plan, net)


def _write(out: Path, models, plan: Plan, net: ZippedNetwork) -> None:
    with output_lock(out):
        if out.exists():
            raise MTZError(f"{out} exists: choose another output directory or delete it")
        partial = partial_dir(out)
        shutil.rmtree(partial, ignore_errors=True)   # a baseline has no checkpoint to resume
        start_partial(partial, models)
        write_npz_atomic(partial / "weights.npz", net.arrays())
        write_json_atomic(partial / "plan.json", plan.to_json())
        publish_dir(partial, out, False)
