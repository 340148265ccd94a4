"""Next-layer compensation (our addition to the paper): after a node is zipped, each task's own
consumer layers are refitted by ridge regression so that their pre-activations on the
calibration data match the *original* model's. Those layers belong to one task, so the fit
costs no sharing; it absorbs the merge's error (including the scale of each shared unit's
output) in closed form, before any retraining.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtz_mobile.errors import MTZError
from mtz_mobile.graph.network import ZippedNetwork

from . import device_math
from .calibration import Calibration, conv_instances, hessian_width, instances
from .low_rank import RowAccumulator, keeps_rows, ridge_refit
from .mtz_math import ROWS, HessianAccumulator, solve_in_place
from .surgery import incoming_weights, merge


def compensate_consumers(net: ZippedNetwork, original: ZippedNetwork, calib: Calibration, i: int, task: str,
                         ridge: float) -> None:
    """Refit the task's own blocks in the consumers of node i so that their pre-activations
    match the original's: a consumer's group that is the task's alone, and a group whose pairing
    its residual stream decided but whose per-task blocks are not merged yet (the projection of
    an inverted-residual block, the second conv of a basic block) — each of its units still
    reads the task's weights only. Groups whose blocks are merged already are left alone."""
    for j in net.consumers(net.stream_of(i)):
        node = net.nodes[j]
        mine = node.groups_of(task)   # the task's view of j: these groups' units, in this order
        starts = dict(zip(mine, np.cumsum([0] + [node.groups[g].size for g in mine])))
        for inputs, groups in _refittable(node, task).items():
            inputs = list(inputs)
            system = _refit_system(net, original, calib, i, j, task, inputs)
            spans = [np.arange(starts[go], starts[go] + node.groups[go].size) for go in groups]
            current = np.hstack([incoming_weights(net, j, go, (task,), inputs) for go in groups])
            try:
                sol = system.solve(np.concatenate(spans), current, ridge)
            except np.linalg.LinAlgError:
                raise MTZError(f"the refit of {node.name} for task {task!r} is singular: raise "
                               "--compensation-ridge") from None
            bounds = np.cumsum([0] + [len(span) for span in spans])
            for n, go in enumerate(groups):
                merge(net, j, go, inputs, sol[:, bounds[n]:bounds[n + 1]], task=task)


def _refittable(node, task: str) -> dict[tuple[int, ...], list[int]]:
    """The task's groups of a consumer whose incoming blocks and bias are the task's alone, by
    the input groups they read."""
    found: dict[tuple[int, ...], list[int]] = {}
    for go in node.groups_of(task):
        keys = sorted(key for key in node.kernels if key[1] == go and task in key[2])
        if (go, (task,)) in node.biases and keys and all(key[2] == (task,) for key in keys):
            found.setdefault(tuple(key[0] for key in keys), []).append(go)
    return found


@dataclass
class NormalEquations:
    """The refit's Σ x̃ x̃ᵀ / n and Σ x̃ tᵀ / n (solved once: the Gram becomes its factor)."""

    gram: np.ndarray
    rhs: np.ndarray          # column-major

    def solve(self, columns: np.ndarray, current: np.ndarray, ridge: float) -> np.ndarray:
        """argmin ‖X̃W − T‖²/n + ρ‖W − W₀‖² over the targets' ``columns``, ρ = ridge · mean diag."""
        lam = ridge * float(np.mean(np.diag(self.gram)))
        self.gram[np.diag_indices_from(self.gram)] += lam
        b = self.rhs.T[columns].T   # column-major: solved in place
        b += lam * current
        return solve_in_place(self.gram, b)


@dataclass
class RefitRows:
    """The same refit from its rows, where they are few against the inputs (low_rank.ridge_refit)."""

    x: np.ndarray            # X̃, bias column last
    targets: np.ndarray

    def solve(self, columns: np.ndarray, current: np.ndarray, ridge: float) -> np.ndarray:
        return ridge_refit(self.x, self.targets[:, columns], current, ridge)


def _refit_system(net: ZippedNetwork, original: ZippedNetwork, calib: Calibration, i: int, j: int, task: str,
                  inputs: list[int]) -> NormalEquations | RefitRows:
    """Σ x̃ x̃ᵀ / n and Σ x̃ tᵀ / n over consumer j's inputs x̃ = (x, 1) in the zipped network and
    its targets t, the original's pre-activations (both from the activation cache) — or, where
    the instances are at most a quarter of the inputs, the rows x̃ and t themselves. A conv
    consumer with more than ``max_instances`` patch instances keeps a seeded random subset of
    them, as the Hessians do; its sums are float32 products per chunk of rows (its patch rows are
    many, and float64 products over them were most of a MobileNet zip's compensation time). A
    dense consumer's rows are the images: float64 products. Either way the sums are float64,
    accumulated in place (a 25,089-wide Gram is 5 GB)."""
    node = net.nodes[j]
    kept, keep = instances(net, calib, j, task)
    rng = np.random.default_rng([calib.config.seed, i, j, net.tasks.index(task)])
    columns = _position_of(original.original_unit_order(j, task), net.original_unit_order(j, task))
    products = np.float64 if node.op != "conv2d" and keep >= 1.0 else np.float32
    width = hessian_width(net, j, inputs)
    if keeps_rows(kept, width + 1):
        acc, targets = RowAccumulator(width), []
    else:
        calib.cache.make_room((width + 1) ** 2 * 8)
        acc, targets = HessianAccumulator(width, dtype=np.float64, products=products), None
        rhs = np.zeros((width + 1, len(columns)), order="F")
    for values, target in zip(calib.node_values(net, task, node.inputs[0]), calib.preactivations(original, task, j)):
        target = target[0]
        if node.op == "conv2d":
            x, rows = conv_instances(calib, np.concatenate([values[g] for g in inputs], axis=-1), node.attrs, keep, rng)
            target = target.reshape(-1, target.shape[-1])
            target = target if rows is None else target[rows]
        else:
            x = np.concatenate([values[g].reshape(len(values[g]), -1) for g in inputs], axis=-1)
            if keep < 1.0:
                rows = rng.random(len(x)) < keep
                x, target = x[rows], target[rows]
        t = target[:, columns].astype(products, copy=False)
        acc.update(x)
        if targets is not None:
            targets.append(t.astype(np.float64))
            continue
        for r in range(0, len(x), ROWS):
            rhs[:-1] += device_math.product_tn(x[r:r + ROWS].astype(products, copy=False), t[r:r + ROWS])
        rhs[-1] += t.sum(axis=0, dtype=np.float64)
    if targets is not None:
        return RefitRows(acc.rows(), np.vstack(targets))
    rhs /= max(acc.count, 1)
    return NormalEquations(acc.hessian(1.0), rhs)


def _position_of(original_order: np.ndarray, current_order: np.ndarray) -> np.ndarray:
    """Columns of the original's view to take so they follow the current view's unit order."""
    where = {int(u): n for n, u in enumerate(original_order)}
    return np.array([where[int(u)] for u in current_order], np.int64)
