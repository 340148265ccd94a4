"""Algorithm 1 of Multi-Task Zipping: zip two networks layer by layer.

For l = 1 … L−1: forward each task's calibration data through the partially zipped network,
build the Hessians over the inputs both tasks share (plus the bias), measure every pair's
functional difference, choose the pairs, merge their incoming weights, reorder the next
layer's rows, optionally compensate the next layer and retrain lightly. Output layers stay
task-specific.

``compensation="next-layer"`` is our addition to the paper (off in ``method="mtz"`` presets
that reproduce it): after layer l is zipped, each task's layer l+1 is refitted by ridge
regression so that its pre-activations on the calibration data match the *original* model's.
That layer still belongs to one task, so the fit costs no sharing; it absorbs the merge's error
(including the scale of each shared unit's output) in closed form, before any retraining.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__
from .data import TaskData
from .errors import MTZError
from .keras_io import DenseChain
from .mtz_math import PairGeometry, layer_hessian, random_merge
from .network import ZippedNetwork, share_units
from .pairing import PAIRINGS, random_pairs, select_pairs, total_cost
from .plan import LayerRecord, Plan, TaskRecord, publish_dir, write_json_atomic, write_npz_atomic
from .retrain import STRATEGIES, RetrainSettings, retrain

METHODS = ("mtz", "random")
COMPENSATIONS = ("none", "next-layer")


@dataclass
class ZipConfig:
    """How much to share and how. ``shared`` has one entry per hidden layer (or one for all):
    ``"all"``, a count of units (int) or a fraction of the narrower layer (float in [0, 1]).
    ``threshold`` (one ε per hidden layer) replaces ``shared`` when given."""

    shared: list = field(default_factory=lambda: ["all"])
    threshold: list[float] | None = None
    alpha: float = 0.5
    damping: float = 1e-4
    method: str = "mtz"
    pairing: str = "exact"
    compensation: str = "next-layer"
    compensation_ridge: float = 1e-3
    calibration_samples: int = 10000
    retrain: RetrainSettings = field(default_factory=RetrainSettings)
    seed: int = 0

    def to_json(self) -> dict:
        out = asdict(self)
        out["retrain"] = asdict(self.retrain)
        return out

    @classmethod
    def from_json(cls, obj: dict) -> "ZipConfig":
        obj = dict(obj)
        obj["retrain"] = RetrainSettings(**obj["retrain"])
        return cls(**obj)

    def validate(self, n_hidden: int) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise MTZError(f"alpha must lie strictly between 0 and 1, got {self.alpha}: it weights task A against B")
        if self.method not in METHODS:
            raise MTZError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)}")
        if self.pairing not in PAIRINGS:
            raise MTZError(f"unknown pairing {self.pairing!r}: use one of {', '.join(PAIRINGS)}")
        if self.compensation not in COMPENSATIONS:
            raise MTZError(f"unknown compensation {self.compensation!r}: use one of {', '.join(COMPENSATIONS)}")
        if self.retrain.strategy not in STRATEGIES:
            raise MTZError(f"unknown strategy {self.retrain.strategy!r}: use one of {', '.join(STRATEGIES)}")
        if self.damping < 0:
            raise MTZError(f"damping must be non-negative, got {self.damping}")
        if self.calibration_samples <= 0:
            raise MTZError("calibration_samples must be positive: the Hessians need data")
        if self.retrain.iterations < 0 or self.retrain.batch_size <= 0:
            raise MTZError("retraining iterations must be >= 0 and the batch size > 0")
        per_layer = self.threshold if self.threshold is not None else self.shared
        if len(per_layer) not in (1, n_hidden):
            raise MTZError(f"give one sharing value for all hidden layers or one for each of the {n_hidden}, "
                           f"got {len(per_layer)}")
        if self.threshold is not None and self.method == "random":
            raise MTZError("random sharing needs a count, not a threshold: use --shared")

    def layer_value(self, l: int):
        per_layer = self.threshold if self.threshold is not None else self.shared
        return per_layer[0] if len(per_layer) == 1 else per_layer[l]


def shared_count(value, n_a: int, n_b: int, layer_name: str) -> int:
    """Resolve "all" / a count / a fraction into a number of shared units."""
    top = min(n_a, n_b)
    if value == "all" or value is None:
        return top
    if isinstance(value, bool):
        raise MTZError(f"sharing value {value!r} for {layer_name} is not a count or a fraction")
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise MTZError(f"fraction {value} for {layer_name} is outside [0, 1]: give a fraction or a count")
        return int(round(value * top))
    count = int(value)
    if count < 0 or count > top:
        raise MTZError(f"cannot share {count} units in {layer_name}: it has {n_a} units in A and {n_b} in B, "
                       f"so at most {top}")
    return count


@dataclass
class ZipResult:
    plan: Plan
    network: ZippedNetwork
    original: ZippedNetwork


def check_zippable(chains: dict[str, DenseChain]) -> None:
    """Refuse models the dense zipper cannot pair, with the reason and the fix."""
    names = list(chains)
    if len(names) != 2:
        raise MTZError(f"give exactly two models to zip, got {len(names)}")
    a, b = (chains[n] for n in names)
    if len(a.layers) != len(b.layers):
        raise MTZError(f"{a.path} has {len(a.layers)} Dense layers and {b.path} has {len(b.layers)}: "
                       "MTZ zips networks of the same depth")
    if a.layers[0][0].shape[0] != b.layers[0][0].shape[0]:
        raise MTZError(f"inputs differ ({a.input_shape} vs {b.input_shape}): the dense zipper needs one input domain")
    for l in range(len(a.layers) - 1):
        if a.layers[l][2] != b.layers[l][2]:
            raise MTZError(f"hidden layer {l + 1} uses {a.layers[l][2]} in {a.path} and {b.layers[l][2]} in "
                           f"{b.path}: shared units need one activation")


def _calibration(data: TaskData, n: int, seed: int) -> np.ndarray:
    if len(data.x_train) == 0:
        raise MTZError(f"no training data for {data.spec}: the Hessians need calibration samples")
    order = np.random.default_rng(seed).permutation(len(data.x_train))[:n]
    return data.x_train[np.sort(order)]


def _shared_rows(net: ZippedNetwork, l: int, a: str, b: str) -> list[int]:
    return [g for g, grp in enumerate(net.input_groups_of_layer(l)) if a in grp.owners and b in grp.owners]


def _incoming(net: ZippedNetwork, l: int, task: str, rows: list[int]) -> np.ndarray:
    """Task's incoming weights over the shared input groups, bias as the last row (one column per unit)."""
    layer = net.layers[l]
    g = [i for i, grp in enumerate(layer.groups) if grp.owners == (task,)][0]
    blocks = [layer.kernels[(gi, g)].reshape(-1, layer.groups[g].size) for gi in rows]
    return np.vstack(blocks + [layer.biases[g][None, :]])


def _shared_inputs(net: ZippedNetwork, l: int, task: str, x: np.ndarray, rows: list[int]) -> np.ndarray:
    acts = net.forward(task, x, upto=l - 1)[-1]
    return np.concatenate([acts[g] for g in rows], axis=1) if rows else np.zeros((len(x), 0), np.float32)


def compensate_next_layer(net: ZippedNetwork, original: ZippedNetwork, l: int, task: str, x: np.ndarray,
                          ridge: float) -> None:
    """Refit task's layer l+1 so its pre-activations match the original model's on ``x``."""
    nxt = net.layers[l + 1]
    out_groups = nxt.groups_of(task)
    if len(out_groups) != 1 or nxt.groups[out_groups[0]].owners != (task,):
        return  # already zipped: its weights are not the task's alone
    go = out_groups[0]
    z = net.task_view(l, net.forward(task, x, upto=l)[-1], task).astype(np.float64)
    target = original.task_view(l + 1, original.forward(task, x, upto=l + 1, preactivation=True)[-1], task)
    target = target[:, net.original_unit_order(l + 1, task)].astype(np.float64)
    z1 = np.hstack([z, np.ones((len(z), 1))])
    gram = z1.T @ z1 / len(z1)
    lam = ridge * float(np.mean(np.diag(gram)))
    gram[np.diag_indices_from(gram)] += lam
    # the ridge pulls towards the current weights, not towards zero
    current = np.vstack([nxt.kernels[(gi, go)] for gi in net.layers[l].groups_of(task)] + [nxt.biases[go][None]])
    sol = np.linalg.solve(gram, z1.T @ target / len(z1) + lam * current)
    start = 0
    for gi in net.layers[l].groups_of(task):
        size = net.layers[l].groups[gi].size
        nxt.kernels[(gi, go)] = sol[start:start + size]
        start += size
    nxt.biases[go] = sol[-1]


class Checkpoint:
    """The state after each finished layer, in the partial output directory."""

    def __init__(self, partial: Path):
        self.partial = partial
        self.state, self.arrays = partial / "checkpoint.json", partial / "checkpoint.npz"

    def exists(self) -> bool:
        return self.state.exists() and self.arrays.exists()

    def save(self, plan: Plan, net: ZippedNetwork, config: ZipConfig, done: int) -> None:
        write_npz_atomic(self.arrays, net.arrays(np.float64))
        # the json names the arrays, so it goes last: a crash in between leaves the previous pair
        write_json_atomic(self.state, {"plan": plan.to_json(), "network": net.structure(),
                                       "config": config.to_json(), "layers_done": done})

    def load(self):
        import json

        state = json.loads(self.state.read_text())
        with np.load(self.arrays, allow_pickle=False) as z:
            net = ZippedNetwork.from_structure(state["network"], {k: z[k] for k in z.files})
        return Plan.from_json(state["plan"]), net, ZipConfig.from_json(state["config"]), state["layers_done"]

    def remove(self) -> None:
        self.state.unlink(missing_ok=True)
        self.arrays.unlink(missing_ok=True)


def zip_networks(chains: dict[str, DenseChain], data: dict[str, TaskData], config: ZipConfig,
                 out_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
                 progress: bool = True, on_layer_done: Callable[[int, ZippedNetwork], None] | None = None
                 ) -> ZipResult:
    """Zip two dense chains (keyed by task name). With ``out_dir`` the result is written there
    atomically, with a checkpoint after every layer that ``resume=True`` continues from."""
    check_zippable(chains)
    a, b = list(chains)
    depth = len(chains[a].layers)
    config.validate(depth - 1)
    original = ZippedNetwork.from_dense_chains({t: c.layers for t, c in chains.items()}, chains[a].input_shape)
    for l in range(depth - 1):  # resolve every count up front: bad input fails before any output
        value = config.layer_value(l)
        if config.threshold is None:
            shared_count(value, chains[a].layers[l][0].shape[1], chains[b].layers[l][0].shape[1], f"hidden{l + 1}")
    for t in (a, b):
        if t not in data:
            raise MTZError(f"no data for task {t}: give --data for every model")
        if len(data[t].x_train) == 0:
            raise MTZError(f"no training data for task {t} ({data[t].spec}): the Hessians need calibration samples")

    out = Path(out_dir) if out_dir is not None else None
    partial = out.with_name(out.name + ".partial") if out is not None else None
    if out is not None and out.exists() and not overwrite:
        raise MTZError(f"{out} exists: pass --overwrite or choose another --out")
    checkpoint = Checkpoint(partial) if partial is not None else None

    tasks = [TaskRecord(t, f"{t}.keras", chains[t].sha256, data[t].spec, list(chains[t].input_shape),
                        list(data[t].labels), dict(data[t].preprocessing), chains[t].layers[-1][2])
             for t in (a, b)]
    plan = Plan(tasks, config.to_json(), tool_version=__version__)
    net = original.copy()
    start_layer = 0
    if resume:
        if checkpoint is None or not checkpoint.exists():
            raise MTZError(f"nothing to resume at {partial}: run without --resume")
        saved_plan, saved_net, saved_config, done = checkpoint.load()
        if saved_config.to_json() != config.to_json() or [t.sha256 for t in saved_plan.tasks] != [t.sha256 for t in tasks]:
            raise MTZError(f"the partial zip at {partial} used other models or settings: "
                           "resume with the same arguments or delete it")
        plan, net, start_layer = saved_plan, saved_net, done
    elif partial is not None:
        if partial.exists():
            raise MTZError(f"a partial zip exists at {partial}: pass --resume to continue it or delete it")
        (partial / "sources").mkdir(parents=True)
        for t in (a, b):
            _copy_source(Path(chains[t].path), partial / "sources" / f"{t}.keras")

    try:
        calib = {t: _calibration(data[t], config.calibration_samples, config.seed + n) for n, t in enumerate((a, b))}
        for l in range(start_layer, depth - 1):
            record = zip_layer(net, original, l, a, b, calib, data, config, progress)
            plan.layers.append(record)
            if checkpoint is not None:
                checkpoint.save(plan, net, config, l + 1)
            if on_layer_done is not None:
                on_layer_done(l, net)
    except MTZError:
        if partial is not None and not resume:
            shutil.rmtree(partial, ignore_errors=True)
        raise

    plan.params = net.param_counts()
    plan.network = net.structure()
    if out is not None:
        write_npz_atomic(partial / "weights.npz", net.arrays())
        write_json_atomic(partial / "plan.json", plan.to_json())
        checkpoint.remove()
        publish_dir(partial, out, overwrite)
    return ZipResult(plan, net, original)


def _copy_source(src: Path, dst: Path) -> None:
    try:
        import os

        os.link(src, dst)  # no second copy of a large model when the file system allows
    except OSError:
        shutil.copyfile(src, dst)


def zip_layer(net: ZippedNetwork, original: ZippedNetwork, l: int, a: str, b: str,
              calib: dict[str, np.ndarray], data: dict[str, TaskData], config: ZipConfig,
              progress: bool) -> LayerRecord:
    """One iteration of Algorithm 1 on layer ``l`` (0-based), in place."""
    t0 = time.perf_counter()
    layer = net.layers[l]
    rng = np.random.default_rng([config.seed, l])
    rows = _shared_rows(net, l, a, b)
    w_a, w_b = _incoming(net, l, a, rows), _incoming(net, l, b, rows)
    n_a, n_b = w_a.shape[1], w_b.shape[1]
    value = config.layer_value(l)

    if config.method == "random":
        count = shared_count(value, n_a, n_b, layer.name)
        pairs = random_pairs(n_a, n_b, count, rng)
        merged = random_merge(w_a[:, [i for i, _ in pairs]], w_b[:, [j for _, j in pairs]], rng)
        d = np.full((n_a, n_b), np.nan)
        lam = 0.0
    else:
        h_a = layer_hessian(_shared_inputs(net, l, a, calib[a], rows), config.alpha)
        h_b = layer_hessian(_shared_inputs(net, l, b, calib[b], rows), 1.0 - config.alpha)
        geometry = PairGeometry.from_hessians(h_a, h_b, config.damping)
        comparison = geometry.compare(w_a, w_b)
        d = comparison.d
        if config.threshold is not None:
            pairs = select_pairs(d, threshold=float(value), method=config.pairing)
        else:
            pairs = select_pairs(d, count=shared_count(value, n_a, n_b, layer.name), method=config.pairing)
        merged = comparison.merged(pairs)
        lam = geometry.damping

    units_a = layer.groups[[g for g, grp in enumerate(layer.groups) if grp.owners == (a,)][0]].units[a]
    units_b = layer.groups[[g for g, grp in enumerate(layer.groups) if grp.owners == (b,)][0]].units[b]
    pair_records = [[int(units_a[i]), int(units_b[j]), float(d[i, j]) if config.method == "mtz" else None]
                    for i, j in pairs]
    share_units(net, l, a, b, pairs, merged)

    if config.compensation == "next-layer":
        for t in (a, b):
            compensate_next_layer(net, original, l, t, calib[t], config.compensation_ridge)

    stats = {"iterations": 0}
    if config.retrain.iterations > 0:
        train = {t: (data[t].x_train, data[t].y_train) for t in (a, b)}
        weights = {a: config.alpha, b: 1.0 - config.alpha}
        soft = None
        if config.retrain.distill > 0:
            soft = {t: original.task_view(len(original.layers) - 1,
                                          original.forward(t, data[t].x_train, preactivation=True)[-1], t)
                    for t in (a, b)}
        stats = retrain(net, train, weights, config.retrain, seed=config.seed * 1000 + l,
                        soft_targets=soft, progress=progress, label=f"retrain {layer.name}")
    shared_params = sum(arr.size for ll, _, owners, arr in net.block_owner_sets() if ll == l and len(owners) > 1)
    return LayerRecord(index=l + 1, name=layer.name, kind=layer.kind, n_a=n_a, n_b=n_b, n_shared=len(pairs),
                       alpha=config.alpha, damping=lam, method=config.method, pairing=config.pairing,
                       compensation=config.compensation, pairs=pair_records,
                       total_d=total_cost(d, pairs) if config.method == "mtz" else None,
                       retrain=stats, seconds=time.perf_counter() - t0, shared_params=int(shared_params))
