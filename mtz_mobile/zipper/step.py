"""One layer's zip step: choose pairs → regroup → merge → compensate → retrain lightly.

The newcomer's units of weight node i are paired with the joint network's units (each joint
group is compared on the inputs its owners share with the newcomer), the node is regrouped so
every pair becomes one shared unit, and each shared group's incoming weights are merged by the
configured method (merge.METHODS). A node of a residual stream whose pairs were chosen by the
stream's first member only merges ("pending" groups), with its own Hessians.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from mtz_mobile.data import TaskData
from mtz_mobile.errors import MTZError
from mtz_mobile.graph.network import ZippedNetwork, kernel_key

from .calibration import Calibration, LayerHessians, channel_hessians
from .compensation import compensate_consumers
from .config import ZipConfig, shared_count
from .low_rank import LowRankGeometry
from .merge import METHODS, MergeOperands, sparse_mask
from .mtz_math import PairGeometry, channelwise_merge
from .pairing import random_pairs, select_pairs
from .plan import LayerRecord
from .retrain import retrain
from .surgery import NewGroup, channel_weights, incoming_weights, merge, merge_channels, regroup


@dataclass
class LayerStep:
    """What zipping one node needs: the networks, the data and where the step stands."""

    net: ZippedNetwork            # the partially zipped network (changed in place)
    original: ZippedNetwork       # the unzipped models, for compensation and soft targets
    calib: Calibration
    node: int                     # index of the weight node being zipped
    layer: int                    # its hidden layer number, 0-based (picks the per-layer setting)
    existing: list[str]           # tasks already in the joint network
    newcomer: str                 # the task whose units are zipped in now
    data: dict[str, TaskData]
    config: ZipConfig
    sparse: bool
    progress: bool

    def rng(self) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, self.node, self.net.tasks.index(self.newcomer)])

    def hessians(self, rng: np.random.Generator) -> LayerHessians:
        return LayerHessians(self.net, self.calib, self.node, self.existing, self.newcomer,
                             self.config.weights(self.net.tasks), self.config.damping, rng)


@dataclass
class JointGroup:
    """One group of the joint network's units as a pairing candidate, with the newcomer's."""

    group: int
    owners: tuple
    inputs: list[int]             # input groups its owners share with the newcomer
    geometry: PairGeometry | LowRankGeometry | None
    w_joint: np.ndarray           # its incoming weights over ``inputs``, bias last
    w_new: np.ndarray             # the newcomer's, over the same inputs


def pending_groups(node, newcomer: str) -> list[int]:
    """Groups of node whose pairs with the newcomer were chosen already (by the first layer of its
    residual stream) and still wait for the newcomer's weights to be merged."""
    return [g for g, grp in enumerate(node.groups)
            if newcomer in grp.owners and len(grp.owners) > 1 and (g, (newcomer,)) in node.biases]


def zip_layer(step: LayerStep, count: int | None = None, hessians: LayerHessians | None = None) -> LayerRecord:
    """Zip the newcomer's units of the step's node into the joint network's (``count`` overrides
    the configured number of shared units; ``hessians``: this step's, when several trials of the
    step share them)."""
    t0 = time.perf_counter()
    node = step.net.nodes[step.node]
    rng = step.rng()
    if hessians is None:
        hessians = step.hessians(rng)
    damping = None  # the absolute damping added to S, for the record
    pending = pending_groups(node, step.newcomer)
    if node.inherits:  # no pairing of its own: merge what its input's pairing shares, channel by channel
        pairs = _merge_channels(step, rng, pending)
    elif pending:
        pairs = _merge_pending(step, hessians, rng, pending)
    else:
        pairs, damping = _pair_and_merge(step, hessians, rng, count)
    if step.config.compensation == "next-layer" and not step.sparse:
        for t in step.existing + [step.newcomer]:  # tasks not zipped yet still hold their original weights
            compensate_consumers(step.net, step.original, step.calib, step.node, t, step.config.compensation_ridge)
    stats = _retrain(step)
    return _record(step, pairs, damping, stats, time.perf_counter() - t0)


def _pair_and_merge(step: LayerStep, hessians: LayerHessians, rng, count: int | None) -> tuple[list, float | None]:
    node = step.net.nodes[step.node]
    newcomer_groups = [g for g, grp in enumerate(node.groups) if grp.owners == (step.newcomer,)]
    if not newcomer_groups:
        raise MTZError(f"internal: {node.name} has no unzipped group of task {step.newcomer}")
    newcomer_group = newcomer_groups[0]
    joint_groups = [g for g, grp in enumerate(node.groups) if set(grp.owners) <= set(step.existing)]
    candidates = _candidates(step, hessians, joint_groups, newcomer_group)
    damping = max((c.geometry.damping for c in candidates if c.geometry is not None), default=None)
    offsets = np.cumsum([0] + [node.groups[c.group].size for c in candidates])
    flat, d, comparisons = _choose_pairs(step, candidates, offsets[-1], node.groups[newcomer_group].size, count, rng)
    by_group: dict[int, list[tuple[int, int]]] = {}
    for p, q in flat:
        s = int(np.searchsorted(offsets, p, side="right") - 1)
        by_group.setdefault(candidates[s].group, []).append((p - offsets[s], q))
    new_groups, targets = _new_groups(node, joint_groups, newcomer_group, step.newcomer, by_group)
    regroup(step.net, step.node, new_groups)
    method = METHODS[step.config.method]
    pairs = []
    for target, cand in zip(targets, [c for c in candidates if c.group in by_group]):
        local = by_group[cand.group]
        wj, wc = cand.w_joint[:, [p for p, _ in local]], cand.w_new[:, [q for _, q in local]]
        n = candidates.index(cand)
        dense = None if comparisons is None else (lambda n=n, local=local: comparisons[n].merged(local))
        mask = sparse_mask(wj, wc, step.config.sparse_mask) if step.sparse else None
        merged = method.merge(MergeOperands(wj, wc, cand.geometry, mask, rng, dense), step.sparse)
        merge(step.net, step.node, target, cand.inputs, merged, mask)
        units = node.groups[target].units
        for m, (p, q) in enumerate(local):
            dist = None if d is None else float(d[offsets[n] + p, q])
            pairs.append([int(units[cand.owners[0]][m]), int(units[step.newcomer][m]), dist])
    return pairs, damping


def _candidates(step: LayerStep, hessians: LayerHessians, joint_groups: list[int],
                newcomer_group: int) -> list[JointGroup]:
    node = step.net.nodes[step.node]
    uses_metric = METHODS[step.config.method].uses_metric
    out = []
    for g in joint_groups:
        owners = node.groups[g].owners
        inputs = hessians.inputs_shared_by(owners)
        w_joint = incoming_weights(step.net, step.node, g, owners, inputs)
        w_new = incoming_weights(step.net, step.node, newcomer_group, (step.newcomer,), inputs)
        geometry = hessians.geometry(owners, inputs) if uses_metric else None
        out.append(JointGroup(g, owners, inputs, geometry, w_joint, w_new))
    return out


def _choose_pairs(step: LayerStep, candidates: list[JointGroup], n_joint: int, n_new: int, count: int | None, rng):
    """Pairs (joint unit over all candidates, newcomer unit), their d (or None) and the comparisons."""
    name = step.net.nodes[step.node].name
    value = step.config.layer_value(step.layer) if count is None else count
    if not METHODS[step.config.method].uses_metric:
        return random_pairs(n_joint, n_new, shared_count(value, n_joint, n_new, name), rng), None, None
    comparisons = [c.geometry.compare(c.w_joint, c.w_new) for c in candidates]
    d = np.vstack([cmp.d for cmp in comparisons])
    if step.config.threshold is not None and count is None:
        flat = select_pairs(d, threshold=float(value), method=step.config.pairing)
    else:
        flat = select_pairs(d, count=shared_count(value, n_joint, n_new, name), method=step.config.pairing)
    return flat, d, comparisons


def _new_groups(node, joint_groups: list[int], newcomer_group: int, newcomer: str,
                pairs_by_group: dict) -> tuple[list[NewGroup], list[int]]:
    """[paired part, rest] for every joint group, the newcomer's rest, other groups unchanged;
    and the indices of the paired parts (the groups to merge)."""
    new, merged_targets = [], []
    paired_new = set()
    for pairs in pairs_by_group.values():
        paired_new.update(j for _, j in pairs)
    for g, grp in enumerate(node.groups):
        if g in joint_groups:
            pairs = pairs_by_group.get(g, [])
            pos_joint = np.array([p for p, _ in pairs], np.int64)
            pos_new = np.array([q for _, q in pairs], np.int64)
            if len(pairs):
                sources = {t: (g, pos_joint) for t in grp.owners}
                sources[newcomer] = (newcomer_group, pos_new)
                merged_targets.append(len(new))
                new.append(NewGroup(tuple(grp.owners) + (newcomer,), sources))
            rest = np.setdiff1d(np.arange(grp.size), pos_joint)
            if len(rest):
                new.append(NewGroup(grp.owners, {t: (g, rest) for t in grp.owners}))
        elif g == newcomer_group:
            rest = np.setdiff1d(np.arange(grp.size), np.array(sorted(paired_new), np.int64))
            if len(rest):
                new.append(NewGroup((newcomer,), {newcomer: (g, rest)}))
        else:
            new.append(NewGroup(grp.owners, {t: (g, np.arange(grp.size)) for t in grp.owners}))
    return new, merged_targets


def _merge_pending(step: LayerStep, hessians: LayerHessians, rng, pending: list[int]) -> list:
    """Merge the groups a stream's first member paired for this node (same pairs, own Hessians)."""
    node = step.net.nodes[step.node]
    method = METHODS[step.config.method]
    pairs = []
    for go in pending:
        owners = node.groups[go].owners
        joint_owners = tuple(t for t in owners if t != step.newcomer)
        inputs = hessians.inputs_shared_by(joint_owners)
        wj = incoming_weights(step.net, step.node, go, joint_owners, inputs)
        wc = incoming_weights(step.net, step.node, go, (step.newcomer,), inputs)
        d, dense, geometry = None, None, None
        if method.uses_metric:
            geometry = hessians.geometry(joint_owners, inputs)
            d, optimum = geometry.matched(wj, wc)
            dense = lambda optimum=optimum: optimum  # noqa: E731
        mask = sparse_mask(wj, wc, step.config.sparse_mask) if step.sparse else None
        merged = method.merge(MergeOperands(wj, wc, geometry, mask, rng, dense), step.sparse)
        merge(step.net, step.node, go, inputs, merged, mask)
        for n in range(node.groups[go].size):
            pairs.append([int(node.groups[go].units[joint_owners[0]][n]), int(node.groups[go].units[step.newcomer][n]),
                          None if d is None else float(d[n])])
    return pairs


def _merge_channels(step: LayerStep, rng, pending: list[int]) -> list:
    """A depthwise node's shared channels: each merged with its own (k²+1)² Hessians (§8)."""
    net, i, newcomer = step.net, step.node, step.newcomer
    node = net.nodes[i]
    method = METHODS[step.config.method]
    weights = step.config.weights(net.tasks)
    pairs = []
    for go in pending:
        joint_owners = tuple(t for t in node.groups[go].owners if t != newcomer)
        wj = channel_weights(net, i, go, joint_owners)
        wc = channel_weights(net, i, go, (newcomer,))
        d, dense = None, None
        if method.uses_metric:
            h_joint = sum(weights[t] * channel_hessians(net, step.calib, i, t, go, rng) for t in joint_owners)
            h_new = weights[newcomer] * channel_hessians(net, step.calib, i, newcomer, go, rng)
            d, merged, _ = channelwise_merge(h_joint, h_new, wj.T, wc.T, step.config.damping)
            dense = lambda merged=merged: merged.T  # noqa: E731
        # sparse depthwise kernels merge densely: prune.py never prunes a depthwise layer
        merged = method.merge(MergeOperands(wj, wc, None, None, rng, dense), sparse=False)
        merge_channels(net, i, go, merged)
        units = node.groups[go].units
        pairs += [[int(units[joint_owners[0]][n]), int(units[newcomer][n]), None if d is None else float(d[n])]
                  for n in range(node.groups[go].size)]
    return pairs


def masks(net: ZippedNetwork) -> dict[str, np.ndarray]:
    """Every kernel block's nonzero pattern: pruned weights stay zero in retraining."""
    return {kernel_key(node.name, *key): (k != 0) for node in net.nodes if node.is_weight
            for key, k in node.kernels.items()}


def _retrain(step: LayerStep) -> dict:
    if step.config.retrain.schedule != "layer":
        return {"iterations": 0}
    return retrain_tasks(step.net, step.original, step.calib, step.data, step.config, step.existing + [step.newcomer],
                         seed=step.config.seed * 1000 + step.node + 100 * step.net.tasks.index(step.newcomer),
                         sparse=step.sparse, progress=step.progress, label=f"retrain {step.net.nodes[step.node].name}")


def retrain_tasks(net: ZippedNetwork, original: ZippedNetwork, calib: Calibration, data: dict[str, TaskData],
                  config: ZipConfig, active: list[str], seed: int, sparse: bool, progress: bool, label: str) -> dict:
    """Light retraining of the tasks in ``active`` on the joint network (Algorithm 1, line 10)."""
    settings = config.retrain
    if settings.iterations <= 0:
        return {"iterations": 0}
    train = {t: (data[t].x_train, data[t].y_train) for t in active}
    soft = None
    if settings.distill > 0:
        soft = {t: calib.soft_targets(original, t, data[t].x_train) for t in active}
    weights = config.weights(net.tasks)
    return retrain(net, train, {t: weights[t] for t in active}, settings, seed=seed,
                   masks=masks(net) if sparse else None, soft_targets=soft, progress=progress, label=label)


def _record(step: LayerStep, pairs: list, damping: float | None, stats: dict, seconds: float) -> LayerRecord:
    net, i, config = step.net, step.node, step.config
    node = net.nodes[i]
    shared_params = sum(arr.size for n, _, owners, arr in net.blocks() if n == i and len(owners) > 1)
    units = {t: sum(g.size for g in node.groups if t in g.owners) for t in net.tasks}
    n_joint = sum(g.size for g in node.groups if set(g.owners) & set(step.existing))
    return LayerRecord(index=step.layer + 1, name=node.name, kind=node.op, newcomer=step.newcomer,
                       n_existing=n_joint, n_new=units[step.newcomer], n_shared=len(pairs), units=units,
                       alpha=config.alpha, damping=damping, method=config.method, pairing=config.pairing,
                       compensation=config.compensation, pairs=pairs,
                       total_d=(None if any(p[2] is None for p in pairs) else float(sum(p[2] for p in pairs))),
                       retrain=stats, seconds=seconds, shared_params=int(shared_params))
