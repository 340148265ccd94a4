"""Algorithm 1 of Multi-Task Zipping, on any graph the keras_io reader accepts.

Tasks are zipped in sequence: the second model into the first, then the third into the joint
network, and so on (DESIGN.md §7). For each newcomer c and each hidden weight node l in
topological order: forward every task's calibration data through the partially zipped network,
build the Hessians over the inputs shared with c (plus the bias), measure every pair's
functional difference between c's units and the joint network's units, choose the pairs,
regroup, merge their incoming weights, optionally compensate the next layer and retrain
lightly. Output layers stay task-specific. With two tasks this is the paper's algorithm.

``compensation="next-layer"`` is our addition to the paper: after a node is zipped, each
task's own consumer layers are refitted by ridge regression so that their pre-activations on
the calibration data match the *original* model's. Those layers belong to one task, so the fit
costs no sharing; it absorbs the merge's error (including the scale of each shared unit's
output) in closed form, before any retraining.

Residual streams: every node that writes into one identity stream keeps one channel order, so
the stream's pairing is decided by its first member and reused by the others (merged with
each one's own Hessians when the zipper reaches it).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mtz_mobile import __version__
from mtz_mobile.data import TaskData, error_rate
from mtz_mobile.errors import MTZError
from mtz_mobile.graph.keras_io import ParsedModel
from .mtz_math import HessianAccumulator, PairGeometry, random_merge
from mtz_mobile.graph.network import ZippedNetwork
from .pairing import random_pairs, select_pairs
from mtz_mobile.fileio import write_json_atomic, write_npz_atomic
from .plan import LayerRecord, Plan, TaskRecord, publish_dir
from .config import ZipConfig, shared_count
from .retrain import retrain
from .surgery import NewGroup, merge, regroup

@dataclass
class ZipResult:
    plan: Plan
    network: ZippedNetwork


# ----- calibration --------------------------------------------------------------------------

class Calibration:
    """Each task's calibration images and the forward passes the Hessians need."""

    def __init__(self, net: ZippedNetwork, data: dict[str, TaskData], config: ZipConfig):
        from mtz_mobile.graph.ops import TFOps

        self.ops = TFOps()
        self.config = config
        self._soft: dict = {}
        self.x = {}
        for n, t in enumerate(net.tasks):
            order = np.random.default_rng(config.seed + n).permutation(len(data[t].x_train))
            self.x[t] = data[t].x_train[np.sort(order[:config.calibration_samples])]

    def soft_targets(self, original: ZippedNetwork, task: str, x: np.ndarray) -> np.ndarray:
        """The original model's logits on the task's training data (computed once per zip)."""
        key = (task, id(x))
        if key not in self._soft:
            self._soft[key] = original.predict(task, x, preactivation=True, ops=self.ops)
        return self._soft[key]

    def node_values(self, net: ZippedNetwork, task: str, node: int, batch: int = 1000):
        """Yield the group values of ``node`` for the task's calibration data, batch by batch."""
        x = self.x[task]
        for s in range(0, len(x), batch):
            values = net.forward(task, x[s:s + batch], ops=self.ops, upto=node)
            yield {g: np.asarray(v) for g, v in values[node].items()}


def _input_rows(net: ZippedNetwork, i: int, groups: list[int]):
    """How to build the Hessian's input vector for node i from a list of its input groups."""
    node = net.nodes[i]
    ins = net.input_groups(i)
    if node.op == "conv2d":
        return [ins[g].size for g in groups]
    return [net.row_factor(i) * ins[g].size for g in groups]


def _row_selection(net: ZippedNetwork, i: int, have: list[int], want: list[int]) -> np.ndarray:
    """Indices (in the Hessian over input groups ``have``, bias last) of the rows of groups ``want``."""
    node = net.nodes[i]
    sizes = _input_rows(net, i, have)
    starts = dict(zip(have, np.cumsum([0] + sizes[:-1])))
    width = sum(sizes)
    if node.op == "conv2d":
        kh, kw = node.attrs["kernel_size"]
        picks = [p * width + starts[g] + np.arange(sizes[have.index(g)]) for p in range(kh * kw) for g in want]
        total = kh * kw * width
    else:
        picks = [starts[g] + np.arange(sizes[have.index(g)]) for g in want]
        total = width
    return np.concatenate(picks + [np.array([total])]).astype(np.int64)


def task_hessian(net: ZippedNetwork, calib: Calibration, i: int, task: str, groups: list[int],
                 rng: np.random.Generator) -> np.ndarray:
    """Σ x̃ x̃ᵀ / n over the task's inputs of node i in ``groups`` (weight 1; the caller weights)."""
    node = net.nodes[i]
    src = node.inputs[0]
    dim = sum(_input_rows(net, i, groups)) * (int(np.prod(node.attrs["kernel_size"])) if node.op == "conv2d" else 1)
    acc = HessianAccumulator(dim)
    total_instances = len(calib.x[task]) * (int(np.prod(node.shape[:2])) if node.op == "conv2d" else 1)
    keep = min(1.0, calib.config.max_instances / max(total_instances, 1))
    for values in calib.node_values(net, task, src):
        if not groups:  # nothing shared feeds this layer yet: the bias unit alone
            n = len(next(iter(values.values())))
            x = np.zeros((n * (int(np.prod(node.shape[:2])) if node.op == "conv2d" else 1), 0), np.float32)
        elif node.op == "conv2d":
            x = np.concatenate([values[g] for g in groups], axis=-1)
            x = np.asarray(calib.ops.patches(x, node.attrs)).reshape(-1, dim)
        else:
            x = np.concatenate([values[g].reshape(len(values[g]), -1) for g in groups], axis=-1)
        if keep < 1.0:
            x = x[rng.random(len(x)) < keep]
        acc.update(x)
    return acc.hessian(1.0)


def _blocks_over(net: ZippedNetwork, i: int, go: int, owners, inputs: list[int]) -> np.ndarray:
    """The incoming weights of group go owned by ``owners`` over input groups ``inputs``, bias last."""
    node = net.nodes[i]
    n_out = node.groups[go].size
    parts = []
    for gi in inputs:
        key = (gi, go, tuple(owners))
        if key not in node.kernels:
            raise MTZError(f"internal: {node.name} has no block {key}")
        k = node.kernels[key]
        parts.append(k)
    if node.op == "conv2d":
        w = np.concatenate(parts, axis=2).reshape(-1, n_out) if parts else np.zeros((0, n_out))
    else:
        w = np.concatenate(parts, axis=0) if parts else np.zeros((0, n_out))
    return np.vstack([w, node.biases[(go, tuple(owners))][None, :]])


# ----- one zip step ---------------------------------------------------------------------------

@dataclass
class _Side:
    group: int
    owners: tuple
    inputs: list[int]
    geometry: PairGeometry | None
    w_joint: np.ndarray
    w_new: np.ndarray


class _LayerHessians:
    """Each task's Hessian over node i's inputs shared with newcomer c, computed once per step;
    sliced to the inputs a group of owners shares (rows of the other groups dropped)."""

    def __init__(self, net, calib, i, existing, c, weights, damping, rng):
        self.net, self.calib, self.i, self.c, self.weights, self.damping, self.rng = \
            net, calib, i, c, weights, damping, rng
        ins = net.input_groups(i)
        self.ins = ins
        self.shared_with_c = [gi for gi, grp in enumerate(ins) if c in grp.owners and set(grp.owners) & set(existing)]
        self.full: dict[str, tuple[list[int], np.ndarray]] = {}
        self._geometries: dict[tuple, PairGeometry] = {}

    def inputs_shared_by(self, owners) -> list[int]:
        return [gi for gi in self.shared_with_c if set(owners) | {self.c} <= set(self.ins[gi].owners)]

    def task(self, t: str, inputs: list[int]) -> np.ndarray:
        if t not in self.full:
            have = [gi for gi in self.shared_with_c if t in self.ins[gi].owners]
            self.full[t] = (have, task_hessian(self.net, self.calib, self.i, t, have, self.rng))
        have, full = self.full[t]
        sel = _row_selection(self.net, self.i, have, inputs)
        return full[np.ix_(sel, sel)]

    def geometry(self, joint_owners, inputs: list[int]) -> PairGeometry:
        """H_J = Σ_{t ∈ joint owners} w_t H_t (the units' present owners) against H_c = w_c H_c."""
        key = (tuple(joint_owners), tuple(inputs))
        if key not in self._geometries:
            h_joint = sum(self.weights[t] * self.task(t, inputs) for t in joint_owners)
            self._geometries[key] = PairGeometry.from_hessians(
                h_joint, self.weights[self.c] * self.task(self.c, inputs), self.damping)
        return self._geometries[key]


def _sides(net, hessians: _LayerHessians, i, c, config, groups_j, g_c) -> list[_Side]:
    node = net.nodes[i]
    sides = []
    for g in groups_j:
        owners = node.groups[g].owners
        inputs = hessians.inputs_shared_by(owners)
        w_joint = _blocks_over(net, i, g, owners, inputs)
        w_new = _blocks_over(net, i, g_c[0], g_c[1], inputs)
        geometry = hessians.geometry(owners, inputs) if config.method == "mtz" else None
        sides.append(_Side(g, owners, inputs, geometry, w_joint, w_new))
    return sides


def _new_groups(node, groups_j, g_c_index, c, pairs_by_group) -> tuple[list[NewGroup], list[int]]:
    """[paired part, rest] for every joint group, the newcomer's rest, other groups unchanged."""
    new, merged_targets = [], []
    paired_c = set()
    for pairs in pairs_by_group.values():
        paired_c.update(j for _, j in pairs)
    for g, grp in enumerate(node.groups):
        if g in groups_j:
            pairs = pairs_by_group.get(g, [])
            pos_j = np.array([p for p, _ in pairs], np.int64)
            pos_c = np.array([q for _, q in pairs], np.int64)
            if len(pairs):
                sources = {t: (g, pos_j) for t in grp.owners}
                sources[c] = (g_c_index, pos_c)
                merged_targets.append(len(new))
                new.append(NewGroup(tuple(grp.owners) + (c,), sources))
            rest = np.setdiff1d(np.arange(grp.size), pos_j)
            if len(rest):
                new.append(NewGroup(grp.owners, {t: (g, rest) for t in grp.owners}))
        elif g == g_c_index:
            rest = np.setdiff1d(np.arange(grp.size), np.array(sorted(paired_c), np.int64))
            if len(rest):
                new.append(NewGroup((c,), {c: (g, rest)}))
        else:
            new.append(NewGroup(grp.owners, {t: (g, np.arange(grp.size)) for t in grp.owners}))
    return new, merged_targets


def _sparse_mask(w_joint: np.ndarray, w_new: np.ndarray, policy: str = "larger") -> np.ndarray:
    """Per merged unit, the connections it keeps: the mask of the two with more connections (the
    paper's §3.6, "larger") or both masks ("union"; still at most nnz(A) + nnz(B))."""
    m_j, m_c = w_joint[:-1] != 0, w_new[:-1] != 0
    if policy == "union":
        return (m_j | m_c).astype(np.float64)
    take_joint = m_j.sum(axis=0) >= m_c.sum(axis=0)
    return np.where(take_joint[None, :], m_j, m_c).astype(np.float64)


def _pending_groups(node, c: str) -> list[int]:
    """Groups of node whose pairs with newcomer c were chosen already (by the first layer of its
    residual stream) and still wait for c's weights to be merged."""
    return [g for g, grp in enumerate(node.groups)
            if c in grp.owners and len(grp.owners) > 1 and (g, (c,)) in node.biases]


def zip_node(net: ZippedNetwork, original: ZippedNetwork, calib: Calibration, i: int, k: int, existing: list[str],
             c: str, data: dict[str, TaskData], config: ZipConfig, sparse: bool, progress: bool,
             count: int | None = None, hessians: "_LayerHessians | None" = None) -> LayerRecord:
    """Zip newcomer c's units of weight node i into the joint network's (k: hidden layer number;
    ``count`` overrides the configured number of shared units; ``hessians``: this step's, when
    several trials of the step share them)."""
    t0 = time.perf_counter()
    node = net.nodes[i]
    weights = config.weights(net.tasks)
    rng = np.random.default_rng([config.seed, i, net.tasks.index(c)])
    g_c = [(g, grp.owners) for g, grp in enumerate(node.groups) if grp.owners == (c,)]
    pending = _pending_groups(node, c)
    if hessians is None:
        hessians = _LayerHessians(net, calib, i, existing, c, weights, config.damping, rng)
    lam = None  # the absolute damping added to S, for the record
    if pending:
        pairs = _merge_pending(net, hessians, i, c, config, rng, pending, sparse)
    else:
        if not g_c:
            raise MTZError(f"internal: {node.name} has no unzipped group of task {c}")
        groups_j = [g for g, grp in enumerate(node.groups) if set(grp.owners) <= set(existing)]
        sides = _sides(net, hessians, i, c, config, groups_j, g_c[0])
        lam = max((s.geometry.damping for s in sides if s.geometry is not None), default=None)
        n_joint = sum(node.groups[s.group].size for s in sides)
        n_new = node.groups[g_c[0][0]].size
        offsets = np.cumsum([0] + [node.groups[s.group].size for s in sides])
        value = config.layer_value(k) if count is None else count
        if config.method == "random":
            flat = random_pairs(n_joint, n_new, shared_count(value, n_joint, n_new, node.name), rng)
            d = None
        else:
            comparisons = [s.geometry.compare(s.w_joint, s.w_new) for s in sides]
            d = np.vstack([cmp.d for cmp in comparisons])
            if config.threshold is not None and count is None:
                flat = select_pairs(d, threshold=float(value), method=config.pairing)
            else:
                flat = select_pairs(d, count=shared_count(value, n_joint, n_new, node.name), method=config.pairing)
        by_group: dict[int, list[tuple[int, int]]] = {}
        for p, q in flat:
            s = int(np.searchsorted(offsets, p, side="right") - 1)
            by_group.setdefault(sides[s].group, []).append((p - offsets[s], q))
        new_groups, targets = _new_groups(node, groups_j, g_c[0][0], c, by_group)
        regroup(net, i, new_groups)
        pairs = []
        for target, side in zip(targets, [s for s in sides if s.group in by_group]):
            local = by_group[side.group]
            cols_j = [p for p, _ in local]
            cols_c = [q for _, q in local]
            wj, wc = side.w_joint[:, cols_j], side.w_new[:, cols_c]
            mask = _sparse_mask(wj, wc, config.sparse_mask) if sparse else None
            if config.method == "random":
                merged = random_merge(wj, wc, rng)
            elif sparse:
                merged = side.geometry.merged_weights_masked(wj, wc, mask)
            else:
                merged = comparisons[sides.index(side)].merged(local)
            merge(net, i, target, side.inputs, merged, mask)
            anchor = side.owners[0]
            units_j = node.groups[target].units
            for n, (p, q) in enumerate(local):
                dist = None if d is None else float(d[offsets[sides.index(side)] + p, q])
                pairs.append([int(units_j[anchor][n]), int(units_j[c][n]), dist])
    if config.compensation == "next-layer" and not sparse:
        for t in existing + [c]:  # tasks not zipped yet still hold their original weights
            compensate_consumers(net, original, calib, i, t, config.compensation_ridge)
    stats = {"iterations": 0}
    if config.retrain.iterations > 0:
        active = existing + [c]
        train = {t: (data[t].x_train, data[t].y_train) for t in active}
        soft = None
        if config.retrain.distill > 0:
            soft = {t: calib.soft_targets(original, t, data[t].x_train) for t in active}
        masks = _masks(net) if sparse else None
        stats = retrain(net, train, {t: weights[t] for t in active}, config.retrain,
                        seed=config.seed * 1000 + i + 100 * net.tasks.index(c), masks=masks, soft_targets=soft,
                        progress=progress, label=f"retrain {node.name}")
    shared_params = sum(arr.size for n, _, owners, arr in net.blocks() if n == i and len(owners) > 1)
    units = {t: sum(g.size for g in node.groups if t in g.owners) for t in net.tasks}
    n_joint = sum(g.size for g in node.groups if set(g.owners) & set(existing))
    return LayerRecord(index=k + 1, name=node.name, kind=node.op, newcomer=c, n_existing=n_joint, n_new=units[c],
                       n_shared=len(pairs), units=units, alpha=config.alpha, damping=lam,
                       method=config.method, pairing=config.pairing, compensation=config.compensation,
                       pairs=pairs, total_d=(None if any(p[2] is None for p in pairs)
                                             else float(sum(p[2] for p in pairs))),
                       retrain=stats, seconds=time.perf_counter() - t0, shared_params=int(shared_params))


def _merge_pending(net, hessians: _LayerHessians, i, c, config, rng, pending, sparse) -> list:
    """Merge the groups a stream's first member paired for this node (same pairs, own Hessians)."""
    node = net.nodes[i]
    pairs = []
    for go in pending:
        owners = node.groups[go].owners
        joint_owners = tuple(t for t in owners if t != c)
        inputs = hessians.inputs_shared_by(joint_owners)
        wj = _blocks_over(net, i, go, joint_owners, inputs)
        wc = _blocks_over(net, i, go, (c,), inputs)
        d = None
        mask = _sparse_mask(wj, wc, config.sparse_mask) if sparse else None
        if config.method == "random":
            merged = random_merge(wj, wc, rng)
        else:
            geometry = hessians.geometry(joint_owners, inputs)
            d, merged = geometry.matched(wj, wc)
            if mask is not None:
                merged = geometry.merged_weights_masked(wj, wc, mask)
        merge(net, i, go, inputs, merged, mask)
        for n in range(node.groups[go].size):
            pairs.append([int(node.groups[go].units[joint_owners[0]][n]), int(node.groups[go].units[c][n]),
                          None if d is None else float(d[n])])
    return pairs


def _masks(net: ZippedNetwork) -> dict[str, np.ndarray]:
    from mtz_mobile.graph.network import kernel_key

    return {kernel_key(node.name, *key): (k != 0) for node in net.nodes if node.is_weight
            for key, k in node.kernels.items()}


def compensate_consumers(net: ZippedNetwork, original: ZippedNetwork, calib: Calibration, i: int, task: str,
                         ridge: float) -> None:
    """Refit the task's own consumers of node i so their pre-activations match the original's."""
    for j in net.consumers(net.stream_of(i)):
        node = net.nodes[j]
        mine = node.groups_of(task)
        if len(mine) != 1 or node.groups[mine[0]].owners != (task,):
            continue  # zipped already: its weights are not the task's alone
        go = mine[0]
        keys = sorted(key for key in node.kernels if key[1] == go)
        if any(key[2] != (task,) for key in keys):
            continue
        inputs = [key[0] for key in keys]
        gram = rhs = None
        count = 0
        order = original.original_unit_order(j, task)
        for s in range(0, len(calib.x[task]), 1000):
            xb = calib.x[task][s:s + 1000]
            values = net.forward(task, xb, ops=calib.ops, upto=node.inputs[0])[node.inputs[0]]
            target = original.forward(task, xb, ops=calib.ops, upto=j, preactivation=True)[j]
            target = np.asarray(original.task_view(j, target, task, ops=calib.ops))
            if node.op == "conv2d":
                x = np.concatenate([np.asarray(values[g]) for g in inputs], axis=-1)
                x = np.asarray(calib.ops.patches(x, node.attrs)).reshape(-1, x.shape[-1] * int(
                    np.prod(node.attrs["kernel_size"])))
                target = target.reshape(-1, target.shape[-1])
            else:
                x = np.concatenate([np.asarray(values[g]).reshape(len(xb), -1) for g in inputs], axis=-1)
            x1 = np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
            gram = x1.T @ x1 if gram is None else gram + x1.T @ x1
            t_cur = target[:, _position_of(order, net.original_unit_order(j, task))]
            rhs = x1.T @ t_cur if rhs is None else rhs + x1.T @ t_cur
            count += len(x1)
        gram /= count
        rhs /= count
        lam = ridge * float(np.mean(np.diag(gram)))
        current = _blocks_over(net, j, go, (task,), inputs)
        gram[np.diag_indices_from(gram)] += lam
        sol = np.linalg.solve(gram, rhs + lam * current)
        merge(net, j, go, inputs, sol)  # the group is the task's alone: its blocks become sol


def _position_of(original_order: np.ndarray, current_order: np.ndarray) -> np.ndarray:
    """Columns of the original's view to take so they follow the current view's unit order."""
    where = {int(u): n for n, u in enumerate(original_order)}
    return np.array([where[int(u)] for u in current_order], np.int64)


# ----- the whole zip --------------------------------------------------------------------------

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


class Checkpoint:
    """The state after each finished step, in the partial output directory."""

    def __init__(self, partial: Path):
        self.state, self.arrays = partial / "checkpoint.json", partial / "checkpoint.npz"

    def exists(self) -> bool:
        return self.state.exists() and self.arrays.exists()

    def save(self, plan: Plan, net: ZippedNetwork, config: ZipConfig, done: int) -> None:
        write_npz_atomic(self.arrays, net.arrays(np.float64))
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
    tasks = list(models)
    if len(tasks) < 2:
        raise MTZError(f"give at least two models to zip, got {len(tasks)}")
    original = ZippedNetwork.from_models(models)
    hidden = original.zippable()
    config.validate(len(hidden), len(tasks))
    for t in tasks:
        if t not in data:
            raise MTZError(f"no data for task {t}: give --data for every model")
        if len(data[t].x_train) == 0:
            raise MTZError(f"no training data for task {t} ({data[t].spec}): the Hessians need calibration samples")
    if config.threshold is None:  # resolve every count up front: bad input fails before any output
        for k, i in enumerate(hidden):
            widths = [original.nodes[i].groups[n].size for n in range(len(tasks))]
            for n in range(1, len(tasks)):
                shared_count(config.layer_value(k), sum(widths[:n]), widths[n], original.nodes[i].name)
    sparse = _is_sparse(models, config.sparse)

    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        for t in tasks:
            if not Path(models[t].path).is_file():
                raise MTZError(f"model of task {t} has no file ({models[t].path}): save it as .keras and read it "
                               "with read_model, so the zip directory can keep its source")
    partial = out.with_name(out.name + ".partial") if out is not None else None
    if out is not None and out.exists() and not overwrite:
        raise MTZError(f"{out} exists: pass --overwrite or choose another --out")
    checkpoint = Checkpoint(partial) if partial is not None else None
    records = [TaskRecord(t, f"{t}.keras", models[t].sha256, data[t].spec, list(models[t].input_shape),
                          list(data[t].labels), dict(data[t].preprocessing), models[t].nodes[-1].activation)
               for t in tasks]
    plan = Plan(records, dict(config.to_json(), sparse_detected=sparse), tool_version=__version__)
    net = original.copy()
    steps = [(n, k, i) for n in range(1, len(tasks)) for k, i in enumerate(hidden)]
    start = 0
    if resume:
        if checkpoint is None or not checkpoint.exists():
            raise MTZError(f"nothing to resume at {partial}: run without --resume")
        saved_plan, saved_net, saved_config, done = checkpoint.load()
        if saved_config.to_json() != config.to_json() or [t.sha256 for t in saved_plan.tasks] != \
                [t.sha256 for t in records]:
            raise MTZError(f"the partial zip at {partial} used other models or settings: "
                           "resume with the same arguments or delete it")
        plan, net, start = saved_plan, saved_net, done
    elif partial is not None:
        if partial.exists():
            raise MTZError(f"a partial zip exists at {partial}: pass --resume to continue it or delete it")
        (partial / "sources").mkdir(parents=True)
        for t in tasks:
            _copy_source(Path(models[t].path), partial / "sources" / f"{t}.keras")

    validation = None
    if config.max_error_increase is not None:
        data = dict(data)  # the caller's data stays whole; the search's validation images leave the test set
        validation = {}
        for t in tasks:
            data[t], validation[t] = data[t].split_validation(config.validation_samples, seed=config.seed)
    try:
        calib = Calibration(net, data, config)
        base_errors = None if validation is None else validation_errors(original, tasks, validation, calib.ops)
        for step in range(start, len(steps)):
            n, k, i = steps[step]
            node = net.nodes[i]
            if validation is not None and not _pending_groups(node, tasks[n]):
                record, net = adaptive_step(net, original, calib, i, k, tasks[:n], tasks[n], data, validation,
                                            base_errors, config, sparse, progress)
            else:
                record = zip_node(net, original, calib, i, k, tasks[:n], tasks[n], data, config, sparse, progress)
            plan.layers.append(record)
            if checkpoint is not None:
                checkpoint.save(plan, net, config, step + 1)
            if on_layer_done is not None:
                on_layer_done(step, net)
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
    return ZipResult(plan, net)


def validation_errors(net: ZippedNetwork, tasks: list[str], validation: dict, ops) -> dict[str, float]:
    return {t: error_rate(net.predict(t, validation[t][0], ops=ops), validation[t][1]) for t in tasks}


def adaptive_step(net, original, calib, i, k, existing, c, data, validation, base_errors, config, sparse, progress):
    """The largest shared count on a grid of N/8 steps whose validation error, after light
    retraining, stays within the budget for every task; found by bisection (assuming more
    sharing never helps accuracy). Returns the record (with the search) and the chosen network."""
    node = net.nodes[i]
    active = existing + [c]
    n_joint = sum(g.size for g in node.groups if set(g.owners) <= set(existing))
    n_new = sum(g.size for g in node.groups if g.owners == (c,))
    top = min(n_joint, n_new)
    grid = sorted({int(round(top * q / 8)) for q in range(9)})
    base = {t: base_errors[t] for t in active}
    # every trial starts from the same network, so they share its Hessians (pairs differ by count only)
    hessians = _LayerHessians(net, calib, i, existing, c, config.weights(net.tasks), config.damping,
                              np.random.default_rng([config.seed, i, net.tasks.index(c)]))
    budget = config.max_error_increase / 100.0
    trials: dict[int, tuple] = {}

    def trial(idx):
        if idx not in trials:
            candidate = net.copy()
            record = zip_node(candidate, original, calib, i, k, existing, c, data, config, sparse, progress,
                              count=grid[idx], hessians=hessians)
            errors = validation_errors(candidate, active, validation, calib.ops)
            ok = all(errors[t] - base[t] <= budget for t in active)
            trials[idx] = (ok, candidate, record, errors)
            if progress:
                print(f"  {node.name}: {grid[idx]} of {top} shared -> validation error increase "
                      + ", ".join(f"{t} {100 * (errors[t] - base[t]):+.2f} pp" for t in active)
                      + (" ok" if ok else " over budget"), flush=True)
        return trials[idx][0]

    lo, hi = 0, len(grid) - 1
    if not trial(hi):
        hi -= 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if trial(mid):
                lo = mid
            else:
                hi = mid - 1
        trial(lo)  # nothing shared may still be over budget: it is the best there is
    else:
        lo = hi
    ok, chosen, record, errors = trials[lo]
    record.search = {"grid": grid, "budget_pp": config.max_error_increase,
                     "baseline_errors": base,
                     "trials": [{"count": grid[j], "errors": trials[j][3], "within_budget": trials[j][0]}
                                for j in sorted(trials)],
                     "chosen": grid[lo], "within_budget": ok}
    return record, chosen


def _copy_source(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # no second copy of a large model when the file system allows
    except OSError:
        shutil.copyfile(src, dst)
