"""Tasks whose inputs differ in size (the journal extension's different input domains).

The joint input has the larger extent on every axis; a smaller task's input is zero-padded
after its data (bottom/right, extra channels, vector tail), and its first weight layer gets
zero weights for the inputs it never sees. Where a Flatten follows a spatial map that the
padding enlarged, the Dense rows of the smaller task move to the positions they had, and the
new positions get zero rows. That is exact whenever every layer sees the original pixels at
the same offsets — checked here, refused otherwise.
"""

from __future__ import annotations


import numpy as np

from mtz_mobile.errors import MTZError
from .ops import canonical_shape, same_padding


def joint_input_shape(shapes: dict[str, tuple[int, ...]], layout: str | None = None) -> tuple[int, ...]:
    canon = {t: canonical_shape(s, layout) for t, s in shapes.items()}
    ranks = {len(s) for s in canon.values()}
    if len(ranks) != 1:
        raise MTZError(f"input shapes {', '.join(f'{t} {s}' for t, s in shapes.items())} cannot be joined: "
                       "zip images with images and vectors with vectors")
    originals = {tuple(s) for s in shapes.values()}
    if len(originals) == 1:
        return tuple(next(iter(originals)))
    joint = tuple(max(s[k] for s in canon.values()) for k in range(ranks.pop()))
    # in the tasks' own rank: a 1-D net's joint (L, C), not its (1, L, C) map
    return joint[1:] if layout == "1d" else joint


def pad_first_layers(net, models) -> None:
    """Give every smaller task zero weights for the joint input it never sees (in place)."""
    joint = net.input_shape
    for t, model in models.items():
        own = canonical_shape(model.input_shape, net.layout)
        if own == tuple(joint):
            continue
        _check_offsets(net, model, t)
        for k, node in enumerate(net.nodes):
            if not node.is_weight:
                continue
            keys = [key for key in node.kernels if key[2] == (t,)]
            src = net.source(node.inputs[0])
            for key in keys:
                kernel = node.kernels[key]
                if node.op == "conv2d" and src == 0:
                    node.kernels[key] = np.pad(kernel, [(0, 0), (0, 0), (0, joint[-1] - kernel.shape[2]), (0, 0)])
                elif node.op == "dense":
                    node.kernels[key] = _remap_dense_rows(net, model, k, kernel, t)


def _remap_dense_rows(net, model, k: int, kernel: np.ndarray, task: str) -> np.ndarray:
    flat_src = net.flatten_input(k)
    if flat_src is None:
        if net.source(net.nodes[k].inputs[0]) != 0:
            return kernel  # a dense layer on a vector the joint network computes at the task's width
        rows = net.input_shape[0]
        return np.pad(kernel, [(0, rows - kernel.shape[0]), (0, 0)])
    own = canonical_shape(model.input_shape, net.layout) if flat_src == 0 else model.nodes[flat_src].out_shape
    joint = net.nodes[flat_src].shape
    channels = own[-1] if flat_src != 0 else kernel.shape[0] // int(np.prod(own[:-1]))
    if tuple(own[:-1]) == tuple(joint[:-1]) and flat_src != 0:
        return kernel
    joint_c = joint[-1] if flat_src == 0 else channels
    grid = np.zeros(tuple(joint[:-1]) + (joint_c, kernel.shape[1]), kernel.dtype)
    h, w = own[0], own[1]
    grid[:h, :w, :channels] = kernel.reshape(h, w, channels, kernel.shape[1])
    return grid.reshape(-1, kernel.shape[1])


def _check_offsets(net, model, task: str) -> None:
    """Refuse joins that would shift the smaller task's pixels (asymmetric SAME padding, GAP over
    a padded map)."""
    for k, node in enumerate(net.nodes):
        if node.op == "crop":
            raise MTZError(f"input shapes cannot be joined: {node.name} crops task {task}'s map at its own border, "
                           "which the joint map does not have there; use inputs of one size")
        if node.op in ("conv2d", "depthwise", "maxpool", "avgpool") and node.attrs["padding"] == "same":
            own_in = model.nodes[node.inputs[0]].out_shape
            joint_in = net.nodes[node.inputs[0]].shape
            ksize = node.attrs.get("kernel_size", node.attrs.get("pool_size"))
            dil = node.attrs.get("dilation", [1, 1])
            for axis in range(2):
                args = (ksize[axis], node.attrs["strides"][axis], dil[axis])
                if same_padding(own_in[axis], *args)[0] != same_padding(joint_in[axis], *args)[0]:
                    raise MTZError(f"input shapes cannot be joined: layer {node.name} would pad task {task}'s "
                                   "map differently at the joint size; use inputs of one size or valid padding")
        if node.op == "gap":
            own_in = model.nodes[node.inputs[0]].out_shape
            if tuple(own_in[:2]) != tuple(net.nodes[node.inputs[0]].shape[:2]):
                raise MTZError(f"input shapes cannot be joined: {node.name} would average task {task}'s map over "
                               "padded positions; use inputs of one size")
