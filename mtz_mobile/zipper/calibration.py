"""Calibration: each task's images, the forward passes through the partially zipped network,
and the Hessians of Eq. 7–8 over a layer's inputs (augmented with the bias unit).

A step's Hessians are computed once per task and sliced to the inputs a group of owners shares,
so the several geometries of one step (one per joint group) and the trials of the adaptive
search cost one pass over the calibration data per task. The passes themselves read the
activation cache (activations.py): a layer's input is computed once from the layer before it,
not from the images, and reused by the compensation and the next step that read it.
"""

from __future__ import annotations

import numpy as np

from mtz_mobile.backend import activate, ops_for
from mtz_mobile.data import TaskData
from mtz_mobile.graph.network import ZippedNetwork
from mtz_mobile.graph.ops import conv_output_size, patch_rows

from . import device_math
from .activations import ActivationCache, batch_size
from .config import ZipConfig
from .low_rank import FactoredHessian, LowRankGeometry, RowAccumulator, as_dense, keeps_rows
from .mtz_math import ROWS, HessianAccumulator, PairGeometry, hessian_dtype, product_dtype


class Calibration:
    """Each task's calibration images and the forward passes the Hessians need."""

    def __init__(self, net: ZippedNetwork, data: dict[str, TaskData], config: ZipConfig):
        # Keras' backend (TensorFlow, or JAX without TensorFlow) starts here, on the device it sees
        self.backend = activate(config.check_backend())
        self.ops = ops_for(self.backend)
        device_math.use(self.backend)   # the Hessians' GEMMs and S's factorisations on its GPU, if any
        self.config = config
        self._soft: dict = {}
        self.x = {}
        for n, t in enumerate(net.tasks):
            order = np.random.default_rng(config.seed + n).permutation(len(data[t].x_train))
            self.x[t] = data[t].x_train[np.sort(order[:config.calibration_samples])]
        self.cache = ActivationCache(self.x, self.ops, batch_size(net))

    def soft_targets(self, original: ZippedNetwork, task: str, x: np.ndarray) -> np.ndarray:
        """The original model's logits on the task's training data (computed once per zip)."""
        key = (task, id(x))
        if key not in self._soft:
            self._soft[key] = original.predict(task, x, preactivation=True, ops=self.ops)
        return self._soft[key]

    def node_values(self, net: ZippedNetwork, task: str, node: int):
        """Yield the group values of ``node`` for the task's calibration data, batch by batch
        (float32 arrays, from the activation cache: equal to ``net.forward``'s)."""
        yield from self.cache.values(net, task, node)

    def preactivations(self, net: ZippedNetwork, task: str, node: int):
        """Yield weight node ``node``'s pre-activations in the task's unit order, batch by batch."""
        yield from self.cache.preactivations(net, task, node)


def conv_instances(calib: Calibration, x, attrs, keep: float, rng: np.random.Generator):
    """A conv layer's instances over a batch of its input maps x: the im2col rows (one per output
    position of every image) and which rows they are — all of them (``None``), or where ``keep`` < 1
    the seeded subset that keeps each row with probability ``keep`` (one draw per row, in order).
    The subset is gathered without building the other rows: at 112×112 they are 9 in 10."""
    pointwise = tuple(attrs["kernel_size"]) == (1, 1) and tuple(attrs["strides"]) == (1, 1)
    if keep >= 1.0:  # a pointwise conv's patches are its input's pixels (most of a MobileNet's convs)
        patches = np.asarray(x if pointwise else calib.ops.patches(x, attrs))
        return patches.reshape(-1, patches.shape[-1]), None
    kh, kw = attrs["kernel_size"]
    dh, dw = attrs.get("dilation", [1, 1])
    oh = conv_output_size(x.shape[1], kh, attrs["strides"][0], dh, attrs["padding"])
    ow = conv_output_size(x.shape[2], kw, attrs["strides"][1], dw, attrs["padding"])
    rows = np.flatnonzero(rng.random(len(x) * oh * ow) < keep)
    x = np.asarray(x)
    return (x.reshape(-1, x.shape[-1])[rows] if pointwise else patch_rows(x, attrs, rows)), rows


def _input_rows(net: ZippedNetwork, i: int, groups: list[int]):
    """How to build the Hessian's input vector for node i from a list of its input groups."""
    node = net.nodes[i]
    ins = net.input_groups(i)
    if node.op == "conv2d":
        return [ins[g].size for g in groups]
    return [net.row_factor(i) * ins[g].size for g in groups]


def hessian_width(net: ZippedNetwork, i: int, groups: list[int]) -> int:
    """Inputs per instance of node i over its input ``groups`` (a conv's k×k patches), bias excluded."""
    node = net.nodes[i]
    return sum(_input_rows(net, i, groups)) * (int(np.prod(node.attrs["kernel_size"])) if node.op == "conv2d" else 1)


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


def instances(net: ZippedNetwork, calib: Calibration, i: int, task: str) -> tuple[int, float]:
    """How many of node i's instances of the task's calibration data (a conv's output positions of
    every image) are kept, about, and the share kept (``max_instances`` caps them)."""
    node = net.nodes[i]
    total = len(calib.x[task]) * (int(np.prod(node.shape[:2])) if node.op == "conv2d" else 1)
    keep = min(1.0, calib.config.max_instances / max(total, 1))
    return round(total * keep), keep


def task_hessian(net: ZippedNetwork, calib: Calibration, i: int, task: str, groups: list[int],
                 rng: np.random.Generator, weight: float = 1.0):
    """weight · Σ x̃ x̃ᵀ / n over the task's inputs of node i in ``groups`` — a FactoredHessian
    where the instances are few against the inputs (low_rank.keeps_rows), else an array."""
    node = net.nodes[i]
    src = node.inputs[0]
    width = hessian_width(net, i, groups)
    kept, keep = instances(net, calib, i, task)
    acc = (RowAccumulator(width) if keeps_rows(kept, width + 1)
           else HessianAccumulator(width, products=product_dtype(kept, width + 1)))
    for values in calib.node_values(net, task, src):
        if groups and node.op == "conv2d":  # sampled as its rows are gathered
            x, _ = conv_instances(calib, np.concatenate([values[g] for g in groups], axis=-1), node.attrs, keep, rng)
        else:
            if not groups:  # nothing shared feeds this layer yet: the bias unit alone
                n = len(next(iter(values.values())))
                x = np.zeros((n * (int(np.prod(node.shape[:2])) if node.op == "conv2d" else 1), 0), np.float32)
            else:
                x = np.concatenate([values[g].reshape(len(values[g]), -1) for g in groups], axis=-1)
            if keep < 1.0:
                x = x[rng.random(len(x)) < keep]
        acc.update(x)
    return acc.hessian(weight)


class LayerHessians:
    """Each task's weighted Hessian w_t H_t over node i's inputs shared with newcomer c, computed
    once per step; sliced to the inputs a group of owners shares (rows of the other groups
    dropped). Where a group's owners share all of them, the geometry reads the computed array
    itself: at VGG-16's fc6 a copy is 2.5 GB."""

    def __init__(self, net: ZippedNetwork, calib: Calibration, i: int, existing: list[str], newcomer: str,
                 weights: dict[str, float], damping: float, rng: np.random.Generator):
        self.net, self.calib, self.i, self.newcomer, self.weights, self.damping, self.rng = \
            net, calib, i, newcomer, weights, damping, rng
        ins = net.input_groups(i)
        self.ins = ins
        self.shared_with_newcomer = [gi for gi, grp in enumerate(ins)
                                     if newcomer in grp.owners and set(grp.owners) & set(existing)]
        self.full: dict[str, tuple[list[int], np.ndarray | FactoredHessian]] = {}
        self._geometries: dict[tuple, PairGeometry | LowRankGeometry] = {}
        # the tasks' Hessians, as held, and the float64 factor of S (factored Hessians need their rows only)
        dim = hessian_width(net, i, self.shared_with_newcomer) + 1
        if not all(keeps_rows(instances(net, calib, i, t)[0], dim) for t in existing + [newcomer]):
            calib.cache.make_room((len(existing) + 1) * dim * dim * np.dtype(hessian_dtype(dim)).itemsize
                                  + dim * dim * 8)

    def inputs_shared_by(self, owners) -> list[int]:
        """Input groups that the newcomer shares with every one of ``owners``."""
        return [gi for gi in self.shared_with_newcomer if set(owners) | {self.newcomer} <= set(self.ins[gi].owners)]

    def task(self, t: str, inputs: list[int]) -> np.ndarray | FactoredHessian:
        """w_t H_t over ``inputs`` (never to be written: it may be the cached array)."""
        if t not in self.full:
            have = [gi for gi in self.shared_with_newcomer if t in self.ins[gi].owners]
            self.full[t] = (have, task_hessian(self.net, self.calib, self.i, t, have, self.rng, self.weights[t]))
        have, full = self.full[t]
        if list(inputs) == have:
            return full
        sel = _row_selection(self.net, self.i, have, inputs)
        return full.select(sel) if isinstance(full, FactoredHessian) else full[np.ix_(sel, sel)]

    def geometry(self, joint_owners, inputs: list[int]) -> PairGeometry | LowRankGeometry:
        """H_J = Σ_{t ∈ joint owners} w_t H_t (the units' present owners) against H_c = w_c H_c —
        in the instances' space while every part is factored and their rows stay few (many tasks'
        rows can outnumber the inputs: then in the S-form)."""
        key = (tuple(joint_owners), tuple(inputs))
        if key not in self._geometries:
            parts = [self.task(t, inputs) for t in joint_owners]
            h_new = self.task(self.newcomer, inputs)
            if all(isinstance(h, FactoredHessian) for h in parts + [h_new]) \
                    and keeps_rows(sum(len(h.u) for h in parts + [h_new]), 2 * h_new.shape[0]):
                geometry = LowRankGeometry.from_factors(FactoredHessian.stack(parts), h_new, self.damping)
            else:
                parts = [as_dense(h) for h in parts]
                h_joint = parts[0] if len(parts) == 1 else sum(parts)
                geometry = PairGeometry.from_hessians(h_joint, as_dense(h_new), self.damping)
            self._geometries[key] = geometry
        return self._geometries[key]


def channel_hessians(net: ZippedNetwork, calib: Calibration, i: int, task: str, group: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Per channel c of input group ``group`` of depthwise node i: Σ p̃ p̃ᵀ / n over every output
    position of every sample, p̃ = (channel c's k×k patch, 1) — (C, k²+1, k²+1), weight 1."""
    node = net.nodes[i]
    taps = int(np.prod(node.attrs["kernel_size"]))
    channels = net.input_groups(i)[group].size
    acc = np.zeros((channels, taps + 1, taps + 1))
    count = 0
    total_instances = len(calib.x[task]) * int(np.prod(node.shape[:2]))
    keep = min(1.0, calib.config.max_instances / max(total_instances, 1))
    for values in calib.node_values(net, task, node.inputs[0]):
        patches, _ = conv_instances(calib, values[group], node.attrs, keep, rng)
        patches = patches.reshape(len(patches), taps, channels)
        for s in range(0, len(patches), ROWS):  # float32 products per chunk, summed in float64
            acc += calib.ops.channel_grams(patches[s:s + ROWS])
        count += len(patches)
    return acc / max(count, 1)
