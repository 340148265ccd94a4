"""Next-layer compensation (our addition to the paper): after a node is zipped, each task's own
consumer layers are refitted by ridge regression so that their pre-activations on the
calibration data match the *original* model's. Those layers belong to one task, so the fit
costs no sharing; it absorbs the merge's error (including the scale of each shared unit's
output) in closed form, before any retraining.
"""

from __future__ import annotations

import numpy as np

from mtz_mobile.graph.network import ZippedNetwork

from .calibration import Calibration
from .surgery import incoming_weights, merge


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
        current = incoming_weights(net, j, go, (task,), inputs)
        gram[np.diag_indices_from(gram)] += lam
        sol = np.linalg.solve(gram, rhs + lam * current)
        merge(net, j, go, inputs, sol)  # the group is the task's alone: its blocks become sol


def _position_of(original_order: np.ndarray, current_order: np.ndarray) -> np.ndarray:
    """Columns of the original's view to take so they follow the current view's unit order."""
    where = {int(u): n for n, u in enumerate(original_order)}
    return np.array([where[int(u)] for u in current_order], np.int64)
